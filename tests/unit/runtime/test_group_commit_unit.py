"""`GroupCommit`'s batching, with a commit function that records what it was given."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence

import pytest

from flou_grpc.errors import StoreUnavailableError
from flou_grpc.runtime.group_commit import GroupCommit
from flou_grpc.store.retry import deadline, deadline_at

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


class Ledger:
    """Commits by doubling each call; `gate` holds a batch until it is set; `bad` calls fail
    the whole batch they are in (as an unexpected error would)."""

    def __init__(self, bad: frozenset[int] = frozenset(), whole: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.deadlines: list[float | None] = []
        self.callers: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.bad, self.whole = bad, whole

    async def commit(self, calls: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(calls))
        self.deadlines.append(deadline_at())
        self.callers.append(CALLER.get())
        await self.gate.wait()
        if self.whole is not None:
            raise self.whole
        if self.bad.intersection(calls):
            raise RuntimeError(f"bad batch {list(calls)}")
        return [call * 2 if call >= 0 else ValueError(call) for call in calls]


async def test_a_lone_call_goes_at_once_alone():
    ledger = Ledger()
    group = GroupCommit(ledger.commit)

    assert await group.submit(21) == 42
    assert ledger.batches == [[21]]


async def test_a_call_made_as_the_previous_batch_ends_is_committed():
    # The caller resumes before the batch's task has finished: its call must
    # not be left queued behind a task that is about to end.
    ledger = Ledger()
    group = GroupCommit(ledger.commit)

    for n in range(5):
        assert await asyncio.wait_for(group.submit(n), 5) == n * 2

    assert ledger.batches == [[0], [1], [2], [3], [4]]


async def test_calls_that_arrive_during_a_batch_go_together_in_the_next_in_order():
    ledger = Ledger()
    ledger.gate.clear()
    group = GroupCommit(ledger.commit, most=4)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)  # the first batch is running, held at the gate
    rest = [asyncio.create_task(group.submit(n)) for n in range(1, 7)]
    await asyncio.sleep(0.01)
    assert ledger.batches == [[0]]
    assert group.batches_in_flight == 1

    ledger.gate.set()
    assert await first == 0
    assert [await task for task in rest] == [2, 4, 6, 8, 10, 12]
    assert ledger.batches == [[0], [1, 2, 3, 4], [5, 6]]
    await group.wait_idle()
    assert group.batches_in_flight == 0


async def test_each_call_gets_its_own_outcome():
    group = GroupCommit(Ledger().commit)
    outcomes = await asyncio.gather(
        group.submit(1), group.submit(-1), group.submit(2), return_exceptions=True
    )
    assert outcomes[0] == 2
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == 4


async def test_a_batch_that_fails_whole_is_run_again_call_by_call():
    ledger = Ledger(bad=frozenset({3}))
    ledger.gate.clear()
    group = GroupCommit(ledger.commit)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)
    calls = [asyncio.create_task(group.submit(n)) for n in (1, 3, 5)]
    await asyncio.sleep(0.01)
    ledger.gate.set()

    outcomes = await asyncio.gather(first, *calls, return_exceptions=True)

    assert outcomes[:2] == [0, 2]
    assert isinstance(outcomes[2], RuntimeError)
    assert outcomes[3] == 10
    assert ledger.batches == [[0], [1, 3, 5], [1], [3], [5]]


async def test_an_unavailable_store_fails_the_whole_batch_without_running_it_again():
    ledger = Ledger(whole=StoreUnavailableError())
    group = GroupCommit(ledger.commit)

    outcomes = await asyncio.gather(
        group.submit(1), group.submit(2), group.submit(3), return_exceptions=True
    )

    assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
    assert sum(len(batch) for batch in ledger.batches) == 3  # each call committed once


async def submit_within(group: GroupCommit[int, int], seconds: float | None, call: int) -> int:
    CALLER.set(f"caller {call}")
    if seconds is None:
        return await group.submit(call)
    with deadline(seconds):
        return await group.submit(call)


async def test_a_batch_retries_until_its_callers_latest_deadline_and_carries_no_callers_context():
    ledger = Ledger()
    ledger.gate.clear()
    group = GroupCommit(ledger.commit)
    first = asyncio.create_task(submit_within(group, 5, 0))
    await asyncio.sleep(0.01)
    bounded = [asyncio.create_task(submit_within(group, s, n)) for n, s in ((1, 5), (2, 20))]
    await asyncio.sleep(0.01)
    ledger.gate.set()
    await asyncio.gather(first, *bounded)
    ledger.gate.clear()
    first = asyncio.create_task(submit_within(group, 5, 3))
    await asyncio.sleep(0.01)
    unbounded = [asyncio.create_task(submit_within(group, s, n)) for n, s in ((4, 5), (5, None))]
    await asyncio.sleep(0.01)
    ledger.gate.set()
    await asyncio.gather(first, *unbounded)

    assert ledger.batches == [[0], [1, 2], [3], [4, 5]]
    now = time.monotonic()
    latest = ledger.deadlines[1]
    assert latest is not None
    assert 15 < latest - now <= 20  # the later of 5 s and 20 s
    assert ledger.deadlines[3] is None  # one caller had none
    assert ledger.callers == ["", "", "", ""]


@pytest.mark.parametrize("most", [1, 3])
async def test_no_batch_holds_more_than_most(most):
    ledger = Ledger()
    group = GroupCommit(ledger.commit, most=most)
    assert await asyncio.gather(*(group.submit(n) for n in range(7))) == [n * 2 for n in range(7)]
    assert max(len(batch) for batch in ledger.batches) <= most
