"""The runtime: runs instances.

Per-instance FIFO mailboxes, workers that run user code outside any database
transaction and commit each step in one short transaction, and the waits and
watches built on committed events. `AsyncRuntime` is the asyncio core;
`Runtime` its embedded synchronous face. (Leases between replicas and the
cross-process watch hub come with the durable store.)
"""

from flou_grpc.engine.ltm import set_default_starter
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.runtime.default import default_runtime, start_on_default
from flou_grpc.runtime.embedded import Runtime
from flou_grpc.runtime.model import (
    AppendResult,
    Event,
    EventKind,
    Instance,
    InstanceStatus,
    StepError,
    TransitionResult,
    WaitMode,
)

set_default_starter(start_on_default)

__all__ = [
    "AppendResult",
    "AsyncRuntime",
    "Event",
    "EventKind",
    "Instance",
    "InstanceStatus",
    "Runtime",
    "StepError",
    "TransitionResult",
    "WaitMode",
    "default_runtime",
]
