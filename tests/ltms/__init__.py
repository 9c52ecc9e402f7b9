"""A shared library of sample LTM declarations for the engine tests.

Each module mirrors a group of scenarios of the original engine
(flou-original-semantics.md sections 5, 7, 8 and 9):

- `flat`: one machine of plain states: linear, chains, forks, any-source and
  `join: "all"` joins, many-to-many, a payload self-loop, seed 000's style of
  states that transition from their own `run`.
- `nested`: sub-machines at any depth, namespaces across them (defaults and a
  custom channel), in-`run` namespace defaults.
- `lanes`: params: concurrent lanes, spawned parameterized sub-machines with
  nested lanes, joins over lanes via `atomic_state_append` and `join: "all"`.
- `aio`: an `async def run`.

Every state of the library records each run in its own state (`runs`: the
payloads it ran with), so tests can see what ran, how often and with what.
"""

from tests.ltms.aio import AsyncFlow, AsyncStep
from tests.ltms.base import Recorder, runs
from tests.ltms.flat import (
    A,
    AnyOne,
    AnySource,
    AutoLinear,
    B,
    C,
    Chain,
    ChainReversed,
    D,
    E,
    FirstWins,
    Fork,
    JoinAll,
    JoinLater,
    Kick,
    Linear,
    Loop,
    ManyToMany,
    SameLabel,
    SelfLoop,
)
from tests.ltms.lanes import (
    AppendJoin,
    Fleet,
    HubJoinAll,
    HubLanes,
    Spawn,
    SpawnAppendJoin,
    SpawnJoinAll,
)
from tests.ltms.nested import Channels, Deep, Defaults, Shop

__all__ = [
    "A",
    "AnyOne",
    "AnySource",
    "AppendJoin",
    "AsyncFlow",
    "AsyncStep",
    "AutoLinear",
    "B",
    "C",
    "Chain",
    "ChainReversed",
    "Channels",
    "D",
    "Deep",
    "Defaults",
    "E",
    "FirstWins",
    "Fleet",
    "Fork",
    "HubJoinAll",
    "HubLanes",
    "JoinAll",
    "JoinLater",
    "Kick",
    "Linear",
    "Loop",
    "ManyToMany",
    "Recorder",
    "SameLabel",
    "SelfLoop",
    "Shop",
    "Spawn",
    "SpawnAppendJoin",
    "SpawnJoinAll",
    "runs",
]
