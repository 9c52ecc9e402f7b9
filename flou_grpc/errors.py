"""The errors of flou-grpc: one tree, raised by the engine, store and runtime.

Each concrete error names its `reason`, the `flou.v1.ErrorReason` value that
clients receive in the `google.rpc.ErrorInfo` of the gRPC status, and carries
its `metadata` (lowerCamelCase keys, as documented on that value in
`protos/flou/v1/error_reason.proto`). The message is built from the same data,
in one place: the error's constructor. The category classes (the second level
of the tree) say which gRPC status code an error comes with; the mapping itself
lives in `flou_grpc.service.status`, so this module imports no gRPC.

    FlouError
    ├── InvalidArgumentError           INVALID_ARGUMENT (+ BadRequest violations)
    │   ├── InvalidFieldError            ERROR_REASON_INVALID_FIELD
    │   ├── MissingParamError            ERROR_REASON_MISSING_PARAM
    │   ├── LimitExceededError           ERROR_REASON_LIMIT_EXCEEDED
    │   └── RequestIdReusedError         ERROR_REASON_REQUEST_ID_REUSED
    ├── NotFoundError                  NOT_FOUND (+ ResourceInfo)
    │   ├── MachineNotFoundError         ERROR_REASON_MACHINE_NOT_FOUND
    │   ├── InstanceNotFoundError        ERROR_REASON_INSTANCE_NOT_FOUND
    │   └── NodeNotFoundError            ERROR_REASON_NODE_NOT_FOUND
    ├── AlreadyExistsError             ALREADY_EXISTS
    │   └── InstanceAlreadyExistsError   ERROR_REASON_INSTANCE_ALREADY_EXISTS
    ├── FailedPreconditionError        FAILED_PRECONDITION
    │   ├── TransitionNotAllowedError    ERROR_REASON_TRANSITION_NOT_ALLOWED
    │   ├── InstanceCompletedError       ERROR_REASON_INSTANCE_COMPLETED
    │   ├── StateKeyNotFoundError        ERROR_REASON_STATE_KEY_NOT_FOUND
    │   ├── StateKeyNotListError         ERROR_REASON_STATE_KEY_NOT_LIST
    │   └── UserCodeFailedError          ERROR_REASON_USER_CODE_FAILED
    ├── AbortedError                   ABORTED
    │   └── RevisionConflictError        ERROR_REASON_REVISION_CONFLICT
    ├── OutOfRangeError                OUT_OF_RANGE
    │   └── RevisionOutOfRangeError      ERROR_REASON_REVISION_OUT_OF_RANGE
    ├── ResourceExhaustedError         RESOURCE_EXHAUSTED
    │   ├── WatcherTooSlowError          ERROR_REASON_WATCHER_TOO_SLOW
    │   ├── TooManyWatchersError         ERROR_REASON_TOO_MANY_WATCHERS
    │   └── ServerOverloadedError        ERROR_REASON_SERVER_OVERLOADED
    ├── DeadlineExceededError          DEADLINE_EXCEEDED, ERROR_REASON_DEADLINE_EXCEEDED
    ├── UnauthenticatedError           UNAUTHENTICATED, ERROR_REASON_UNAUTHENTICATED
    ├── UnavailableError               UNAVAILABLE (+ RetryInfo)
    │   ├── ShuttingDownError            ERROR_REASON_SHUTTING_DOWN
    │   └── StoreUnavailableError        ERROR_REASON_STORE_UNAVAILABLE
    ├── InternalError                  INTERNAL, ERROR_REASON_INTERNAL
    └── InvalidDefinitionError         a machine's declaration is wrong: raised when its
                                       class is created or registered (INTERNAL if the
                                       server ever meets one at run time)

Adding an error means changing this tree, the enum in error_reason.proto and
(for a new category) the table in `flou_grpc.service.status` together; the
contract tests check that they agree.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
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
    "InvalidDefinitionError",
    "InvalidFieldError",
    "LimitExceededError",
    "MachineNotFoundError",
    "MissingParamError",
    "NodeNotFoundError",
    "NotFoundError",
    "OutOfRangeError",
    "RequestIdReusedError",
    "ResourceExhaustedError",
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
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request, as in `google.rpc.BadRequest.FieldViolation`."""

    field: str
    """The path of the field in the request, e.g. `params[1].id` or `updates["a.b"]`."""

    description: str
    """Why the value is invalid, for humans."""


