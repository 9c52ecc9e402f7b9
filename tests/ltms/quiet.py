"""States with no code of their own: their executes are pure, and chain to the step before.

`Flip` is the benchmarks' ping-pong (`off --on--> on`, `on --off--> off`);
`Nest` enters a sub-machine whose first state has no code either (two pure
executes after the transition), or `busy`, whose `run` is user code. In
`Auto`, `kick`'s code moves on by itself (`self.transition`) to `rest`, which
has none; `stray`'s code sends a label nothing fires on. `Journal` only holds
lists to append to.
"""

from __future__ import annotations

from typing import Any

from flou_grpc.engine import LTM


class Off(LTM):
    name = "off"


class On(LTM):
    name = "on"


class Flip(LTM):
    name = "flip"
    init = [Off]
    transitions = [
        {"from": Off, "label": "on", "to": On},
        {"from": On, "label": "off", "to": Off},
    ]


class Leaf(LTM):
    name = "leaf"


class Sub(LTM):
    name = "sub"
    init = [Leaf]


class Busy(LTM):
    name = "busy"

    def run(self, **payload: Any) -> None:
        self.update_state({"ran": payload})


class Wait(LTM):
    name = "wait"


class Nest(LTM):
    name = "nest"
    init = [Wait]
    transitions = [
        {"from": Wait, "label": "enter", "to": Sub},
        {"from": Wait, "label": "work", "to": Busy},
    ]


class Kick(LTM):
    name = "kick"

    def run(self, **payload: Any) -> None:
        self.transition("next", payload={"from": "kick"})


class Rest(LTM):
    name = "rest"


class Stray(LTM):
    name = "stray"

    def run(self, **payload: Any) -> None:
        self.transition("nowhere")


class Auto(LTM):
    name = "auto"
    init = [Kick]
    transitions = [
        {"from": Kick, "label": "next", "to": Rest},
        {"from": Rest, "label": "again", "to": Kick},
        {"from": Rest, "label": "stray", "to": Stray},
    ]


class Journal(LTM):
    """A root with lists to append to (AtomicAppend), and a key that is not a list."""

    name = "journal"
    init = [Off]

    def get_initial_state(self) -> dict[str, Any]:
        return {"log": [], "other": [], "title": "x"}
