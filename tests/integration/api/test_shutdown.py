"""Graceful shutdown lets a step in progress commit, and gives its lease back."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import grpc

from flou_grpc import LTM, AsyncRuntime
from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.service.server import Server


class Slowly(LTM):
    name = "slowly"

    def run(self, **payload):
        # The server imports this module under its own name: a file tells the test.
        Path(os.environ["FLOU_TEST_RUNNING"]).touch()
        threading.Event().wait(1.5)  # longer than a close without grace waits
        self.root.update_state({"done": True})


class Lasting(LTM):
    name = "lasting"
    init = [Slowly]

    def get_initial_state(self):
        return {"done": False}


async def test_sigterm_lets_the_running_step_commit_then_releases_its_lease(
    sqlite_url, tmp_path, monkeypatch
):
    running = tmp_path / "running"
    monkeypatch.setenv("FLOU_TEST_RUNNING", str(running))
    settings = Settings(
        port=0,
        database_url=sqlite_url,
        app=("tests.integration.api.test_shutdown",),
        shutdown_grace_seconds=5,
    )
    server = Server(settings)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = flou_service_pb2_grpc.FlouServiceStub(channel)
        await stub.Start(pb.StartRequest(machine="lasting", instance_id="l"), timeout=5)
    for _ in range(500):
        if running.exists():
            break
        await asyncio.sleep(0.01)
    assert running.exists()

    await server.stop()

    async with AsyncRuntime(sqlite_url, machines=[Lasting]) as reopened:
        instance = await reopened.get("l")
        assert instance.state["done"] is True  # the step in progress committed
        assert instance.pending_work_count == 0
        from sqlalchemy import select

        from flou_grpc.store.schema import instances

        with reopened.store.engine.connect() as conn:  # type: ignore[attr-defined]
            owner = conn.execute(
                select(instances.c.lease_owner).where(instances.c.id == "l")
            ).scalar_one()
        assert owner == ""  # given back, not left to expire
