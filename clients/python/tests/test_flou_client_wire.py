"""JSON to Struct and back, and messages to dataclasses."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from flou_client import EventKind, InstanceStatus, as_json, wire
from flou_client_gen.flou.v1 import flou_service_pb2, instance_pb2


def test_json_round_trips_with_integral_numbers_as_ints():
    value = {"a": 1, "b": [1.5, -2, None, True, "x", {"c": []}], "big": 2.0**60, "d": {}}
    back = wire.from_struct(wire.to_struct(value))
    assert back == value
    assert type(back["a"]) is int
    assert type(back["big"]) is float  # beyond 2^53 ints are not exact: left a float


@pytest.mark.parametrize(
    ("value", "error", "where"),
    [
        ({"a": {1, 2}}, TypeError, "payload.a"),
        ({"a": [object()]}, TypeError, r"payload.a\[0\]"),
        ({1: "x"}, TypeError, "key 1"),
        ({"n": math.nan}, ValueError, "payload.n"),
        ({"n": math.inf}, ValueError, "payload.n"),
    ],
)
def test_values_that_are_not_json_are_refused_naming_where(value, error, where):
    with pytest.raises(error, match=where):
        wire.to_struct(value, "payload")


def test_instance_message_becomes_a_dataclass_with_unknown_enums_unspecified():
    message = instance_pb2.Instance(
        id="i",
        machine="m",
        revision=4,
        status=instance_pb2.INSTANCE_STATUS_WAITING,
        active_states=["m", "m.a"],
        pending_work_count=2,
    )
    message.state.CopyFrom(wire.to_struct({"_status": "active", "n": 3}))
    message.update_time.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    instance = wire.instance(message)
    assert instance.status is InstanceStatus.WAITING
    assert instance.state == {"_status": "active", "n": 3}
    assert instance.active_states == ("m", "m.a")
    assert instance.update_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert instance.create_time is None
    basic = wire.instance(instance_pb2.Instance(id="i", status=99))
    assert basic.state is None  # BASIC view: no state at all, not an empty one
    assert basic.status is InstanceStatus.UNSPECIFIED


def test_event_with_rejection_and_patch():
    message = instance_pb2.Event(
        instance_id="i",
        revision=7,
        kind=instance_pb2.EVENT_KIND_REJECTED,
        rejection=instance_pb2.Rejection(reason=9, message="no", metadata={"label": "go"}),
    )
    message.patch.CopyFrom(wire.to_list([{"op": "replace", "path": "/a", "value": 1}]))
    event = wire.event(message)
    assert event.kind is EventKind.REJECTED
    assert event.rejection is not None
    assert event.rejection.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert event.patch == [{"op": "replace", "path": "/a", "value": 1}]
    assert event.error is None


def test_as_json_of_results():
    heartbeat = wire.heartbeat(flou_service_pb2.Heartbeat(revision=3))
    assert as_json(heartbeat) == {"revision": 3, "time": None}
    instance = wire.instance(instance_pb2.Instance(id="i", status=1))
    assert as_json(instance)["status"] == "running"
    assert as_json({"xs": (instance.status,)}) == {"xs": ["running"]}
    with pytest.raises(TypeError):
        as_json(object())
