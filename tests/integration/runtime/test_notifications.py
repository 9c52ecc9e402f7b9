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


async def test_a_watcher_on_another_runtime_sees_an_append_at_once(postgres_url):
    async with (
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as driver,
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as watcher,
    ):
        door = await driver.start("door", wait=WaitMode.SETTLED)
        stream = watcher.watch(door.id)
        await anext(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.3)  # it found nothing new and waits: only a notice wakes it
        started = time.monotonic()
        appended = await driver.atomic_append(door.id, "jobs", "far")
        event = await asyncio.wait_for(waiting, timeout=5)
        assert isinstance(event, Event)
        assert (event.revision, event.kind) == (appended.revision, "appended")
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


async def test_a_store_hears_other_processes_changes_but_not_its_own(postgres_url):
    from flou_grpc.store.base import EVENTS_CHANNEL
    from flou_grpc.store.sql import SqlStore

    heard: list[tuple[str, str]] = []
    async with (
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60) as own,
        # `other` processes nothing (max_workers=0): every step is `own`'s.
        AsyncRuntime(postgres_url, machines=[Door], poll_interval=60, max_workers=0) as other,
    ):
        store = own.store
        assert isinstance(store, SqlStore)
        stop = store.listen(lambda channel, payload: heard.append((channel, payload)))
        assert stop is not None
        try:
            await asyncio.sleep(0.3)  # listening
            mine = await own.start("door", instance_id="mine", wait=WaitMode.SETTLED)
            theirs = await other.start("door", instance_id="theirs")
            deadline = time.monotonic() + 5
            while (EVENTS_CHANNEL, theirs.id) not in heard and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # what else would come, would have come by now
        finally:
            await asyncio.to_thread(stop)

    assert (EVENTS_CHANNEL, theirs.id) in heard
    assert all(payload != mine.id for _, payload in heard)
