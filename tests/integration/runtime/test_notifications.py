"""Runtimes sharing one PostgreSQL database hear each other's work and events at once.

Their polling is set to a minute, so what these tests see within a second
came through LISTEN/NOTIFY, not through a poll.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from flou_grpc import AsyncRuntime, WaitMode
from flou_grpc.runtime import Event
from tests.integration.runtime.test_runtime import Door

pytestmark = pytest.mark.postgres


async def test_a_watcher_on_another_runtime_sees_events_at_once(postgres_url):
    async with (
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as driver,
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as watcher,
    ):
        door = await driver.start("door", wait=WaitMode.SETTLED)
        stream = watcher.watch(door.id)
        snapshot = await anext(stream)
        assert snapshot.revision == door.revision
        started = time.monotonic()
        await driver.transition(door.id, "work", {"job": "j"})
        event = await asyncio.wait_for(anext(stream), timeout=5)
        assert isinstance(event, Event)
        assert event.revision == door.revision + 1
        assert time.monotonic() - started < 1.0
        await stream.aclose()


async def test_work_enqueued_by_another_runtime_is_claimed_at_once(postgres_url):
    async with (
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as worker,
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60, max_workers=0) as client,
    ):
        door = await worker.start("door", wait=WaitMode.SETTLED)
        started = time.monotonic()
        # `client` claims nothing (max_workers=0): only `worker` can process this.
        result = await client.transition(door.id, "work", {"job": "far"}, wait=WaitMode.ENQUEUED)
        settled = await worker.settle(door.id, timeout=5)
        assert settled.state["jobs"] == ["far"]
        assert result.work_item_id
        assert time.monotonic() - started < 1.0
