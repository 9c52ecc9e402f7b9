"""Errors: a failed call becomes the FlouError subclass of its reason, or of its code."""

from __future__ import annotations

import flou_client
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import pytest
from flou_client import errors
from google.protobuf import any_pb2, duration_pb2


class FailedCall(grpc.RpcError):
    """What grpc raises for a failed call: an RpcError that is also its Call."""

    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, tuple(trailing)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def _status(code, message, *details):
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def _failed(code, message, *details):
    status = _status(code, message, *details)
    return FailedCall(
        code, message, [("other", "x"), ("grpc-status-details-bin", status.SerializeToString())]
    )


def test_reason_selects_the_class_and_every_detail_is_kept():
    call = _failed(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid label: must match ^[a-z][a-z0-9_]*$",
        error_details_pb2.ErrorInfo(
            reason="ERROR_REASON_INVALID_FIELD",
            domain="flou.v1",
            metadata={"field": "label", "description": "must match ^[a-z][a-z0-9_]*$"},
        ),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="label", description="bad"),
                error_details_pb2.BadRequest.FieldViolation(field="params[1].id", description="x"),
            ]
        ),
    )
    error = errors.from_rpc_error(call)
    assert type(error) is flou_client.InvalidFieldError
    assert isinstance(error, flou_client.InvalidArgumentError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.domain == "flou.v1"
    assert error.metadata == {"field": "label", "description": "must match ^[a-z][a-z0-9_]*$"}
    assert error.field_violations == (
        flou_client.FieldViolation("label", "bad"),
        flou_client.FieldViolation("params[1].id", "x"),
    )
    assert error.message == "invalid label: must match ^[a-z][a-z0-9_]*$"


def test_not_found_carries_its_resource_and_reads_in_one_line():
    call = _failed(
        grpc.StatusCode.NOT_FOUND,
        "instance 'o-1' not found",
        error_details_pb2.ErrorInfo(
            reason="ERROR_REASON_INSTANCE_NOT_FOUND",
            domain="flou.v1",
            metadata={"instanceId": "o-1"},
        ),
        error_details_pb2.ResourceInfo(
            resource_type="flou.v1.Instance", resource_name="o-1", description="gone"
        ),
    )
    error = errors.from_rpc_error(call)
    assert type(error) is flou_client.InstanceNotFoundError
    assert error.resource == errors.ResourceInfo("flou.v1.Instance", "o-1", "gone")
    assert str(error) == (
        "NOT_FOUND ERROR_REASON_INSTANCE_NOT_FOUND: instance 'o-1' not found (instanceId=o-1)"
    )


def test_unavailable_carries_the_servers_retry_delay():
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(1500)
    call = _failed(
        grpc.StatusCode.UNAVAILABLE,
        "shutting down",
        error_details_pb2.ErrorInfo(reason="ERROR_REASON_SHUTTING_DOWN", domain="flou.v1"),
        error_details_pb2.RetryInfo(retry_delay=delay),
    )
    error = errors.from_rpc_error(call)
    assert type(error) is flou_client.ShuttingDownError
    assert isinstance(error, flou_client.UnavailableError)
    assert error.retry_delay == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        # An unknown reason (the enum is open) falls back on its code's class.
        (grpc.StatusCode.FAILED_PRECONDITION, "ERROR_REASON_NEW_ONE", "FailedPreconditionError"),
        # A reason sent with another code than its own: the code wins.
        (grpc.StatusCode.ABORTED, "ERROR_REASON_INSTANCE_NOT_FOUND", "AbortedError"),
        (grpc.StatusCode.ABORTED, "ERROR_REASON_REVISION_CONFLICT", "RevisionConflictError"),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ERROR_REASON_TRANSITION_NOT_ALLOWED",
            "TransitionNotAllowedError",
        ),
        (grpc.StatusCode.UNAUTHENTICATED, "ERROR_REASON_UNAUTHENTICATED", "UnauthenticatedError"),
        (grpc.StatusCode.PERMISSION_DENIED, "", "PermissionDeniedError"),
        (grpc.StatusCode.UNKNOWN, "", "InternalError"),
        (grpc.StatusCode.UNIMPLEMENTED, "", "FlouError"),
    ],
)
def test_error_class_by_reason_then_by_code(code, reason, expected):
    assert errors.error_class(code, reason).__name__ == expected


def test_an_error_without_details_keeps_its_code_and_an_empty_reason():
    error = errors.from_rpc_error(
        FailedCall(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    )
    assert type(error) is flou_client.DeadlineExceededError
    assert error.reason == ""
    assert error.metadata == {}
    assert not error.accepted
    assert str(error) == "DEADLINE_EXCEEDED: Deadline Exceeded"


def test_server_side_deadline_says_whether_the_work_was_accepted():
    call = _failed(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "deadline exceeded; work item 'w' was accepted",
        error_details_pb2.ErrorInfo(
            reason="ERROR_REASON_DEADLINE_EXCEEDED",
            domain="flou.v1",
            metadata={"accepted": "true", "instanceId": "i", "workItemId": "w"},
        ),
    )
    error = errors.from_rpc_error(call)
    assert isinstance(error, flou_client.DeadlineExceededError)
    assert error.accepted


def test_garbage_in_the_details_trailer_is_ignored():
    call = FailedCall(
        grpc.StatusCode.INTERNAL, "boom", [("grpc-status-details-bin", b"\xff\xff not a status")]
    )
    error = errors.from_rpc_error(call)
    assert type(error) is flou_client.InternalError
    assert (error.message, error.reason) == ("boom", "")


def test_every_reason_class_is_exported_and_has_its_codes_parent():
    for reason, cls in errors._BY_REASON.items():
        assert reason.startswith("ERROR_REASON_")
        assert getattr(flou_client, cls.__name__) is cls
        assert errors.error_class(cls.default_code, reason) is cls
