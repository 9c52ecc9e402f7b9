"""The container's health probe against a real server, and against none."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

from flou_grpc.config import Settings
from flou_grpc.service.server import Server


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flou_grpc.service.probe", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_probe_passes_while_the_server_serves_and_fails_once_it_stopped(sqlite_url):
    server = Server(Settings(port=0, database_url=sqlite_url, shutdown_grace_seconds=1))
    await server.start()
    address = f"127.0.0.1:{server.port}"
    try:
        serving = await asyncio.to_thread(_probe, "--address", address)
        flou = await asyncio.to_thread(
            _probe, "--address", address, "--service", "flou.v1.FlouService"
        )
    finally:
        await server.stop()
    stopped = await asyncio.to_thread(_probe, "--address", address, "--timeout", "1")

    assert (serving.returncode, serving.stderr) == (0, "")
    assert flou.returncode == 0
    assert stopped.returncode == 1
    assert stopped.stderr.startswith(f"unhealthy: {address}: ")


def test_the_probe_reads_the_port_from_flou_port():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "flou_grpc.service.probe", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"FLOU_PORT": str(port), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
