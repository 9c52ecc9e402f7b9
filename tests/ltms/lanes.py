"""Params: concurrent lanes, spawned parameterized machines, joins (semantics section 9).

- `HubLanes`: `hub --spawn_{k}--> [hub, first_{k}]` spawns one lane per
  request and stays ready for the next; `first_{k} --next_{k}--> second_{k}`
  moves lanes independently.
- `Spawn`: `noop --start_{n}--> sub_{n}` spawns several sub-machines at once.
- `HubJoinAll`: lanes spawned by the hub, joined by `join: "all"`.
- `SpawnJoinAll`: lanes spawned in one request, then joined by `join: "all"`.
- `AppendJoin`: the user-level join of two fixed states via
  `atomic_state_append` (every arrival re-runs `wait`).
- `SpawnAppendJoin`: the original engine's join test: spawned lanes joined by
  `atomic_state_append`.
- `Fleet`: spawned sub-machines, each spawning its own nested lanes, joined
  with `join: "all"` at both levels.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tests.ltms.base import Recorder
from tests.ltms.flat import A, E


class Hub(Recorder):
    name = "hub"


class First(Recorder):
    name = "first_{k}"


class Second(Recorder):
    name = "second_{k}"


class HubLanes(Recorder):
    name = "hub_lanes"
    init = [Hub]
    transitions = [
        {"from": Hub, "label": "spawn_{k}", "to": [Hub, First]},
        {"from": First, "label": "next_{k}", "to": Second},
        {"from": First, "label": "skip", "to": E},
    ]


class Noop(Recorder):
    name = "noop"


class SubN(Recorder):
    name = "sub_{n}"
    init = [A]


class Spawn(Recorder):
    name = "spawn"
    init = [Noop]
    transitions = [{"from": Noop, "label": "start_{n}", "to": SubN}]


class Work(Recorder):
    name = "work_{k}"


class Gather(Recorder):
    name = "gather"


class HubJoinAll(Recorder):
    name = "hub_join_all"
    init = [Hub]
    transitions = [
        {"from": Hub, "label": "spawn_{k}", "to": [Hub, Work]},
        {"from": Work, "label": "done_{k}", "to": Gather, "join": "all"},
    ]


class SelfDone(Recorder):
    """A lane that reports `done_{k}` for itself as soon as it runs."""

    name = "work_{k}"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("done_{k}", params=[self.params], payload=self.params)


class Launch(Recorder):
    """Spawns one lane per value of its machine's `lanes` constant."""

    name = "launch"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("start_{k}", params=[{"k": k} for k in self.parent.lanes])


class SpawnJoinAll(Recorder):
    name = "spawn_join_all"
    lanes: ClassVar = [1, 2, 3]
    init = [Launch]
    transitions = [
        {"from": Launch, "label": "start_{k}", "to": SelfDone},
        {"from": SelfDone, "label": "done_{k}", "to": Gather, "join": "all"},
    ]


class Left(Recorder):
    name = "left"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("left_done", payload={"lane": "left"})


class Right(Recorder):
    name = "right"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("right_done", payload={"lane": "right"})


class Wait(Recorder):
    """The user-level join: appends each arrival, fires `all_done` once all arrived."""

    name = "wait"

    def get_initial_state(self) -> dict[str, Any]:
        return {"seen": []}

    def run(self, **payload: Any) -> None:
        self.record(payload)
        seen = self.atomic_state_append("seen", payload)
        expected = self.parent.expected
        if sorted(map(repr, seen)) == sorted(map(repr, expected)):
            self.transition("all_done")


class AppendJoin(Recorder):
    name = "append_join"
    expected: ClassVar = [{"lane": "left"}, {"lane": "right"}]
    init = [Left, Right]
    transitions = [
        {"from": Left, "label": "left_done", "to": Wait},
        {"from": Right, "label": "right_done", "to": Wait},
        {"from": Wait, "label": "all_done", "to": E},
    ]


class SpawnAppendJoin(Recorder):
    name = "spawn_append_join"
    lanes: ClassVar = [1, 2]
    expected: ClassVar = [{"k": "1"}, {"k": "2"}]
    init = [Launch]
    transitions = [
        {"from": Launch, "label": "start_{k}", "to": SelfDone},
        {"from": SelfDone, "label": "done_{k}", "to": Wait},
        {"from": Wait, "label": "all_done", "to": E},
    ]


class Spawner(Recorder):
    """Spawns two nested lanes named after its machine's own param."""

    name = "spawner"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        num = self.parent.params["num"]
        self.transition("go_{sub}", params=[{"sub": f"{num}a"}, {"sub": f"{num}b"}])


class Leg(Recorder):
    name = "leg_{sub}"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("finish_{sub}", params=[self.params])


class Wrap(Recorder):
    """Reports its machine's lane to the machine above."""

    name = "wrap"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.parent.transition("finished_{num}", params=[self.parent.params])


class Nested(Recorder):
    name = "nested_{num}"
    init = [Spawner]
    transitions = [
        {"from": Spawner, "label": "go_{sub}", "to": Leg},
        {"from": Leg, "label": "finish_{sub}", "to": Wrap, "join": "all"},
    ]


class FleetLaunch(Recorder):
    name = "launch"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.transition("start_{num}", params=[{"num": n} for n in self.parent.numbers])


class Fleet(Recorder):
    name = "fleet"
    numbers: ClassVar = [1, 2]
    init = [FleetLaunch]
    transitions = [
        {"from": FleetLaunch, "label": "start_{num}", "to": Nested},
        {"from": Nested, "label": "finished_{num}", "to": E, "join": "all"},
    ]