class FlouError(Exception):
    """The root of every error flou-grpc raises on purpose.

    Attributes:
        message: A short English message for humans; every dynamic part of it
            is also in `metadata`.
        metadata: The `ErrorInfo` metadata, lowerCamelCase keys to strings.
    """

    reason: ClassVar[str] = ""
    """The `flou.v1.ErrorReason` value name; empty on the category classes."""

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    @staticmethod
    def from_info(
        reason: str,
        message: str,
        metadata: Mapping[str, str],
        violations: Sequence[Sequence[str]] = (),
    ) -> FlouError:
        """Rebuilds an error from what its ErrorInfo carries (a stored first answer).

        The result has the class of `reason` (InternalError for an unknown one),
        its message and metadata, the attributes its metadata holds (typed as
        the class's constructor declares them), and, for invalid arguments, its
        field `violations` ((field, description) pairs, as `to_info` gives them).
        """
        found: type[FlouError] = InternalError
        pending: list[type[FlouError]] = [FlouError]
        while pending:
            cls = pending.pop()
            if cls.reason == reason:
                found = cls
                break
            pending += cls.__subclasses__()
        error = found.__new__(found)
        FlouError.__init__(error, message, metadata)
        hints = (
            typing.get_type_hints(found.__init__)
            if found.__init__ is not FlouError.__init__
            else {}
        )
        for key, value in metadata.items():
            attribute = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
            kind = hints.get(attribute)
            if kind is int:
                setattr(error, attribute, int(value))
            elif kind is bool:
                setattr(error, attribute, value == "true")
            elif kind is not None and typing.get_origin(kind) is Sequence:
                setattr(error, attribute, tuple(value.split(",")) if value else ())
            elif kind is str:
                setattr(error, attribute, value)
        if isinstance(error, InvalidArgumentError) and violations:
            error.violations = tuple(FieldViolation(field, text) for field, text in violations)
        return error

    @staticmethod
    def from_json(info: Mapping[str, Any]) -> FlouError:
        """`from_info` of what `to_info` gave."""
        return FlouError.from_info(
            str(info["reason"]),
            str(info["message"]),
            dict(info["metadata"]),
            list(info.get("violations", ())),
        )

    def to_info(self) -> dict[str, object]:
        """The reason, message, metadata and field violations, as JSON (see `from_info`)."""
        info: dict[str, object] = {
            "reason": self.reason,
            "message": self.message,
            "metadata": dict(self.metadata),
        }
        if isinstance(self, InvalidArgumentError) and self.violations:
            info["violations"] = [[v.field, v.description] for v in self.violations]
        return info


# --- INVALID_ARGUMENT ---------------------------------------------------------


class InvalidArgumentError(FlouError):
    """The request is malformed; `violations` names the fields."""

    violations: tuple[FieldViolation, ...] = ()


class InvalidFieldError(InvalidArgumentError):
    """One or more request fields are missing or malformed."""

    reason = "ERROR_REASON_INVALID_FIELD"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        if not violations:
            raise ValueError("InvalidFieldError needs at least one violation")
        self.violations = tuple(violations)
        first = self.violations[0]
        super().__init__(
            f"invalid {first.field}: {first.description}",
            {"field": first.field, "description": first.description},
        )

    @classmethod
    def of(cls, field: str, description: str) -> InvalidFieldError:
        """Builds the error for a single invalid field."""
        return cls([FieldViolation(field, description)])


class MissingParamError(InvalidArgumentError):
    """A params map does not bind a `{param}` that a label or a name needs."""

    reason = "ERROR_REASON_MISSING_PARAM"

    def __init__(self, field: str, param: str, template: str) -> None:
        self.field, self.param, self.template = field, param, template
        description = f"no value for {{{param}}} of {template!r}"
        self.violations = (FieldViolation(field, description),)
        super().__init__(
            f"{field}: {description}", {"field": field, "param": param, "template": template}
        )


