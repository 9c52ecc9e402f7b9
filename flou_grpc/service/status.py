"""The one table from domain errors to gRPC statuses.

Every `FlouError` becomes a `google.rpc.Status` with the code of its category,
a short message, and exactly one `google.rpc.ErrorInfo` (its reason, the
domain `flou.v1` and its metadata), plus, where they fit, `BadRequest` field
violations (invalid input), `ResourceInfo` (a missing resource) and
`RetryInfo` (unavailable). Anything else becomes INTERNAL with a generic
message: the caller logs it, the client learns nothing of it (AIP-193).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from flou_grpc import errors

DOMAIN: Final = "flou.v1"
"""The `ErrorInfo.domain` of every error of this service."""

CODES: Final[Mapping[type[errors.FlouError], grpc.StatusCode]] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AbortedError: grpc.StatusCode.ABORTED,
    errors.OutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.InternalError: grpc.StatusCode.INTERNAL,
}
"""The status code of each category of `flou_grpc.errors`."""


def status_code(error_type: type[errors.FlouError]) -> grpc.StatusCode:
    """Returns the gRPC status code of a class of domain errors, by its category."""
    for cls in error_type.__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status_proto(error: BaseException) -> status_pb2.Status:
    """Builds the rich `google.rpc.Status` of any exception.

    Args:
        error: A `FlouError`, or anything else, which becomes INTERNAL with
            nothing of it in the status.
    """
    if not isinstance(error, errors.FlouError) or not error.reason:
        error = errors.InternalError()
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    ]
    if isinstance(error, errors.InvalidArgumentError) and error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, errors.NotFoundError):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type,
                resource_name=error.resource_name,
                description=error.message,
            )
        )
    if isinstance(error, errors.UnavailableError):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_delay_seconds * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(
        code=status_code(type(error)).value[0], message=error.message, details=packed
    )


def to_grpc_status(error: BaseException) -> grpc.Status:
    """Builds the `grpc.Status` to abort an RPC with (`context.abort_with_status`)."""
    return rpc_status.to_status(to_status_proto(error))  # type: ignore[no-any-return]
