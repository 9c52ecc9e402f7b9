"""Two runtime processes on one PostgreSQL drive the same 100 instances: each step once, in order.

Two worker processes (`worker.py`) share a database; the test process,
through a runtime that only enqueues (`max_workers=0`), starts 100 `Relay`
instances and sends each of them `step` transitions in rounds, without
waiting for them to be processed. The workers claim the instances through
leases and race for them. When everything has settled, every instance's
history has each enqueued transition exactly once, in the order it was
enqueued, every step (start, runs, transitions, appends) once, the counts
adding up; and both processes did part of the work (the runs record their
process id).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from flou_grpc import AsyncRuntime, WaitMode
from flou_grpc.runtime import Event, EventKind
from tests.integration.durability.support import WorkerProcess, check_history
from tests.integration.durability.worker import MACHINES

INSTANCES, ROUNDS = 100, 4
SETTLE_TIMEOUT = 90.0

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


async def _unsettled(runtime: AsyncRuntime, instance_ids: list[str]) -> list[str]:
    views = await asyncio.gather(*(runtime.get(i) for i in instance_ids))
    return [view.id for view in views if view.pending_work_count]


async def _wait_settled(runtime: AsyncRuntime, instance_ids: list[str]) -> list[str]:
    """Waits until no instance has pending work; returns those that still have some."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    unsettled = await _unsettled(runtime, instance_ids)
    while unsettled and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        unsettled = await _unsettled(runtime, unsettled)
    return unsettled


def _transitions_of(history: list[Event], ids: set[str]) -> list[str]:
    """The work item ids, in history order, of the events of the given work items."""
    return [e.item["work_item_id"] for e in history if e.item.get("work_item_id") in ids]


async def test_each_step_applies_once_in_order_when_two_runtimes_share_the_instances(
    postgres_database: str, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    ids = [f"relay-{i:03}" for i in range(INSTANCES)]
    sent: dict[str, list[str]] = {i: [] for i in ids}
    # max_workers=0: this runtime only enqueues and reads (it migrates the database first).
    async with AsyncRuntime(postgres_database, machines=MACHINES, max_workers=0) as enqueuer:
        workers = [spawn_worker(postgres_database, lease=1.0, poll=0.1) for _ in range(2)]
        for worker in workers:
            worker.wait_ready()

        await asyncio.gather(
            *(enqueuer.start("relay", instance_id=i, wait=WaitMode.ENQUEUED) for i in ids)
        )

        async def send(instance_id: str, n: int) -> None:
            result = await enqueuer.transition(
                instance_id, "step", {"n": n}, wait=WaitMode.ENQUEUED
            )
            sent[instance_id].append(result.work_item_id)

        for n in range(ROUNDS):  # a round is enqueued for all before the next begins
            await asyncio.gather(*(send(i, n) for i in ids))

        unsettled = await _wait_settled(enqueuer, ids)
        assert not unsettled, f"still pending after {SETTLE_TIMEOUT}s: {unsettled[:10]}"
        for worker in workers:
            worker.kill()

        pids: Counter[int] = Counter()
        fired_total = 0
        for instance_id in ids:
            instance = await enqueuer.get(instance_id)
            history = await enqueuer.history(instance_id)
            assert not instance.errors, (instance_id, instance.errors)
            check_history(instance_id, history, instance.state)
            # Every enqueued transition was processed once, in the order it was enqueued.
            assert _transitions_of(history, set(sent[instance_id])) == sent[instance_id]
            outcomes = [e for e in history if e.item.get("work_item_id") in sent[instance_id]]
            assert {e.kind for e in outcomes} <= {EventKind.TRANSITIONED, EventKind.REJECTED}
            fired = [e.item["payload"]["n"] for e in outcomes if e.kind == EventKind.TRANSITIONED]
            fired_total += len(fired)
            # Each fired step ran its target once: one log entry each, in order.
            log = instance.state["log"]
            assert [entry["n"] for entry in log] == fired, instance_id
            assert len(instance.state["pids"]) == 1, instance_id  # the root ran once
            # started, root executed + its append, ping executed; then per transition its
            # outcome, and per fired one its target's run and that run's append.
            assert len(history) == 4 + ROUNDS + 2 * len(fired), instance_id
            pids.update(instance.state["pids"])
            pids.update(entry["pid"] for entry in log)

        assert set(pids) == {worker.pid for worker in workers}, pids
        assert fired_total > 0
