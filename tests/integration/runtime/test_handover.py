"""Items handed straight to the instance's worker: one commit, the mailbox's order kept.

A transition or update to an instance this runtime's worker holds skips the
enqueue; its commit checks, holding the instance's row, that nothing was
queued meanwhile. Work queued by another runtime, or a change another runtime
made, sends the item through the mailbox after all: these tests drive both
cases with two runtimes on one database.
"""

from __future__ import annotations

from typing import Any

from flou_grpc import AsyncRuntime, WaitMode
from flou_grpc.runtime import EventKind
from flou_grpc.store.memory import MemoryStore
from flou_grpc.store.records import WorkRecord
from tests.ltms.flat import SelfLoop


class CountingEnqueues(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.enqueued = 0

    def enqueue(self, instance_id: str, work: Any) -> list[WorkRecord]:
        self.enqueued += 1
        return super().enqueue(instance_id, work)


def database(database_url: str) -> dict[str, Any]:
    """How two runtimes share one database: one `MemoryStore` for `memory://`."""
    if database_url.startswith("memory"):
        return {"store": MemoryStore()}
    return {"database_url": database_url}


def runtime(shared: dict[str, Any], **options: Any) -> AsyncRuntime:
    return AsyncRuntime(
        **shared, machines=[SelfLoop], poll_interval=60, lease_seconds=30, **options
    )


async def test_transitions_to_an_instance_held_here_are_not_enqueued():
    store = CountingEnqueues()
    async with AsyncRuntime(store=store, machines=[SelfLoop], linger=5) as runtime:
        await runtime.start("self_loop", instance_id="t", wait=WaitMode.SETTLED)
        before = store.enqueued
        for n in range(10):
            result = await runtime.transition("t", "again", {"n": n})
            assert [f["label"] for f in result.fired] == ["again"]
        settled = await runtime.settle("t")

    assert store.enqueued == before  # every one went straight to the worker
    kinds = [e.kind for e in await _history(store, "t")]
    assert kinds.count(EventKind.TRANSITIONED) == 10
    assert EventKind.REJECTED not in kinds
    assert [r.get("n") for r in settled.state["loop"]["runs"]] == [None, *range(10)]


async def test_work_queued_by_another_runtime_goes_first(database_url):
    shared = database(database_url)
    async with runtime(shared, linger=5) as here:
        await here.start("self_loop", instance_id="t", wait=WaitMode.SETTLED)
        await here.update_state("t", {"by": ""})  # here's worker now holds it, and lingers
        async with runtime(shared) as elsewhere:
            queued = await elsewhere.transition("t", "again", wait=WaitMode.ENQUEUED)

        handed = await here.submit_update("t", {"by": "here"}, timeout=10)
        history = await here.history("t")

    ids = [e.item.get("work_item_id") for e in history]
    assert ids.index(queued.work_item_id) < ids.index(handed.work_item_id)
    assert EventKind.REJECTED not in [e.kind for e in history]


async def test_an_instance_changed_elsewhere_takes_the_item_in_turn(database_url):
    shared = database(database_url)
    async with runtime(shared, linger=5) as here:
        await here.start("self_loop", instance_id="t", wait=WaitMode.SETTLED)
        await here.update_state("t", {"log": []})  # here's worker holds it at this revision
        async with runtime(shared) as elsewhere:
            appended = await elsewhere.atomic_append("t", "log", "elsewhere")

        result = await here.transition("t", "again", timeout=10)  # its first try: a conflict
        final = await here.settle("t", timeout=10)

    assert [f["label"] for f in result.fired] == ["again"]
    assert result.instance.revision > appended.revision
    assert final.state["log"] == ["elsewhere"]
    assert len(final.state["loop"]["runs"]) == 2  # the first run, and the transition's


async def _history(store: MemoryStore, instance_id: str) -> list[Any]:
    async with AsyncRuntime(store=store, machines=[SelfLoop]) as reader:
        return await reader.history(instance_id)
