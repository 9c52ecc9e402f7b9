"""Appends that arrive together share one store transaction (`GroupCommit`), each its own step.

The runtime queues `atomic_append` calls while a batch is being committed and
sends them together in the next (`Store.append_many`). These tests hold, on
every store, that batching really happens, and that each call still gets what
it would get alone: its own revision and event, its own error, its watchers'
events in order, and its commit even when its caller stopped waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from flou_grpc import AsyncRuntime, WaitMode
from flou_grpc.engine.document import apply_patch
from flou_grpc.errors import (
    InstanceNotFoundError,
    LimitExceededError,
    StateKeyNotFoundError,
    StateKeyNotListError,
)
from flou_grpc.runtime import Event, EventKind, Instance
from flou_grpc.runtime.stores import open_store
from flou_grpc.store.base import Store
from flou_grpc.store.records import AppendRecord
from tests.ltms.quiet import Journal

IDS = ("j0", "j1", "j2", "j3")


class Batches:
    """A real store that records how many appends each `append_many` carried."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append_many(
        self, appends: Sequence[AppendRecord], max_bytes: int | None = None
    ) -> list[Any]:
        self.sizes.append(len(appends))
        return self._store.append_many(appends, max_bytes)


def runtime(store: Batches, **options: Any) -> AsyncRuntime:
    return AsyncRuntime(store=store, machines=[Journal], poll_interval=60, **options)  # type: ignore[arg-type]


async def started(flou: AsyncRuntime, ids: Sequence[str] = IDS) -> dict[str, int]:
    """Starts the journals; their revisions once settled."""
    return {
        instance_id: (
            await flou.start("journal", instance_id=instance_id, wait=WaitMode.SETTLED)
        ).revision
        for instance_id in ids
    }


async def test_appends_that_arrive_together_share_transactions_and_keep_their_own_steps(
    database_url,
):
    store = Batches(open_store(database_url))
    async with runtime(store) as flou:
        before = await started(flou)
        results = await asyncio.gather(
            *(flou.atomic_append(IDS[n % 4], "log", n) for n in range(64))
        )
        finals = {i: await flou.get(i) for i in IDS}
        histories = {i: await flou.history(i, before[i] + 1) for i in IDS}

    assert sum(store.sizes) == 64
    assert len(store.sizes) < 64  # batched: fewer transactions than appends
    for n, result in enumerate(results):
        instance_id = IDS[n % 4]
        # The list was empty at `before`: each append's revision says where it went.
        assert result.values[result.revision - before[instance_id] - 1] == n
    for instance_id in IDS:
        final, history = finals[instance_id], histories[instance_id]
        assert sorted(final.state["log"]) == list(range(int(instance_id[1]), 64, 4))
        assert final.revision == before[instance_id] + 16
        revisions = range(before[instance_id] + 1, final.revision + 1)
        assert [e.revision for e in history] == list(revisions)
        assert {e.kind for e in history} == {EventKind.APPENDED}
        assert [e.item["value"] for e in history] == final.state["log"]


async def test_an_append_that_fails_in_a_batch_fails_alone(database_url):
    store = Batches(open_store(database_url))
    async with runtime(store, max_state_bytes=300) as flou:
        before = await started(flou, ["j0"])
        outcomes = await asyncio.gather(
            flou.atomic_append("j0", "log", "first"),
            flou.atomic_append("j0", "title", "not a list"),
            flou.atomic_append("j0", "missing", "nothing there"),
            flou.atomic_append("j0", "other", "z" * 300),  # over max_state_bytes
            flou.atomic_append("nope", "log", "no instance"),
            flou.atomic_append("j0", "other", "last"),
            return_exceptions=True,
        )
        final = await flou.get("j0")
        history = await flou.history("j0", before["j0"] + 1)

    assert max(store.sizes) > 1
    assert isinstance(outcomes[1], StateKeyNotListError)
    assert isinstance(outcomes[2], StateKeyNotFoundError)
    assert isinstance(outcomes[3], LimitExceededError)
    assert isinstance(outcomes[4], InstanceNotFoundError)
    assert (final.state["log"], final.state["other"], final.state["title"]) == (
        ["first"],
        ["last"],
        "x",
    )
    assert [e.item["value"] for e in history] == ["first", "last"]
    assert [e.revision for e in history] == [before["j0"] + 1, before["j0"] + 2]


async def test_watchers_get_every_batched_append_in_revision_order(database_url):
    store = Batches(open_store(database_url))
    async with runtime(store) as flou:
        await started(flou, ["j0"])
        stream = flou.watch("j0")
        first = await anext(stream)
        assert isinstance(first, Instance)

        await asyncio.gather(*(flou.atomic_append("j0", "log", n) for n in range(20)))
        events = [await asyncio.wait_for(anext(stream), 10) for _ in range(20)]
        await stream.aclose()
        final = await flou.get("j0")

    assert max(store.sizes) > 1
    assert all(isinstance(e, Event) for e in events)
    assert [e.revision for e in events] == list(range(first.revision + 1, first.revision + 21))
    state = first.state
    for event in events:
        state = apply_patch(state, event.patch)
    assert state == final.state


async def test_an_append_whose_caller_stopped_waiting_is_committed_all_the_same(database_url):
    store = Batches(open_store(database_url))
    async with runtime(store) as flou:
        await started(flou, ["j0"])
        await flou.atomic_append("j0", "log", "known")  # the instance is now known here
        gone = asyncio.create_task(flou.atomic_append("j0", "log", "gone"))
        others = asyncio.gather(*(flou.atomic_append("j0", "log", n) for n in range(8)))
        await asyncio.sleep(0)  # all queued, `gone` first
        gone.cancel()
        await others  # committed in `gone`'s batch or after it
        with pytest.raises(asyncio.CancelledError):
            await gone
        final = await flou.get("j0")

    assert sorted(final.state["log"], key=str) == sorted(["known", "gone", *range(8)], key=str)


async def test_an_error_after_the_commit_never_makes_the_appends_again(database_url, caplog):
    # A change listener that raises once: the batch is committed by then, so its
    # appends must not be made a second time (one by one), whatever their callers get.
    store = Batches(open_store(database_url))
    async with runtime(store) as flou:
        await started(flou, ["j0"])
        raised: list[str] = []

        def listener(instance_id: str) -> None:
            if not raised:
                raised.append(instance_id)
                raise RuntimeError("a listener's bug")

        flou.on_change(listener)
        outcomes = await asyncio.gather(
            *(flou.atomic_append("j0", "log", n) for n in range(8)), return_exceptions=True
        )
        final = await flou.get("j0")

    assert raised == ["j0"]
    assert sorted(final.state["log"]) == list(range(8))  # each once
    assert sum(isinstance(o, Exception) for o in outcomes) == 1
    assert "after the commit of an append" in caplog.text
