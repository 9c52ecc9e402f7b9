"""Health checking around start and stop, and bearer-token authentication, on real servers."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.service.server import FLOU_SERVICE_NAME, Server

T = 5
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def check(channel, service: str = "", **kwargs) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    kwargs.setdefault("timeout", T)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), **kwargs)
    return response.status


async def poll(channel) -> str:
    """The health of FlouService, or "down" when nothing answers."""
    try:
        status = await check(channel, FLOU_SERVICE_NAME, timeout=0.5)
    except grpc.aio.AioRpcError as error:
        if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        return "down"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


# --- health -------------------------------------------------------------------------------


async def test_health_serves_both_names_once_started(api):
    assert FLOU_SERVICE_NAME == "flou.v1.FlouService"
    async with grpc.aio.insecure_channel(api.target) as channel:
        assert await check(channel, "") == SERVING
        assert await check(channel, FLOU_SERVICE_NAME) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(channel, "no.such.Service")
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_health_is_serving_only_once_the_service_answers(sqlite_url):
    """Polled while a server starts (its runtime opens and migrates the database in a
    thread): nothing answers, then SERVING, and the first SERVING already comes with a
    working FlouService."""
    port = free_port()
    server = Server(
        Settings(
            port=port, database_url=sqlite_url, app=("tests.ltms.flat",), shutdown_grace_seconds=0
        )
    )
    starting = asyncio.create_task(server.start())
    seen: list[str] = []
    fast_reconnect = [
        ("grpc.initial_reconnect_backoff_ms", 5),
        ("grpc.min_reconnect_backoff_ms", 5),
        ("grpc.max_reconnect_backoff_ms", 20),
    ]
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=fast_reconnect
        ) as channel:
            stub = flou_service_pb2_grpc.FlouServiceStub(channel)
            while True:
                status = await poll(channel)
                seen.append(status)
                if status == "SERVING":
                    machines = await stub.ListMachines(pb.ListMachinesRequest(), timeout=T)
                    assert "linear" in [m.name for m in machines.machines]
                    break
                await asyncio.sleep(0.002)
            assert await starting == port
            assert seen[0] == "down", seen  # polled before the server served
            assert seen[-1] == "SERVING"
            assert set(seen[:-1]) <= {"down", "NOT_SERVING"}
    finally:
        await starting
        await server.stop(grace=0)


async def test_a_server_whose_database_is_unusable_never_serves(tmp_path):
    port = free_port()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = Server(
        Settings(port=port, database_url=f"sqlite:///{blocker}/flou.db", shutdown_grace_seconds=0)
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 (the store's own error)
        await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_stop_turns_both_names_not_serving(api):
    async with grpc.aio.insecure_channel(api.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = {
            name: stub.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in ("", FLOU_SERVICE_NAME)
        }
        for watch in watches.values():
            assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(api.stop(grace=0.2))
        for watch in watches.values():
            assert (await asyncio.wait_for(watch.read(), T)).status == NOT_SERVING
        await stopping


# --- auth ---------------------------------------------------------------------------------

TOKEN = (("authorization", "Bearer s3cret"),)


@pytest.fixture
async def secured(start_server):
    server = await start_server(auth_tokens=("s3cret", "other-token"))
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield channel


async def test_a_call_without_a_token_is_unauthenticated(secured, fails):
    stub = flou_service_pb2_grpc.FlouServiceStub(secured)
    error = await fails(stub.ListMachines(pb.ListMachinesRequest(), timeout=T))
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "ERROR_REASON_UNAUTHENTICATED"
    assert error.metadata == {}


async def test_a_call_with_a_known_bearer_token_works(secured):
    stub = flou_service_pb2_grpc.FlouServiceStub(secured)
    response = await stub.ListMachines(pb.ListMachinesRequest(), metadata=TOKEN, timeout=T)
    assert "linear" in [m.name for m in response.machines]
    other = await stub.ListMachines(
        pb.ListMachinesRequest(), metadata=(("authorization", "bearer other-token"),), timeout=T
    )
    assert other.machines == response.machines
    started = await stub.Start(
        pb.StartRequest(machine="linear", instance_id="auth-1", wait=pb.WAIT_MODE_SETTLED),
        metadata=TOKEN,
        timeout=T,
    )
    assert started.instance.id == "auth-1"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "],
)
async def test_a_wrong_token_is_refused(secured, fails, authorization):
    stub = flou_service_pb2_grpc.FlouServiceStub(secured)
    error = await fails(
        stub.Start(
            pb.StartRequest(machine="linear", instance_id="never"),
            metadata=(("authorization", authorization),),
            timeout=T,
        )
    )
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "ERROR_REASON_UNAUTHENTICATED"
    # The refused call ran nothing.
    listed = await stub.ListInstances(pb.ListInstancesRequest(), metadata=TOKEN, timeout=T)
    assert not listed.instances


async def test_a_watch_without_a_token_is_unauthenticated(secured, rich):
    stub = flou_service_pb2_grpc.FlouServiceStub(secured)
    await stub.Start(pb.StartRequest(machine="linear", instance_id="w"), metadata=TOKEN)
    call = stub.Watch(pb.WatchRequest(instance_id="w"), timeout=T)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    error = rich(caught.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ERROR_REASON_UNAUTHENTICATED",
    )
    watched = stub.Watch(pb.WatchRequest(instance_id="w"), metadata=TOKEN, timeout=T)
    assert (await watched.read()).snapshot.id == "w"
    watched.cancel()


async def test_health_needs_no_token_but_reflection_does(secured):
    assert await check(secured) == SERVING
    assert await check(secured, FLOU_SERVICE_NAME) == SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(secured)

    async def list_services(metadata=()):
        call = reflection.ServerReflectionInfo(metadata=metadata, timeout=T)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        return [response async for response in call]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_services()
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    [answer] = await list_services(TOKEN)
    assert FLOU_SERVICE_NAME in {s.name for s in answer.list_services_response.service}