class LimitExceededError(InvalidArgumentError):
    """A request, or the state it would produce, is over a configured limit."""

    reason = "ERROR_REASON_LIMIT_EXCEEDED"

    def __init__(self, field: str, limit: str, maximum: int, actual: int) -> None:
        self.field, self.limit, self.maximum, self.actual = field, limit, maximum, actual
        description = f"{actual} is over the limit {limit} = {maximum}"
        self.violations = (FieldViolation(field, description),)
        super().__init__(
            f"{field}: {description}",
            {"field": field, "limit": limit, "max": str(maximum), "actual": str(actual)},
        )


class RequestIdReusedError(InvalidArgumentError):
    """A request_id was already used with a different request body."""

    reason = "ERROR_REASON_REQUEST_ID_REUSED"

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        description = "already used with a different request body"
        self.violations = (FieldViolation("request_id", description),)
        super().__init__(f"request_id {request_id!r} {description}", {"requestId": request_id})


# --- NOT_FOUND ----------------------------------------------------------------


class NotFoundError(FlouError):
    """A named resource does not exist."""

    resource_type: ClassVar[str] = ""
    """The `google.rpc.ResourceInfo.resource_type` of the missing resource."""

    resource_name: str = ""
    """The `google.rpc.ResourceInfo.resource_name` of the missing resource."""


class MachineNotFoundError(NotFoundError):
    """No machine of that name is registered."""

    reason = "ERROR_REASON_MACHINE_NOT_FOUND"
    resource_type = "flou.v1.Machine"

    def __init__(self, machine: str) -> None:
        self.machine = self.resource_name = machine
        super().__init__(f"no machine named {machine!r} is registered", {"machine": machine})


class InstanceNotFoundError(NotFoundError):
    """No instance has that id."""

    reason = "ERROR_REASON_INSTANCE_NOT_FOUND"
    resource_type = "flou.v1.Instance"

    def __init__(self, instance_id: str) -> None:
        self.instance_id = self.resource_name = instance_id
        super().__init__(f"instance {instance_id!r} not found", {"instanceId": instance_id})


class NodeNotFoundError(NotFoundError):
    """The instance has no node at that fqn."""

    reason = "ERROR_REASON_NODE_NOT_FOUND"
    resource_type = "flou.v1.Node"

    def __init__(self, instance_id: str, fqn: str) -> None:
        self.instance_id, self.fqn = instance_id, fqn
        self.resource_name = f"{instance_id}/{fqn}"
        super().__init__(
            f"instance {instance_id!r} has no node {fqn!r}",
            {"instanceId": instance_id, "fqn": fqn},
        )


# --- ALREADY_EXISTS -------------------------------------------------------------


class AlreadyExistsError(FlouError):
    """A resource the request would create already exists."""


class InstanceAlreadyExistsError(AlreadyExistsError):
    """Start asked for an instance id that another request already took."""

    reason = "ERROR_REASON_INSTANCE_ALREADY_EXISTS"

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id!r} already exists", {"instanceId": instance_id})


# --- FAILED_PRECONDITION --------------------------------------------------------


class FailedPreconditionError(FlouError):
    """The instance is not in a state that allows the operation."""


class TransitionNotAllowedError(FailedPreconditionError):
    """No transition with that label and namespace can fire from the active states."""

    reason = "ERROR_REASON_TRANSITION_NOT_ALLOWED"

    def __init__(
        self, instance_id: str, label: str, namespace: str, active_states: Sequence[str]
    ) -> None:
        self.instance_id, self.label, self.namespace = instance_id, label, namespace
        self.active_states = tuple(active_states)
        active = ",".join(self.active_states)
        super().__init__(
            f"no transition {label!r} in namespace {namespace!r} can fire from the active "
            f"states [{active}] of instance {instance_id!r}",
            {
                "instanceId": instance_id,
                "label": label,
                "namespace": namespace,
                "activeStates": active,
            },
        )


