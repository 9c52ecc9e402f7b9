"""Errors of the service as typed exceptions.

The server sends every error as a `google.rpc.Status` in the
`grpc-status-details-bin` trailer, with one `google.rpc.ErrorInfo` (domain
`flou.v1`, reason the full name of a `flou.v1.ErrorReason` value such as
`ERROR_REASON_INSTANCE_NOT_FOUND`, lowerCamelCase metadata), plus
`BadRequest` field violations, `ResourceInfo` or `RetryInfo` where they fit.
`from_rpc_error` turns a failed call into the `FlouError` subclass of its
reason, or, for a reason this client does not know (the enum is open) or an
error without details (a deadline, an unreachable server), the subclass of its
status code:

    FlouError                               any other code (UNIMPLEMENTED, CANCELLED ...)
    ├── InvalidArgumentError                INVALID_ARGUMENT
    │   ├── InvalidFieldError, MissingParamError, LimitExceededError,
    │   └── RequestIdReusedError
    ├── NotFoundError                       NOT_FOUND
    │   └── MachineNotFoundError, InstanceNotFoundError, NodeNotFoundError
    ├── AlreadyExistsError                  ALREADY_EXISTS
    │   └── InstanceAlreadyExistsError
    ├── FailedPreconditionError             FAILED_PRECONDITION
    │   ├── TransitionNotAllowedError, InstanceCompletedError, StateKeyNotFoundError,
    │   └── StateKeyNotListError, UserCodeFailedError
    ├── AbortedError                        ABORTED
    │   └── RevisionConflictError
    ├── OutOfRangeError                     OUT_OF_RANGE
    │   └── RevisionOutOfRangeError
    ├── ResourceExhaustedError              RESOURCE_EXHAUSTED
    │   └── WatcherTooSlowError, TooManyWatchersError, ServerOverloadedError
    ├── DeadlineExceededError               DEADLINE_EXCEEDED (server-side or client-side)
    ├── UnauthenticatedError                UNAUTHENTICATED
    ├── PermissionDeniedError               PERMISSION_DENIED
    ├── UnavailableError                    UNAVAILABLE (the only code retried)
    │   └── ShuttingDownError, StoreUnavailableError
    └── InternalError                       INTERNAL, UNKNOWN, DATA_LOSS
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, cast

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf.message import DecodeError

__all__ = [
    "DOMAIN",
    "AbortedError",
    "AlreadyExistsError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "FlouError",
    "InstanceAlreadyExistsError",
    "InstanceCompletedError",
    "InstanceNotFoundError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidFieldError",
    "LimitExceededError",
    "MachineNotFoundError",
    "MissingParamError",
    "NodeNotFoundError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "RequestIdReusedError",
    "ResourceExhaustedError",
    "ResourceInfo",
    "RevisionConflictError",
    "RevisionOutOfRangeError",
    "ServerOverloadedError",
    "ShuttingDownError",
    "StateKeyNotFoundError",
    "StateKeyNotListError",
    "StoreUnavailableError",
    "TooManyWatchersError",
    "TransitionNotAllowedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UserCodeFailedError",
    "WatcherTooSlowError",
    "error_class",
    "from_rpc_error",
    "from_status",
]

DOMAIN: Final = "flou.v1"
"""The `ErrorInfo.domain` of the service's errors."""

STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
"""The trailer that carries the serialized `google.rpc.Status`."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    """The path of the field in the request, e.g. `params[1].id`."""

    description: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """The missing resource of a NOT_FOUND (`google.rpc.ResourceInfo`)."""

    resource_type: str
    resource_name: str
    description: str


class FlouError(Exception):
    """An RPC of the service failed.

    Attributes:
        code: The gRPC status code.
        reason: The `ErrorInfo.reason` as the server sent it: the full
            `flou.v1.ErrorReason` name (`ERROR_REASON_INSTANCE_NOT_FOUND`), or
            '' when the error carried no ErrorInfo (for instance a deadline
            that passed on the client, or a server that cannot be reached).
        message: The status message, for humans.
        metadata: The `ErrorInfo.metadata`: lowerCamelCase keys to strings.
        field_violations: The `BadRequest` violations of an invalid request.
        resource: The `ResourceInfo` of a NOT_FOUND, if sent.
        retry_delay: The `RetryInfo` delay in seconds of an UNAVAILABLE, if sent.
        domain: The `ErrorInfo.domain` (`flou.v1`), or ''.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    """The status code this class stands for (see `error_class`)."""

    REASON: ClassVar[str] = ""
    """The `ErrorReason` name this class stands for; '' for the code classes."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        resource: ResourceInfo | None = None,
        retry_delay: float | None = None,
        domain: str = "",
    ) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = self.default_code if code is None else code
        self.reason: str = self.REASON if reason is None else reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.resource = resource
        self.retry_delay = retry_delay
        self.domain = domain

    def __str__(self) -> str:
        """`CODE REASON: message (key=value, ...)`: one readable line."""
        head = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        text = f"{head}: {self.message}" if self.message else head
        if self.metadata:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
            text += f" ({pairs})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, metadata={self.metadata!r})"
        )


# --- by status code -------------------------------------------------------------------


class InvalidArgumentError(FlouError):
    """The request is malformed; `field_violations` names the fields."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(FlouError):
    """A machine, instance or node does not exist."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(FlouError):
    """What the request would create already exists."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(FlouError):
    """The instance is not in a state that allows the operation."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(FlouError):
    """A concurrent change won: re-read, then re-apply."""

    default_code = grpc.StatusCode.ABORTED


class OutOfRangeError(FlouError):
    """A revision outside the range that exists."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhaustedError(FlouError):
    """A limit of the server was reached."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(FlouError):
    """The call's deadline passed.

    With the reason `ERROR_REASON_DEADLINE_EXCEEDED` the server says, in
    `accepted`, whether the mutation was enqueued (and will still be processed).
    Without a reason the deadline passed on the client's side: nothing is known.
    """

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED
    REASON = "ERROR_REASON_DEADLINE_EXCEEDED"

    @property
    def accepted(self) -> bool:
        """True when the server says the work was durably enqueued."""
        return self.metadata.get("accepted") == "true"


class UnauthenticatedError(FlouError):
    """The server requires a bearer token, and the call carried none or an unknown one."""

    default_code = grpc.StatusCode.UNAUTHENTICATED
    REASON = "ERROR_REASON_UNAUTHENTICATED"


class PermissionDeniedError(FlouError):
    """The caller may not do this."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(FlouError):
    """The service cannot answer now (unreachable, shutting down, database down)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class InternalError(FlouError):
    """An unexpected server error; its details stay in the server's log."""

    default_code = grpc.StatusCode.INTERNAL
    REASON = "ERROR_REASON_INTERNAL"


# --- by reason --------------------------------------------------------------------------


class InvalidFieldError(InvalidArgumentError):
    """A request field is missing or malformed (metadata `field`, `description`)."""

    REASON = "ERROR_REASON_INVALID_FIELD"


class MissingParamError(InvalidArgumentError):
    """A params map does not bind a `{param}` (metadata `field`, `param`, `template`)."""

    REASON = "ERROR_REASON_MISSING_PARAM"


class LimitExceededError(InvalidArgumentError):
    """Over a configured limit (metadata `field`, `limit`, `max`, `actual`)."""

    REASON = "ERROR_REASON_LIMIT_EXCEEDED"


class RequestIdReusedError(InvalidArgumentError):
    """The request_id was used with another body (metadata `requestId`)."""

    REASON = "ERROR_REASON_REQUEST_ID_REUSED"


class MachineNotFoundError(NotFoundError):
    """No machine of that name is registered (metadata `machine`)."""

    REASON = "ERROR_REASON_MACHINE_NOT_FOUND"


class InstanceNotFoundError(NotFoundError):
    """No instance has that id (metadata `instanceId`)."""

    REASON = "ERROR_REASON_INSTANCE_NOT_FOUND"


class NodeNotFoundError(NotFoundError):
    """The instance has no node at that fqn (metadata `instanceId`, `fqn`)."""

    REASON = "ERROR_REASON_NODE_NOT_FOUND"


class InstanceAlreadyExistsError(AlreadyExistsError):
    """The instance id is taken by another start (metadata `instanceId`)."""

    REASON = "ERROR_REASON_INSTANCE_ALREADY_EXISTS"


