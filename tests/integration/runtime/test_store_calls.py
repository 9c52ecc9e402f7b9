"""Store calls run in the runtime's own threads, with the caller's context."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from flou_grpc import LTM, AsyncRuntime, WaitMode
from flou_grpc.store.memory import MemoryStore
from flou_grpc.store.records import Snapshot
from flou_grpc.store.retry import _deadline, deadline


class Solo(LTM):
    name = "solo"


class Recording(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float | None, str]] = []

    def head(self, instance_id: str) -> Snapshot:
        self.seen.append((_deadline.get(), threading.current_thread().name))
        return super().head(instance_id)


async def test_a_callers_retry_deadline_reaches_the_store_thread():
    store = Recording()
    async with AsyncRuntime(store=store, machines=[Solo]) as runtime:
        await runtime.start("solo", instance_id="s", wait=WaitMode.SETTLED)
        store.seen.clear()
        with deadline(5.0):
            await runtime.get("s")
        await runtime.get("s")

    bounded = [at for at, _ in store.seen if at is not None]
    assert len(bounded) == 1  # the one call made inside the block; workers have no deadline
    assert len(store.seen) >= 2
    assert all(thread.startswith("flou-store") for _, thread in store.seen)


class CountingEvents(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def events(self, instance_id, from_revision=1, limit=0):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().events(instance_id, from_revision, limit)


async def test_the_watchers_of_an_instance_share_one_read_per_change():
    store = CountingEvents()
    async with AsyncRuntime(store=store, machines=[Solo], poll_interval=60) as runtime:
        await runtime.start("solo", instance_id="s", wait=WaitMode.SETTLED)
        streams = [runtime.watch("s") for _ in range(20)]
        for stream in streams:
            await anext(stream)  # the snapshot

        async def next_events() -> list[int]:
            return [(await anext(stream)).revision for stream in streams]  # type: ignore[union-attr]

        for round_ in range(3):
            waiting = asyncio.ensure_future(next_events())
            await asyncio.sleep(0.05)  # every watcher is waiting for the next change
            before = store.reads
            await runtime.update_state("s", {"n": round_})
            revisions = await asyncio.wait_for(waiting, 5)
            assert len(set(revisions)) == 1  # every watcher got the same next event
            assert store.reads - before <= 3  # not one read per watcher
        for stream in streams:
            await stream.aclose()


async def test_watchers_get_this_runtimes_commits_without_reading_the_store():
    store = CountingEvents()
    async with AsyncRuntime(store=store, machines=[Solo], poll_interval=60) as runtime:
        await runtime.start("solo", instance_id="s", wait=WaitMode.SETTLED)
        await runtime.update_state("s", {"items": []})
        start = (await runtime.get("s")).revision

        async def forty() -> list[Any]:
            stream = runtime.watch("s")
            await anext(stream)  # the snapshot
            events = [await anext(stream) for _ in range(40)]
            await stream.aclose()
            return events

        watchers = [asyncio.ensure_future(forty()) for _ in range(20)]
        await asyncio.sleep(0.1)  # every watcher has caught up, and waits
        before = store.reads
        for n in range(10):  # one at a time: each commit continues what the watchers hold
            await runtime.atomic_append("s", "items", n)
        sequential = store.reads - before
        await asyncio.gather(*(runtime.atomic_append("s", "items", n) for n in range(10, 40)))
        seen = await asyncio.wait_for(asyncio.gather(*watchers), 5)

    assert sequential == 0
    for events in seen:
        assert [e.revision for e in events] == list(range(start + 1, start + 41))
        assert sorted(e.item["value"] for e in events) == list(range(40))


async def test_a_commit_made_elsewhere_reaches_the_watchers_before_the_next_local_one():
    store = CountingEvents()  # shared by two runtimes, as a database is by two processes
    async with AsyncRuntime(store=store, machines=[Solo], poll_interval=60) as here:
        await here.start("solo", instance_id="s", wait=WaitMode.SETTLED)
        await here.update_state("s", {"items": []})
        stream = here.watch("s")
        start = (await anext(stream)).revision  # type: ignore[union-attr]
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)  # caught up: it waits for a change

        async with AsyncRuntime(store=store, machines=[Solo], poll_interval=60) as elsewhere:
            await elsewhere.atomic_append("s", "items", "elsewhere")  # here hears nothing of it
        await here.atomic_append("s", "items", "here")

        events = [await asyncio.wait_for(first, 5), await asyncio.wait_for(anext(stream), 5)]
        await stream.aclose()
    assert [e.revision for e in events] == [start + 1, start + 2]  # type: ignore[union-attr]
    assert [e.item["value"] for e in events] == ["elsewhere", "here"]  # type: ignore[union-attr]
