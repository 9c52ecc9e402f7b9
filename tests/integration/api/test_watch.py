"""Watch over a real server: snapshot, ordered events with patches, resuming, heartbeats,
the per-instance watcher limit, slow consumers, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2
from grpc_status import rpc_status

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc, instance_pb2
from flou_grpc.config import Limits

T = 5


def plain(message: Any) -> Any:
    return json_format.MessageToDict(message)


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def apply_patch(document: Any, patch: list[dict[str, Any]]) -> Any:
    """Add/replace/remove on object keys and list ends: what the server's patches use."""
    document = copy.deepcopy(document)
    for op in patch:
        if op["path"] == "":
            document = copy.deepcopy(op["value"])
            continue
        parts = op["path"].split("/")[1:]
        holder = document
        for part in parts[:-1]:
            holder = holder[int(part)] if isinstance(holder, list) else holder[part]
        last = parts[-1]
        if op["op"] == "remove":
            del holder[int(last) if isinstance(holder, list) else last]
        elif isinstance(holder, list):
            if last == "-" or int(last) == len(holder):
                holder.append(copy.deepcopy(op["value"]))
            else:
                holder[int(last)] = copy.deepcopy(op["value"])
        else:
            holder[last] = copy.deepcopy(op["value"])
    return document


async def read(call, timeout: float = T) -> pb.WatchResponse:
    message = await asyncio.wait_for(call.read(), timeout)
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def next_event(call, timeout: float = T) -> instance_pb2.Event:
    """The next event of a stream, skipping heartbeats."""
    while True:
        message = await read(call, timeout)
        kind = message.WhichOneof("kind")
        assert kind != "snapshot", "a second snapshot"
        if kind == "event":
            return message.event


async def skip_heartbeats(call, timeout: float = T) -> pb.WatchResponse:
    """The next message of a stream that is not a heartbeat."""
    async with asyncio.timeout(timeout):
        while True:
            message = await call.read()
            if message is grpc.aio.EOF or message.WhichOneof("kind") != "heartbeat":
                return message


async def failure(call, rich, timeout: float = T) -> tuple[list[pb.WatchResponse], Any]:
    """Reads a stream to its error: the messages received before it, and the error."""
    received = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await call.read()
                assert message is not grpc.aio.EOF, "the stream ended without an error"
                received.append(message)
    except grpc.aio.AioRpcError as error:
        return received, rich(error)
    raise AssertionError("unreachable")


async def start(stub, machine: str, instance_id: str) -> instance_pb2.Instance:
    response = await stub.Start(
        pb.StartRequest(machine=machine, instance_id=instance_id, wait=pb.WAIT_MODE_SETTLED),
        timeout=T,
    )
    return response.instance


async def again(stub, instance_id: str, n: int) -> None:
    await stub.Transition(
        pb.TransitionRequest(
            instance_id=instance_id,
            label="again",
            payload=json_format.ParseDict({"n": n}, struct_pb2.Struct()),
            wait=pb.WAIT_MODE_SETTLED,
        ),
        timeout=T,
    )