class TransitionNotAllowedError(FailedPreconditionError):
    """No transition with that label and namespace can fire from the active states.

    Metadata: `instanceId`, `label`, `namespace`, `activeStates` (comma-separated).
    """

    REASON = "ERROR_REASON_TRANSITION_NOT_ALLOWED"


class InstanceCompletedError(FailedPreconditionError):
    """The instance has completed (metadata `instanceId`)."""

    REASON = "ERROR_REASON_INSTANCE_COMPLETED"


class StateKeyNotFoundError(FailedPreconditionError):
    """A state key does not exist (metadata `instanceId`, `fqn`, `key`)."""

    REASON = "ERROR_REASON_STATE_KEY_NOT_FOUND"


class StateKeyNotListError(FailedPreconditionError):
    """An append names a key that is not a list (metadata ... `actualType`)."""

    REASON = "ERROR_REASON_STATE_KEY_NOT_LIST"


class UserCodeFailedError(FailedPreconditionError):
    """The machine's own code raised (metadata ... `errorType`, `errorMessage`)."""

    REASON = "ERROR_REASON_USER_CODE_FAILED"


class RevisionConflictError(AbortedError):
    """`expected_revision` is stale (metadata `expectedRevision`, `currentRevision`)."""

    REASON = "ERROR_REASON_REVISION_CONFLICT"


class RevisionOutOfRangeError(OutOfRangeError):
    """A `from_revision` outside the kept range (metadata `oldestRevision` ...)."""

    REASON = "ERROR_REASON_REVISION_OUT_OF_RANGE"


class WatcherTooSlowError(ResourceExhaustedError):
    """A watcher fell too far behind and was closed (metadata `lastRevision`)."""

    REASON = "ERROR_REASON_WATCHER_TOO_SLOW"


class TooManyWatchersError(ResourceExhaustedError):
    """The instance has the maximum number of watchers (metadata `max`)."""

    REASON = "ERROR_REASON_TOO_MANY_WATCHERS"


class ServerOverloadedError(ResourceExhaustedError):
    """The server is at its limit of concurrent RPCs (metadata `max`)."""

    REASON = "ERROR_REASON_SERVER_OVERLOADED"


class ShuttingDownError(UnavailableError):
    """The server is shutting down; reconnect and resume."""

    REASON = "ERROR_REASON_SHUTTING_DOWN"


class StoreUnavailableError(UnavailableError):
    """The server's database could not be reached."""

    REASON = "ERROR_REASON_STORE_UNAVAILABLE"


def _subclasses(cls: type[FlouError]) -> list[type[FlouError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


_BY_REASON: Final[Mapping[str, type[FlouError]]] = {
    cls.REASON: cls for cls in _subclasses(FlouError) if cls.REASON
}
_BY_CODE: Final[Mapping[grpc.StatusCode, type[FlouError]]] = {
    **{cls.default_code: cls for cls in FlouError.__subclasses__()},
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def error_class(code: grpc.StatusCode, reason: str = "") -> type[FlouError]:
    """The class of an error: its reason's if known and of that code, else its code's."""
    by_reason = _BY_REASON.get(reason)
    if by_reason is not None and by_reason.default_code == code:
        return by_reason
    return _BY_CODE.get(code, FlouError)


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None
) -> FlouError:
    """Builds the error of a status code, its message and its rich details, if any."""
    reason, domain = "", ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    resource: ResourceInfo | None = None
    retry_delay: float | None = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        found = error_details_pb2.ResourceInfo()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(found):
            resource = ResourceInfo(found.resource_type, found.resource_name, found.description)
        elif detail.Unpack(retry):
            retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    if status is not None and status.message:
        message = status.message
    return error_class(code, reason)(
        message,
        code=code,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        resource=resource,
        retry_delay=retry_delay,
        domain=domain,
    )


class _FailedCall(Protocol):
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


def from_rpc_error(error: grpc.RpcError) -> FlouError:
    """The typed error of a failed call (`grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    if not callable(getattr(error, "code", None)):
        return FlouError(str(error) or type(error).__name__, code=grpc.StatusCode.UNKNOWN)
    call = cast(_FailedCall, error)
    code = call.code()
    status: status_pb2.Status | None = None
    for key, value in call.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                status = None
            break
    return from_status(code, call.details() or "", status)