class InstanceCompletedError(FailedPreconditionError):
    """The instance has completed and accepts no more transitions."""

    reason = "ERROR_REASON_INSTANCE_COMPLETED"

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id!r} has completed", {"instanceId": instance_id})


class StateKeyNotFoundError(FailedPreconditionError):
    """A dotted state key goes through, or names, a key that does not exist."""

    reason = "ERROR_REASON_STATE_KEY_NOT_FOUND"

    def __init__(self, instance_id: str, fqn: str, key: str) -> None:
        self.instance_id, self.fqn, self.key = instance_id, fqn, key
        super().__init__(
            f"node {fqn!r} of instance {instance_id!r} has no state key {key!r}",
            {"instanceId": instance_id, "fqn": fqn, "key": key},
        )


class StateKeyNotListError(FailedPreconditionError):
    """An atomic append names a key whose value is not a list."""

    reason = "ERROR_REASON_STATE_KEY_NOT_LIST"

    def __init__(self, instance_id: str, fqn: str, key: str, actual_type: str) -> None:
        self.instance_id, self.fqn, self.key = instance_id, fqn, key
        self.actual_type = actual_type
        super().__init__(
            f"state key {key!r} of node {fqn!r} of instance {instance_id!r} holds "
            f"{actual_type}, not a list",
            {"instanceId": instance_id, "fqn": fqn, "key": key, "actualType": actual_type},
        )


class UserCodeFailedError(FailedPreconditionError):
    """The machine's own code, run by the request, raised; nothing was committed."""

    reason = "ERROR_REASON_USER_CODE_FAILED"

    def __init__(self, instance_id: str, fqn: str, error_type: str, error_message: str) -> None:
        self.instance_id, self.fqn = instance_id, fqn
        self.error_type, self.error_message = error_type, error_message
        super().__init__(
            f"the code of {fqn!r} in instance {instance_id!r} raised {error_type}: "
            f"{error_message}",
            {
                "instanceId": instance_id,
                "fqn": fqn,
                "errorType": error_type,
                "errorMessage": error_message,
            },
        )


# --- ABORTED ------------------------------------------------------------------------


class AbortedError(FlouError):
    """A concurrent change won; re-read, then re-apply."""


class RevisionConflictError(AbortedError):
    """`expected_revision` is not the instance's current revision."""

    reason = "ERROR_REASON_REVISION_CONFLICT"

    def __init__(self, instance_id: str, expected_revision: int, current_revision: int) -> None:
        self.instance_id = instance_id
        self.expected_revision, self.current_revision = expected_revision, current_revision
        super().__init__(
            f"instance {instance_id!r} is at revision {current_revision}, "
            f"not the expected {expected_revision}",
            {
                "instanceId": instance_id,
                "expectedRevision": str(expected_revision),
                "currentRevision": str(current_revision),
            },
        )


# --- OUT_OF_RANGE ---------------------------------------------------------------------


class OutOfRangeError(FlouError):
    """A position (a revision) outside the range that exists."""


class RevisionOutOfRangeError(OutOfRangeError):
    """A revision older than the oldest kept one, or newer than the current one."""

    reason = "ERROR_REASON_REVISION_OUT_OF_RANGE"

    def __init__(
        self, instance_id: str, revision: int, oldest_revision: int, current_revision: int
    ) -> None:
        self.instance_id, self.revision = instance_id, revision
        self.oldest_revision, self.current_revision = oldest_revision, current_revision
        super().__init__(
            f"revision {revision} of instance {instance_id!r} is outside the kept range "
            f"[{oldest_revision}, {current_revision}]",
            {
                "instanceId": instance_id,
                "revision": str(revision),
                "oldestRevision": str(oldest_revision),
                "currentRevision": str(current_revision),
            },
        )


# --- RESOURCE_EXHAUSTED -----------------------------------------------------------------


class ResourceExhaustedError(FlouError):
    """A server-side limit on resources was reached."""