async def slots_free(api, expected: int = 0, timeout: float = 1.0) -> float:
    """Seconds until the server counts `expected` open watchers (fails after `timeout`)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while api.server.servicer.watchers.count != expected:
        assert loop.time() - began < timeout, f"{api.server.servicer.watchers.count} still open"
        await asyncio.sleep(0.005)
    return loop.time() - began


async def test_snapshot_then_every_event_in_order_with_patches(api, stub):
    instance = await start(stub, "self_loop", "w-1")
    call = stub.Watch(pb.WatchRequest(instance_id="w-1"))
    first = await read(call)
    assert first.WhichOneof("kind") == "snapshot"
    snapshot = first.snapshot
    assert snapshot.revision == instance.revision == 3
    assert plain(snapshot.state) == plain(instance.state)  # the full view

    for n in range(3):
        await again(stub, "w-1", n)
    document = plain(snapshot.state)
    revisions = []
    while len(revisions) < 6:
        event = await next_event(call)
        revisions.append(event.revision)
        document = apply_patch(document, plain(event.patch))
        assert event.instance_id == "w-1"
    assert revisions == list(range(4, 10))  # no gap, no duplicate
    final = await stub.GetInstance(pb.GetInstanceRequest(instance_id="w-1"), timeout=T)
    assert document == plain(final.instance.state)
    assert final.instance.revision == 9
    call.cancel()


async def test_events_carry_kinds_fired_transitions_and_request_ids(stub):
    await start(stub, "linear", "w-kinds")
    call = stub.Watch(pb.WatchRequest(instance_id="w-kinds"))
    await read(call)
    await stub.Transition(
        pb.TransitionRequest(instance_id="w-kinds", label="go", request_id="rq-1"), timeout=T
    )
    transitioned = await next_event(call)
    assert transitioned.kind == instance_pb2.EVENT_KIND_TRANSITIONED
    assert transitioned.request_id == "rq-1"
    assert [(f.label, list(f.targets)) for f in transitioned.fired] == [("go", ["linear.b"])]
    executed = await next_event(call)
    assert executed.kind == instance_pb2.EVENT_KIND_EXECUTED
    assert plain(executed.item)["fqn"] == "linear.b"
    call.cancel()


async def test_resume_from_a_kept_revision_has_no_gap_and_no_duplicate(stub):
    await start(stub, "self_loop", "w-2")
    for n in range(2):
        await again(stub, "w-2", n)  # revisions 4..7
    history = await stub.GetHistory(pb.GetHistoryRequest(instance_id="w-2"), timeout=T)
    at_five: Any = {}
    for event in history.events[:5]:
        at_five = apply_patch(at_five, plain(event.patch))

    call = stub.Watch(pb.WatchRequest(instance_id="w-2", from_revision=5))
    first = await read(call)
    assert first.snapshot.revision == 5
    assert plain(first.snapshot.state) == at_five  # the state at revision 5, not the current
    assert [(await next_event(call)).revision for _ in range(2)] == [6, 7]
    await again(stub, "w-2", 9)
    assert [(await next_event(call)).revision for _ in range(2)] == [8, 9]
    call.cancel()


async def test_resume_from_the_first_revision(stub):
    await start(stub, "linear", "w-first")
    call = stub.Watch(pb.WatchRequest(instance_id="w-first", from_revision=1))
    first = await read(call)
    assert first.snapshot.revision == 1
    assert [(await next_event(call)).revision for _ in range(2)] == [2, 3]
    call.cancel()


async def test_from_revision_beyond_current_is_out_of_range(stub, rich):
    await start(stub, "linear", "w-3")
    call = stub.Watch(pb.WatchRequest(instance_id="w-3", from_revision=4))
    received, error = await failure(call, rich)
    assert not received
    assert error.code is grpc.StatusCode.OUT_OF_RANGE
    assert error.reason == "ERROR_REASON_REVISION_OUT_OF_RANGE"
    assert error.metadata == {
        "instanceId": "w-3",
        "revision": "4",
        "oldestRevision": "1",
        "currentRevision": "3",
    }


async def test_watch_request_errors(stub, rich):
    await start(stub, "linear", "w-4")
    for request, code, reason in [
        (
            pb.WatchRequest(instance_id="ghost"),
            grpc.StatusCode.NOT_FOUND,
            "ERROR_REASON_INSTANCE_NOT_FOUND",
        ),
        (pb.WatchRequest(), grpc.StatusCode.INVALID_ARGUMENT, "ERROR_REASON_INVALID_FIELD"),
        (
            pb.WatchRequest(instance_id="w-4", from_revision=-3),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_FIELD",
        ),
    ]:
        received, error = await failure(stub.Watch(request), rich)
        assert not received
        assert (error.code, error.reason) == (code, reason)


async def test_heartbeats_while_idle(stub):
    instance = await start(stub, "linear", "w-5")
    interval = duration_pb2.Duration(nanos=100_000_000)
    call = stub.Watch(pb.WatchRequest(instance_id="w-5", heartbeat_interval=interval))
    await read(call)
    loop = asyncio.get_running_loop()
    began = loop.time()
    beats = [await read(call, timeout=1) for _ in range(3)]
    elapsed = loop.time() - began
    assert all(b.WhichOneof("kind") == "heartbeat" for b in beats)
    assert all(b.heartbeat.revision == instance.revision for b in beats)
    assert all(b.heartbeat.time.seconds > 0 for b in beats)
    assert 0.2 <= elapsed < 1.0  # three beats, about 0.1 s apart
    # After an event, the heartbeat names the new revision.
    await stub.UpdateState(
        pb.UpdateStateRequest(instance_id="w-5", updates={"k": value(1)}), timeout=T
    )
    assert (await next_event(call)).revision == instance.revision + 1
    beat = await read(call, timeout=1)
    assert beat.heartbeat.revision == instance.revision + 1
    call.cancel()


async def test_heartbeats_use_the_server_default_when_unset(stub):
    await start(stub, "linear", "w-6")
    call = stub.Watch(pb.WatchRequest(instance_id="w-6"))  # the api server's default: 0.1 s
    await read(call)
    beat = await read(call, timeout=1)
    assert beat.WhichOneof("kind") == "heartbeat"
    call.cancel()


async def test_too_many_watchers_per_instance(api, stub, rich):
    assert api.settings.limits.max_watchers_per_instance == 2
    await start(stub, "linear", "w-7")
    await start(stub, "linear", "w-7b")
    watchers = [stub.Watch(pb.WatchRequest(instance_id="w-7")) for _ in range(2)]
    for call in watchers:
        await read(call)
    received, error = await failure(stub.Watch(pb.WatchRequest(instance_id="w-7")), rich)
    assert not received
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "ERROR_REASON_TOO_MANY_WATCHERS"
    assert error.metadata == {"instanceId": "w-7", "max": "2"}
    other = stub.Watch(pb.WatchRequest(instance_id="w-7b"))  # the limit is per instance
    assert (await read(other)).snapshot.id == "w-7b"
    # The refused watcher held no slot; a cancelled one frees its own.
    watchers[0].cancel()
    await slots_free(api, expected=2)
    replacement = stub.Watch(pb.WatchRequest(instance_id="w-7"))
    assert (await read(replacement)).snapshot.id == "w-7"
    for call in (watchers[1], other, replacement):
        call.cancel()
    await slots_free(api)


async def test_cancelled_watch_frees_its_slot_at_once(api, stub):
    await start(stub, "linear", "w-8")
    calls = [stub.Watch(pb.WatchRequest(instance_id="w-8")) for _ in range(2)]
    for call in calls:
        await read(call)
    assert api.server.servicer.watchers.count == 2
    assert api.server.servicer.watchers.open["w-8"] == 2
    for call in calls:
        call.cancel()
    assert await slots_free(api) < 0.5
    assert "w-8" not in api.server.servicer.watchers.open


async def test_closed_channel_frees_the_slot(api):
    async with grpc.aio.insecure_channel(api.target) as channel:
        stub = flou_service_pb2_grpc.FlouServiceStub(channel)
        await start(stub, "linear", "w-9")
        call = stub.Watch(pb.WatchRequest(instance_id="w-9"))
        await read(call)
        assert api.server.servicer.watchers.count == 1
    assert await slots_free(api) < 0.5


async def test_shutdown_ends_open_watches_unavailable(api, stub, rich):
    await start(stub, "linear", "w-10")
    call = stub.Watch(pb.WatchRequest(instance_id="w-10"))
    await read(call)
    stopping = asyncio.create_task(api.stop(grace=1))
    received, error = await failure(call, rich)
    assert all(m.WhichOneof("kind") == "heartbeat" for m in received)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == "ERROR_REASON_SHUTTING_DOWN"
    assert "google.rpc.RetryInfo" in error.detail_types
    await stopping


async def test_retry_info_of_shutting_down_suggests_a_delay(api, stub):
    await start(stub, "linear", "w-11")
    call = stub.Watch(pb.WatchRequest(instance_id="w-11"))
    await read(call)
    stopping = asyncio.create_task(api.stop(grace=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await skip_heartbeats(call)
    await stopping
    status = rpc_status.from_call(caught.value)
    [packed] = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    retry = error_details_pb2.RetryInfo()
    packed.Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0


@pytest.fixture
def api_limits() -> Limits:
    """A tiny watch buffer and room for large updates (events too big to buffer forever)."""
    return Limits(max_payload_bytes=200_000, watch_buffer=4, max_watchers_per_instance=2)


async def test_slow_consumer_is_closed_with_its_last_revision(api, stub, rich):
    await start(stub, "lists", "w-slow")
    call = stub.Watch(pb.WatchRequest(instance_id="w-slow"))
    snapshot = (await read(call)).snapshot  # then the client stops reading
    await asyncio.sleep(0.15)  # the producer has caught up: the watcher is live
    blob = "x" * 60_000
    for n in range(120):  # ~7 MB: more than grpc's flow-control windows hold
        await stub.UpdateState(
            pb.UpdateStateRequest(instance_id="w-slow", updates={"blob": value(f"{n}{blob}")}),
            timeout=T,
        )
    received, error = await failure(call, rich)  # the client reads again
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "ERROR_REASON_WATCHER_TOO_SLOW"
    revisions = [m.event.revision for m in received if m.WhichOneof("kind") == "event"]
    assert revisions, "no event reached the client before it was closed"
    assert revisions == list(range(snapshot.revision + 1, revisions[-1] + 1))  # no gap
    assert revisions[-1] < snapshot.revision + 120  # it was closed before the end
    assert error.metadata == {
        "instanceId": "w-slow",
        "lastRevision": str(revisions[-1]),
        "maxBuffered": "4",
    }
    assert await slots_free(api) < 0.5
    # The client resumes from its last revision and gets the rest.
    resumed = stub.Watch(pb.WatchRequest(instance_id="w-slow", from_revision=revisions[-1]))
    assert (await read(resumed)).snapshot.revision == revisions[-1]
    rest = [
        (await next_event(resumed)).revision
        for _ in range(snapshot.revision + 120 - revisions[-1])
    ]
    assert rest == list(range(revisions[-1] + 1, snapshot.revision + 121))
    resumed.cancel()


async def test_a_watcher_reading_old_history_waits_for_its_client(stub):
    """Catching up on more history than the buffer holds is not `too slow`."""
    await start(stub, "lists", "w-old")
    for n in range(12):  # three times the buffer
        await stub.AtomicAppend(
            pb.AtomicAppendRequest(instance_id="w-old", key="items", value=value(n)), timeout=T
        )
    call = stub.Watch(pb.WatchRequest(instance_id="w-old", from_revision=1))
    assert (await read(call)).snapshot.revision == 1
    await asyncio.sleep(0.3)  # the client dawdles
    revisions = [(await next_event(call)).revision for _ in range(13)]
    assert revisions == list(range(2, 15))  # started, executed, then 12 appends
    call.cancel()
