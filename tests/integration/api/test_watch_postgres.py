"""Watch across two `flou-grpc serve` processes sharing one PostgreSQL database, and the
graceful shutdown of a serving process (SIGTERM) under an open Watch."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from tests.server_process import ServerProcess

pytestmark = pytest.mark.postgres

T = 5
ENV = {"FLOU_SHUTDOWN_GRACE": "2", "FLOU_WATCH_HEARTBEAT": "0.2"}


@pytest.fixture
def serve(postgres_url: str) -> Iterator[object]:
    """`serve(n)`: n server processes on the test's PostgreSQL database, listening."""
    started: list[ServerProcess] = []

    def start(count: int) -> list[ServerProcess]:
        for _ in range(count):
            started.append(ServerProcess(postgres_url, app=("tests.ltms.flat",), env=ENV).start())
        return started[-count:]

    yield start
    for served in started:
        served.kill()


async def test_a_watch_on_one_process_sees_what_another_commits_at_once(serve):
    a, b = serve(2)
    async with (
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        via_a = flou_service_pb2_grpc.FlouServiceStub(channel_a)
        via_b = flou_service_pb2_grpc.FlouServiceStub(channel_b)
        started = await via_a.Start(
            pb.StartRequest(machine="self_loop", instance_id="pg-1", wait=pb.WAIT_MODE_SETTLED),
            timeout=T,
        )
        assert started.instance.revision == 3

        watch = via_b.Watch(pb.WatchRequest(instance_id="pg-1"))
        first = await asyncio.wait_for(watch.read(), T)
        assert first.snapshot.revision == 3
        arrivals: dict[int, float] = {}
        loop = asyncio.get_running_loop()

        async def collect(until: int) -> None:
            while len(arrivals) < until:
                message = await watch.read()
                assert message is not grpc.aio.EOF
                if message.WhichOneof("kind") == "event":
                    revision = message.event.revision
                    assert revision not in arrivals, f"revision {revision} twice"
                    assert revision == 4 + len(arrivals), f"gap before {revision}"
                    arrivals[revision] = loop.time()

        rounds = 5
        collector = asyncio.create_task(collect(2 * rounds))
        sent: dict[int, float] = {}
        for n in range(rounds):
            sent[4 + 2 * n] = loop.time()
            # PROCESSED: the answer comes once the transition's step is committed; the
            # loop's execution is committed after it, by whichever process holds the lease.
            response = await via_a.Transition(
                pb.TransitionRequest(
                    instance_id="pg-1",
                    label="again",
                    payload=json_format.ParseDict({"n": n}, struct_pb2.Struct()),
                ),
                timeout=T,
            )
            # As it was when the call answered: the execution may already follow it.
            assert response.instance.revision in (4 + 2 * n, 5 + 2 * n)
            await asyncio.sleep(0.1)  # B's latency shows event by event
        await asyncio.wait_for(collector, T)
        watch.cancel()

    assert sorted(arrivals) == list(range(4, 4 + 2 * rounds))
    # Both events of a round reach B within a second of A being asked: notifications,
    # not the 5 s poll that is B's only other way to learn of A's commits.
    latencies = [arrivals[r + step] - at for r, at in sent.items() for step in (0, 1)]
    assert max(latencies) < 1.0, latencies


async def until_an_error(watch) -> None:
    """Reads heartbeats until the stream fails (raises its error)."""
    async with asyncio.timeout(T):
        while True:
            message = await watch.read()
            assert message is not grpc.aio.EOF
            assert message.WhichOneof("kind") == "heartbeat"


async def test_sigterm_ends_open_watches_unavailable_and_exits_zero(serve, rich):
    [served] = serve(1)
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = flou_service_pb2_grpc.FlouServiceStub(channel)
        await stub.Start(
            pb.StartRequest(machine="linear", instance_id="pg-2", wait=pb.WAIT_MODE_SETTLED),
            timeout=T,
        )
        watch = stub.Watch(pb.WatchRequest(instance_id="pg-2"))
        assert (await asyncio.wait_for(watch.read(), T)).snapshot.revision == 3
        began = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await until_an_error(watch)
        error = rich(caught.value)
        assert error.code is grpc.StatusCode.UNAVAILABLE
        assert error.reason == "ERROR_REASON_SHUTTING_DOWN"
        assert time.monotonic() - began < 2  # at once, not after the grace period
    assert await asyncio.to_thread(served.process.wait, 15) == 0
    served.kill()  # reaps the log
    assert "stopped" in "".join(served.log)
