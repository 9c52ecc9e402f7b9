"""`Hosted`: what the runtime needs of a registered machine, whatever it is written in.

An LTM class is hosted by `Machine`; another kind of machine (an
`Orchestrator` of python-statemachine machines) brings its own host through a
`__flou_hosted__()` class method, so the engine and the runtime never import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flou_grpc.engine.document import JsonObject, Path
from flou_grpc.engine.ltm import LTM
from flou_grpc.engine.machine import Execution, Step
from flou_grpc.engine.structure import NodeInfo
from flou_grpc.engine.work import Execute, Transition, UpdateState

__all__ = ["Hosted"]


class Hosted(Protocol):
    """A registered machine: how its instances start and take each kind of step."""

    @property
    def name(self) -> str:
        """The name clients start it by."""

    @property
    def root(self) -> type:
        """The class it was registered from."""

    user_code_in_steps: bool
    """True when `start` and `transition` run user code (to run off the event loop)."""

    def describe(self) -> NodeInfo:
        """Its structure."""

    def start(self, instance_id: str, payload: JsonObject) -> Step:
        """The first document of a new instance, and its first work."""

    def transition(self, instance_id: str, doc: JsonObject, item: Transition) -> Step:
        """An external event."""

    def update_state(self, instance_id: str, doc: JsonObject, item: UpdateState) -> Step:
        """Keys of a node's state set."""

    def prepare(
        self,
        instance_id: str,
        doc: JsonObject,
        item: Execute,
        append: Callable[[str, str, Any], list[Any]],
    ) -> Execution | None:
        """The run of a queued node, or None when it no longer needs one."""

    def execute(self, instance_id: str, doc: JsonObject, item: Execute, effects: Any) -> Step:
        """What a run queued, applied."""

    def set_status(self, instance_id: str, doc: JsonObject, fqn: str, status: str) -> Step:
        """A node's status set (error, or queued again)."""

    def path_of(self, instance_id: str, doc: JsonObject, fqn: str) -> tuple[Path, type[LTM]]:
        """The document path and class of the node at `fqn`."""

    def nodes(self, doc: JsonObject) -> list[tuple[str, str]]:
        """Every node's fqn and status, in document order."""

    def active_states(self, doc: JsonObject) -> list[str]:
        """The fqns of the active nodes."""
