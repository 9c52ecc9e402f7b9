"""The engine: pure LTM semantics.

Declarations and their validation, the instance tree as one JSON document, the
transition algorithm and the state operations: one step is a function
(instance document, work item) -> (new document, JSON patch, new work items,
fired transitions). Deterministic, and free of I/O: it imports neither grpc
nor sqlalchemy, so unit and property tests drive it directly. Running a node's
code is split out of the step (`Machine.prepare` / `Machine.execute`) so the
runtime can run it outside any transaction.
"""

from flou_grpc.engine.document import DocWriter, StateView, apply_patch
from flou_grpc.engine.ltm import LTM
from flou_grpc.engine.machine import Execution, Fired, Machine, Step
from flou_grpc.engine.work import Execute, Transition, UpdateState, WorkItem

__all__ = [
    "LTM",
    "DocWriter",
    "Execute",
    "Execution",
    "Fired",
    "Machine",
    "StateView",
    "Step",
    "Transition",
    "UpdateState",
    "WorkItem",
    "apply_patch",
]
