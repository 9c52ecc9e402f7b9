"""The orchestrator: hosting python-statemachine machines (seed 003's API).

An `Orchestrator` groups StateMachine classes as typed fields and injects
itself into their callbacks (`orchestrator`, `injection`); `snapshot` and
`restore` persist and rebuild the machines' configurations without running
entry actions (`snapshot`); `send` runs one event, all or nothing (`step`);
`describe` gives the structure as plain data (`description`). It depends on
the engine's pieces, the errors and python-statemachine, never on grpc,
sqlalchemy, the store, the runtime or the service.
"""

from flou_grpc.orchestrator.description import (
    MachineInfo,
    OrchestratorInfo,
    StateInfo,
    TransitionInfo,
    describe,
)
from flou_grpc.orchestrator.orchestrator import Orchestrator, machine_fields, machines_of
from flou_grpc.orchestrator.snapshot import SNAPSHOT_VERSION, reset, restore, snapshot
from flou_grpc.orchestrator.step import send

__all__ = [
    "SNAPSHOT_VERSION",
    "MachineInfo",
    "Orchestrator",
    "OrchestratorInfo",
    "StateInfo",
    "TransitionInfo",
    "describe",
    "machine_fields",
    "machines_of",
    "reset",
    "restore",
    "send",
    "snapshot",
]
