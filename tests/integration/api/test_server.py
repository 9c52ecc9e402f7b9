"""The server process: health checking, reflection, graceful shutdown, over real sockets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flou_grpc._proto.flou.v1 import flou_service_pb2, flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.service.server import Server


@pytest.fixture
async def server(sqlite_url):
    settings = Settings(port=0, shutdown_grace_seconds=1, database_url=sqlite_url)
    async with Server(settings) as running:
        yield running


@pytest.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


async def _reflect(channel, **request):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(**request))
    await call.done_writing()
    responses = [response async for response in call]
    assert len(responses) == 1
    return responses[0]


async def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_contract_and_standard_services(channel):
    response = await _reflect(channel, list_services="")
    names = {s.name for s in response.list_services_response.service}
    assert names == {
        "flou.v1.FlouService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_reflection_serves_the_contract_descriptors(channel):
    response = await _reflect(channel, file_containing_symbol="flou.v1.FlouService")
    files = {
        f.name: f
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            response.file_descriptor_response.file_descriptor_proto,
        )
    }
    served = files["flou/v1/flou_service.proto"]
    expected = descriptor_pb2.FileDescriptorProto.FromString(
        flou_service_pb2.DESCRIPTOR.serialized_pb
    )
    assert served == expected
    assert [m.name for m in served.service[0].method] == [
        m.name for m in flou_service_pb2.DESCRIPTOR.services_by_name["FlouService"].methods
    ]


async def test_stop_turns_health_not_serving_for_watchers(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await server.stop(grace=1)
    update = await watch.read()
    assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_flou_rpcs_are_served(channel):
    stub = flou_service_pb2_grpc.FlouServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstance(flou_service_pb2.GetInstanceRequest(instance_id="x"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def _serve(env_extra: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "flou_grpc", "serve", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_process_logs_its_port_and_exits_cleanly_on_sigterm(sqlite_url):
    with _serve({"FLOU_DATABASE_URL": sqlite_url}, "--port", "0") as process:
        try:
            assert process.stderr is not None
            port = None
            for line in process.stderr:  # the log says the port once the server serves
                port = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if port:
                    break
            assert port, "the server never logged its port"
            with grpc.insecure_channel(f"127.0.0.1:{port.group(1)}") as channel:
                check = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
            assert time.monotonic() - started < 12
            rest = process.stderr.read()
            assert "stopped" in rest
            # What start-up made stays out of full collections (40-50 ms stalls otherwise).
            frozen = re.search(r"heap frozen: (\d+) objects", rest)
            assert frozen, rest
            assert int(frozen.group(1)) > 10_000
        finally:
            if process.poll() is None:
                process.kill()


def test_serve_rejects_a_bad_setting_with_usage_exit_code():
    process = _serve({"FLOU_PORT": "not-a-port"})
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "FLOU_PORT='not-a-port' is not a valid int" in stderr


def test_serve_fails_clearly_when_the_port_is_taken(server_port_in_use, sqlite_url):
    process = _serve({"FLOU_DATABASE_URL": sqlite_url}, "--port", str(server_port_in_use))
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server_port_in_use}" in stderr


@pytest.fixture
def server_port_in_use():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
