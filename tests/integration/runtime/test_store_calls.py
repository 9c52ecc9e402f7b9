"""Store calls run in the runtime's own threads, with the caller's context."""

from __future__ import annotations

import asyncio
import threading

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
