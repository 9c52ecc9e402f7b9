"""One machine of plain states (semantics section 7.1 cardinalities, section 5 lifecycle).

The leaves `A`..`E` only record their runs; the machines move them with
labels that tests send from outside, so every test picks its own events.
"""

from __future__ import annotations

from typing import Any

from tests.ltms.base import Recorder


class A(Recorder):
    name = "a"


class B(Recorder):
    name = "b"


class C(Recorder):
    name = "c"


class D(Recorder):
    name = "d"


class E(Recorder):
    name = "e"


class Linear(Recorder):
    """`a --go--> b`: one -> one."""

    name = "linear"
    init = [A]
    transitions = [{"from": A, "label": "go", "to": B}]


class Chain(Recorder):
    """`a --go--> b --go--> c`: one `go` moves one step only (no chaining)."""

    name = "chain"
    init = [A]
    transitions = [
        {"from": A, "label": "go", "to": B},
        {"from": B, "label": "go", "to": C},
    ]


class ChainReversed(Recorder):
    """`Chain` with its transitions declared in the other order."""

    name = "chain_reversed"
    init = [A]
    transitions = [
        {"from": B, "label": "go", "to": C},
        {"from": A, "label": "go", "to": B},
    ]


class Fork(Recorder):
    """`a --split--> [b, c, d]`: one -> many, in declaration order."""

    name = "fork"
    init = [A]
    transitions = [{"from": A, "label": "split", "to": [B, C, D]}]


class AnySource(Recorder):
    """`[a, b] --merge--> c`: many -> one fires on any active source."""

    name = "any_source"
    init = [A, B]
    transitions = [{"from": [A, B], "label": "merge", "to": C}]


class AnyOne(Recorder):
    """`[a, b] --merge--> c` with only `a` started: one active source is enough."""

    name = "any_one"
    init = [A]
    transitions = [{"from": [A, B], "label": "merge", "to": C}]


class JoinAll(Recorder):
    """`[a, b] --sync--> c` with `join: "all"`: `c` waits until both arrived."""

    name = "join_all"
    init = [A, B]
    transitions = [{"from": [A, B], "label": "sync", "to": C, "join": "all"}]


class JoinLater(Recorder):
    """`[a, b] --sync--> c` with `join: "all"`, where `b` is reached later (`d --ready--> b`)."""

    name = "join_later"
    init = [A, D]
    transitions = [
        {"from": [A, B], "label": "sync", "to": C, "join": "all"},
        {"from": D, "label": "ready", "to": B},
    ]


class ManyToMany(Recorder):
    """`[a, b] --swap--> [c, d]`: the cross product, each target queued once."""

    name = "many_to_many"
    init = [A, B]
    transitions = [{"from": [A, B], "label": "swap", "to": [C, D]}]


class SameLabel(Recorder):
    """`a --go--> c` and `b --go--> d`: one label, two transitions, both fire."""

    name = "same_label"
    init = [A, B]
    transitions = [
        {"from": A, "label": "go", "to": C},
        {"from": B, "label": "go", "to": D},
    ]


class FirstWins(Recorder):
    """`a --go--> b` and `a --go--> c`: the same source twice, the first declared wins."""

    name = "first_wins"
    init = [A]
    transitions = [
        {"from": A, "label": "go", "to": B},
        {"from": A, "label": "go", "to": C},
    ]


class Loop(Recorder):
    """A self-loop state: merges every payload into its own state, then records it."""

    name = "loop"

    def run(self, **payload: Any) -> None:
        self.update_state(dict(payload))
        self.record(payload)


class SelfLoop(Recorder):
    """`loop --again--> loop`: re-entry keeps the store, each payload reaches `run`."""

    name = "self_loop"
    init = [Loop]
    transitions = [
        {"from": Loop, "label": "again", "to": Loop},
        {"from": Loop, "label": "stop", "to": E},
    ]


class Kick(Recorder):
    """Seed 000's style: transitions from its own `run`, with a payload."""

    name = "kick"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.update_state({"kicked": True})
        self.root.update_state({"global_key": "global_value"})
        self.transition("go", payload={"by": self.fqn})


class AutoLinear(Recorder):
    """`kick --go--> b`, where `kick` fires `go` itself when it runs."""

    name = "auto_linear"
    init = [Kick]
    transitions = [{"from": Kick, "label": "go", "to": B}]
