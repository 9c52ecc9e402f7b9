"""Store calls run in the runtime's own threads, with the caller's context."""

from __future__ import annotations

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