class WatcherTooSlowError(ResourceExhaustedError):
    """A watcher fell too far behind and was closed."""

    reason = "ERROR_REASON_WATCHER_TOO_SLOW"

    def __init__(self, instance_id: str, last_revision: int, max_buffered: int) -> None:
        self.instance_id, self.last_revision = instance_id, last_revision
        self.max_buffered = max_buffered
        super().__init__(
            f"the watcher of instance {instance_id!r} fell more than {max_buffered} events "
            f"behind; resume from revision {last_revision}",
            {
                "instanceId": instance_id,
                "lastRevision": str(last_revision),
                "maxBuffered": str(max_buffered),
            },
        )


class TooManyWatchersError(ResourceExhaustedError):
    """The instance already has the maximum number of watchers."""

    reason = "ERROR_REASON_TOO_MANY_WATCHERS"

    def __init__(self, instance_id: str, maximum: int) -> None:
        self.instance_id, self.maximum = instance_id, maximum
        super().__init__(
            f"instance {instance_id!r} already has {maximum} watchers",
            {"instanceId": instance_id, "max": str(maximum)},
        )


class ServerOverloadedError(ResourceExhaustedError):
    """The server is at its limit of concurrent RPCs."""

    reason = "ERROR_REASON_SERVER_OVERLOADED"

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        super().__init__(
            f"the server is handling its maximum of {maximum} RPCs", {"max": str(maximum)}
        )


# --- DEADLINE_EXCEEDED, UNAUTHENTICATED ------------------------------------------------


class DeadlineExceededError(FlouError):
    """The deadline passed before the requested wait ended.

    Attributes:
        accepted: True when the mutation was durably enqueued before the
            deadline and will still be processed.
    """

    reason = "ERROR_REASON_DEADLINE_EXCEEDED"

    def __init__(self, accepted: bool, instance_id: str = "", work_item_id: str = "") -> None:
        self.accepted, self.instance_id, self.work_item_id = accepted, instance_id, work_item_id
        metadata = {"accepted": "true" if accepted else "false"}
        if accepted:
            metadata |= {"instanceId": instance_id, "workItemId": work_item_id}
            message = (
                f"deadline exceeded; work item {work_item_id!r} of instance {instance_id!r} "
                "was accepted and will still be processed"
            )
        else:
            message = "deadline exceeded before the request was accepted"
        super().__init__(message, metadata)


class UnauthenticatedError(FlouError):
    """The server requires a bearer token and the call carried none, or an unknown one."""

    reason = "ERROR_REASON_UNAUTHENTICATED"

    def __init__(self) -> None:
        super().__init__("a valid bearer token is required")


# --- UNAVAILABLE ------------------------------------------------------------------------


class UnavailableError(FlouError):
    """The service cannot answer now; retry with backoff, safely with a request_id."""

    retry_delay_seconds: ClassVar[float] = 1.0
    """The delay suggested to clients in `google.rpc.RetryInfo`."""


class ShuttingDownError(UnavailableError):
    """The server is shutting down; reconnect, to another replica, and resume."""

    reason = "ERROR_REASON_SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("the server is shutting down; reconnect and resume")


class StoreUnavailableError(UnavailableError):
    """The database could not be reached within the deadline, after retries."""

    reason = "ERROR_REASON_STORE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the database is unavailable; retry later")


# --- INTERNAL ---------------------------------------------------------------------------


class InternalError(FlouError):
    """An unexpected server error. Its details stay in the server's log."""

    reason = "ERROR_REASON_INTERNAL"

    def __init__(self) -> None:
        super().__init__("internal error")


# --- declarations ---------------------------------------------------------------------


class InvalidDefinitionError(FlouError):
    """A machine's declaration is wrong; raised when its class is created or registered.

    Not an error of a request: it never reaches a client as such (the server
    refuses to start with a bad machine; met at run time, it is INTERNAL).

    Attributes:
        cls: The class whose declaration is wrong.
        problem: What is wrong with it.
    """

    def __init__(self, cls: type, problem: str) -> None:
        self.cls, self.problem = cls, problem
        super().__init__(f"{cls.__module__}.{cls.__qualname__}: {problem}")
