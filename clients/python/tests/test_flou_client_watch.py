"""The watch cursor: one snapshot, every event once, resumed from the last revision."""

from __future__ import annotations

import grpc
import pytest
from flou_client import Event, FlouError, Heartbeat, Instance, UnavailableError, WatchGapError
from flou_client.watch import WatchCursor, stream_ended
from flou_client_gen.flou.v1 import flou_service_pb2, instance_pb2


def snapshot(revision):
    return flou_service_pb2.WatchResponse(
        snapshot=instance_pb2.Instance(id="i", revision=revision)
    )


def event(revision):
    return flou_service_pb2.WatchResponse(
        event=instance_pb2.Event(instance_id="i", revision=revision)
    )


def heartbeat(revision):
    return flou_service_pb2.WatchResponse(heartbeat=flou_service_pb2.Heartbeat(revision=revision))


def test_first_stream_starts_where_asked_then_resumes_from_the_last_delivered_revision():
    cursor = WatchCursor("i", from_revision=2, heartbeat_interval=0.5)
    first = cursor.request()
    assert (first.instance_id, first.from_revision) == ("i", 2)
    assert first.heartbeat_interval.ToMilliseconds() == 500
    delivered = [cursor.accept(m) for m in (snapshot(2), event(3), heartbeat(3), event(4))]
    assert [type(d) for d in delivered] == [Instance, Event, Heartbeat, Event]
    assert cursor.last_revision == 4
    # The stream broke: the next one starts at 4, its snapshot is not delivered again,
    # nor is any event already delivered.
    assert cursor.request().from_revision == 4
    assert cursor.accept(snapshot(4)) is None
    assert cursor.accept(event(4)) is None
    fifth = cursor.accept(event(5))
    assert isinstance(fifth, Event)
    assert fifth.revision == 5
    assert cursor.streams == 2


def test_a_stream_broken_before_its_snapshot_starts_over_from_the_same_revision():
    cursor = WatchCursor("i")
    assert cursor.request().from_revision == 0
    assert cursor.request().from_revision == 0
    assert isinstance(cursor.accept(snapshot(9)), Instance)
    assert cursor.request().from_revision == 9


@pytest.mark.parametrize("gap", [event(7), snapshot(7)])
def test_a_gap_is_an_error_never_silence(gap):
    cursor = WatchCursor("i")
    cursor.accept(snapshot(5))
    with pytest.raises(WatchGapError, match="from revision 5 to 7") as caught:
        cursor.accept(gap)
    assert caught.value.code is grpc.StatusCode.DATA_LOSS


def test_which_breaks_are_resumed():
    assert WatchCursor.resumable(UnavailableError("down"))
    assert WatchCursor.resumable(stream_ended("i"))
    slow = FlouError(
        "too slow", code=grpc.StatusCode.RESOURCE_EXHAUSTED, reason="ERROR_REASON_WATCHER_TOO_SLOW"
    )
    assert WatchCursor.resumable(slow)
    too_many = FlouError(
        "full", code=grpc.StatusCode.RESOURCE_EXHAUSTED, reason="ERROR_REASON_TOO_MANY_WATCHERS"
    )
    assert not WatchCursor.resumable(too_many)
    assert not WatchCursor.resumable(FlouError("gone", code=grpc.StatusCode.NOT_FOUND))
