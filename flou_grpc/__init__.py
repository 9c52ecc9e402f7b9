"""flou-grpc: durable, observable, hierarchical state machines behind a gRPC API.

Machines are written in Python, either as Flou Labeled Transition Models
(`LTM`) or as python-statemachine machines grouped by an `Orchestrator`; the
service hosts their instances, persists every step, and lets services in any
language drive and watch them over the `flou.v1.FlouService` contract
(protos/flou/v1).

Layout, one direction of dependencies (DESIGN.md section 2):
    engine/        pure LTM semantics, no I/O
    orchestrator/  python-statemachine hosting
    store/         SQLAlchemy persistence; the only package importing sqlalchemy
    runtime/       mailboxes, workers, leases, the watch hub
    service/       the grpc.aio adapter; the only package importing generated code
    _proto/        generated code only (make proto)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flou-grpc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

from flou_grpc.engine import LTM
from flou_grpc.engine.registry import Registry
from flou_grpc.orchestrator import Orchestrator
from flou_grpc.runtime import AsyncRuntime, Runtime, WaitMode

__all__ = [
    "LTM",
    "AsyncRuntime",
    "Orchestrator",
    "Registry",
    "Runtime",
    "WaitMode",
    "__version__",
]
