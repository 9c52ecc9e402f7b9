"""flou-client: a typed Python client of the flou-grpc service (flou.v1.FlouService).

    from flou_client import FlouClient

    with FlouClient("127.0.0.1:50051") as flou:
        instance = flou.start("shop", {"user": "ada"})
        flou.transition(instance.id, "checkout")
        for item in flou.watch(instance.id):
            print(item)

`FlouClient` is synchronous, `AsyncFlouClient` the same on asyncio (grpc.aio).
Results are the dataclasses of `flou_client.models`, errors the `FlouError`
tree of `flou_client.errors`, and `flou_client.mermaid.to_mermaid` draws a
described machine. The generated code the client is built on is the
`flou_client_gen` package (from protos/ by `make proto`; never edited by hand).
"""

from __future__ import annotations

from flou_client.aio import AsyncFlouClient
from flou_client.client import DEFAULT_TIMEOUT, FlouClient
from flou_client.errors import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    FlouError,
    InstanceAlreadyExistsError,
    InstanceCompletedError,
    InstanceNotFoundError,
    InternalError,
    InvalidArgumentError,
    InvalidFieldError,
    LimitExceededError,
    MachineNotFoundError,
    MissingParamError,
    NodeNotFoundError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    RequestIdReusedError,
    ResourceExhaustedError,
    RevisionConflictError,
    RevisionOutOfRangeError,
    ServerOverloadedError,
    ShuttingDownError,
    StateKeyNotFoundError,
    StateKeyNotListError,
    StoreUnavailableError,
    TooManyWatchersError,
    TransitionNotAllowedError,
    UnauthenticatedError,
    UnavailableError,
    UserCodeFailedError,
    WatcherTooSlowError,
)
from flou_client.models import (
    AppendResult,
    Event,
    EventKind,
    FiredTransition,
    Heartbeat,
    HistoryPage,
    Instance,
    InstancePage,
    InstanceStatus,
    InstanceView,
    JoinMode,
    Machine,
    MachineKind,
    MachinePage,
    MachineTransition,
    Node,
    NodeKind,
    Rejection,
    RetryResult,
    StepError,
    TransitionResult,
    UpdateResult,
    WaitMode,
    WatchItem,
    as_json,
)
from flou_client.retry import RetryPolicy
from flou_client.watch import WatchGapError

__all__ = [
    "DEFAULT_TIMEOUT",
    "AbortedError",
    "AlreadyExistsError",
    "AppendResult",
    "AsyncFlouClient",
    "DeadlineExceededError",
    "Event",
    "EventKind",
    "FailedPreconditionError",
    "FieldViolation",
    "FiredTransition",
    "FlouClient",
    "FlouError",
    "Heartbeat",
    "HistoryPage",
    "Instance",
    "InstanceAlreadyExistsError",
    "InstanceCompletedError",
    "InstanceNotFoundError",
    "InstancePage",
    "InstanceStatus",
    "InstanceView",
    "InternalError",
    "InvalidArgumentError",
    "InvalidFieldError",
    "JoinMode",
    "LimitExceededError",
    "Machine",
    "MachineKind",
    "MachineNotFoundError",
    "MachinePage",
    "MachineTransition",
    "MissingParamError",
    "Node",
    "NodeKind",
    "NodeNotFoundError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Rejection",
    "RequestIdReusedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RetryResult",
    "RevisionConflictError",
    "RevisionOutOfRangeError",
    "ServerOverloadedError",
    "ShuttingDownError",
    "StateKeyNotFoundError",
    "StateKeyNotListError",
    "StepError",
    "StoreUnavailableError",
    "TooManyWatchersError",
    "TransitionNotAllowedError",
    "TransitionResult",
    "UnauthenticatedError",
    "UnavailableError",
    "UpdateResult",
    "UserCodeFailedError",
    "WaitMode",
    "WatchGapError",
    "WatchItem",
    "WatcherTooSlowError",
    "as_json",
]
