"""The machine the benchmarks drive: `a --go--> b`, `b --back--> a`, and a `log` list.

One external transition is two steps: the transition, then the execute of its
target; neither state has a `run`, so the execute commits in the transition's
transaction (chained), an event each. `log` is the list AtomicAppend
benchmarks append to.
The service benchmark's server loads this file (`FLOU_APP=bench/pingpong.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from flou_grpc import LTM


class A(LTM):
    name = "a"


class B(LTM):
    name = "b"


class PingPong(LTM):
    name = "pingpong"
    init: ClassVar[Sequence[type[LTM]]] = [A]
    transitions: ClassVar[Sequence[Mapping[str, Any]]] = [
        {"from": A, "label": "go", "to": B},
        {"from": B, "label": "back", "to": A},
    ]

    def get_initial_state(self) -> Mapping[str, Any]:
        return {"log": []}
