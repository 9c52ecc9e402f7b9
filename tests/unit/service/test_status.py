"""The error table: domain errors become rich gRPC statuses, anything else a bare INTERNAL."""

from __future__ import annotations

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
import pytest

from flou_grpc import errors
from flou_grpc.service import status


def _details(proto):
    found = {}
    for any_detail in proto.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
        ):
            if any_detail.Is(cls.DESCRIPTOR):
                detail = cls()
                any_detail.Unpack(detail)
                assert cls.__name__ not in found, "each detail type at most once"
                found[cls.__name__] = detail
    assert len(found) == len(proto.details), "only known detail types"
    return found


def test_not_found_carries_error_info_and_resource_info():
    proto = status.to_status_proto(errors.InstanceNotFoundError("order-7"))
    assert proto.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert proto.message == "instance 'order-7' not found"
    details = _details(proto)
    info = details["ErrorInfo"]
    assert (info.reason, info.domain) == ("ERROR_REASON_INSTANCE_NOT_FOUND", "flou.v1")
    assert dict(info.metadata) == {"instanceId": "order-7"}
    resource = details["ResourceInfo"]
    assert (resource.resource_type, resource.resource_name) == ("flou.v1.Instance", "order-7")


def test_invalid_field_lists_every_violation_in_bad_request():
    error = errors.InvalidFieldError(
        [
            errors.FieldViolation("label", "must match ^[a-z][a-z0-9_]*$"),
            errors.FieldViolation("params[1].id", "must match [A-Za-z0-9_-]+"),
        ]
    )
    proto = status.to_status_proto(error)
    assert proto.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    details = _details(proto)
    assert dict(details["ErrorInfo"].metadata) == {
        "field": "label",
        "description": "must match ^[a-z][a-z0-9_]*$",
    }
    assert [(v.field, v.description) for v in details["BadRequest"].field_violations] == [
        ("label", "must match ^[a-z][a-z0-9_]*$"),
        ("params[1].id", "must match [A-Za-z0-9_-]+"),
    ]


def test_invalid_field_needs_a_violation():
    with pytest.raises(ValueError, match="at least one violation"):
        errors.InvalidFieldError([])


@pytest.mark.parametrize(
    ("error", "field"),
    [
        (errors.MissingParamError("params[0]", "id", "worker_{id}"), "params[0]"),
        (errors.LimitExceededError("payload", "FLOU_MAX_JSON_DEPTH", 32, 40), "payload"),
        (errors.RequestIdReusedError("r-1"), "request_id"),
    ],
)
def test_every_invalid_argument_names_its_field(error, field):
    details = _details(status.to_status_proto(error))
    assert [v.field for v in details["BadRequest"].field_violations] == [field]


def test_unavailable_suggests_a_retry_delay():
    proto = status.to_status_proto(errors.ShuttingDownError())
    assert proto.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert _details(proto)["RetryInfo"].retry_delay.ToNanoseconds() == 1_000_000_000


def test_failed_precondition_has_only_error_info():
    error = errors.TransitionNotAllowedError("i1", "go", "root", ["root.a", "root.b"])
    proto = status.to_status_proto(error)
    assert proto.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    details = _details(proto)
    assert list(details) == ["ErrorInfo"]
    assert details["ErrorInfo"].metadata["activeStates"] == "root.a,root.b"


@pytest.mark.parametrize(
    "error",
    [ValueError("password=hunter2"), KeyError("secret"), errors.FlouError("category only")],
)
def test_unexpected_errors_become_internal_without_leaking(error):
    proto = status.to_status_proto(error)
    assert proto.code == grpc.StatusCode.INTERNAL.value[0]
    assert proto.message == "internal error"
    assert "hunter2" not in str(proto)
    assert "secret" not in str(proto)
    info = _details(proto)["ErrorInfo"]
    assert (info.reason, dict(info.metadata)) == ("ERROR_REASON_INTERNAL", {})


def test_grpc_status_round_trips_through_the_status_trailer():
    grpc_status = status.to_grpc_status(errors.RevisionConflictError("i1", 3, 5))
    assert grpc_status.code is grpc.StatusCode.ABORTED
    assert grpc_status.details == "instance 'i1' is at revision 5, not the expected 3"
    ((key, value),) = grpc_status.trailing_metadata
    assert key == "grpc-status-details-bin"
    proto = status.status_pb2.Status.FromString(value)
    assert _details(proto)["ErrorInfo"].metadata["expectedRevision"] == "3"
