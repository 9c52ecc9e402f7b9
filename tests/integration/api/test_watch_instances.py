"""WatchInstances: the live feed of every instance's events, for dashboards."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.service.server import Server

HEARTBEAT = duration_pb2.Duration(nanos=100_000_000)


@pytest.fixture
async def feed_server(sqlite_url):
    settings = Settings(
        port=0,
        shutdown_grace_seconds=1,
        database_url=sqlite_url,
        app=("tests.ltms.flat", "examples.crawl"),
    )
    async with Server(settings) as running:
        yield running


@pytest.fixture
async def stub(feed_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{feed_server.port}") as channel:
        yield flou_service_pb2_grpc.FlouServiceStub(channel)


async def _collect(call, until):
    """Events of a feed until `until(events)` holds (heartbeats skipped)."""
    events = []
    async with asyncio.timeout(10):
        async for message in call:
            if message.HasField("event"):
                events.append(message.event)
                if until(events):
                    return events
    raise AssertionError("the feed ended")


async def _started(call) -> None:
    """Waits for the first heartbeat: the feed is listening from then on."""
    async with asyncio.timeout(5):
        async for message in call:
            assert message.HasField("heartbeat")
            assert message.heartbeat.revision == 0
            return


async def test_the_feed_carries_every_event_of_every_instance_in_revision_order(stub):
    call = stub.WatchInstances(pb.WatchInstancesRequest(heartbeat_interval=HEARTBEAT))
    await _started(call)
    for n in range(3):
        await stub.Start(
            pb.StartRequest(
                machine="crawl", instance_id=f"c{n}", payload={"pages": ["a", "b"]}, wait=3
            )
        )
    currents = {
        f"c{n}": (await stub.GetInstance(pb.GetInstanceRequest(instance_id=f"c{n}"))).instance
        for n in range(3)
    }
    total = sum(i.revision for i in currents.values())

    events = await _collect(call, lambda got: len(got) >= total)
    call.cancel()

    for instance_id, instance in currents.items():
        revisions = [e.revision for e in events if e.instance_id == instance_id]
        assert revisions == list(range(1, instance.revision + 1))  # no gap, no duplicate


async def test_a_machine_filter_leaves_other_machines_out(stub):
    call = stub.WatchInstances(
        pb.WatchInstancesRequest(machine="crawl", heartbeat_interval=HEARTBEAT)
    )
    await _started(call)
    await stub.Start(pb.StartRequest(machine="linear", instance_id="f", wait=3))
    await stub.Start(
        pb.StartRequest(machine="crawl", instance_id="c", payload={"pages": ["a"]}, wait=3)
    )
    current = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="c"))).instance.revision

    events = await _collect(call, lambda got: len(got) >= current)
    call.cancel()

    assert {e.instance_id for e in events} == {"c"}


async def test_an_unknown_machine_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.WatchInstances(pb.WatchInstancesRequest(machine="nope")):
            pass
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert "MACHINE_NOT_FOUND" in str(status.details[0].value)


async def test_shutdown_ends_the_feed_unavailable(feed_server, stub):
    call = stub.WatchInstances(pb.WatchInstancesRequest(heartbeat_interval=HEARTBEAT))
    await _started(call)
    stopping = asyncio.create_task(feed_server.stop(grace=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    await stopping
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
