"""Crash safety: a runtime process SIGKILLed at random points, restarted, loses nothing.

A separate worker process (`worker.py`) drives `Chain` instances (five stages,
each appending twice to a list inside `run`, updating the state and moving
on); the test kills it with SIGKILL at seeded random moments and starts a new
one each time. The worker pauses in every phase of a step and reports the
phases on stdout, so the test knows where each kill landed: after the mailbox
was read (before run), inside run (after an append committed), after run
before its commit, after a commit before the runtime heard of it. It keeps
killing until every phase was hit (bounded in kills and time), then lets a
last worker finish and compares each instance with a crash-free run of the
same machine and inputs on `memory://`: the same document, the same history
(revisions 1..N, same steps in the same order), every append exactly once.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from flou_grpc import Runtime, WaitMode
from tests.integration.durability.support import WorkerProcess, check_history, without_work_ids
from tests.integration.durability.worker import IDLE, MACHINES, PHASES

pytestmark = pytest.mark.timeout(180)

SEED = int(os.environ.get("FLOU_DURABILITY_SEED", "20240611"))
INSTANCES = 10
PAUSE = 0.03
"""Seconds each phase of a step lasts in the killed workers."""
MIN_KILLS, MAX_KILLS = 6, 16
KILL_BUDGET = 60.0
"""Seconds after which no more kills start, phases covered or not."""
SETTLE_TIMEOUT = 60.0


def _instance_ids() -> list[str]:
    return [f"chain-{i}" for i in range(INSTANCES)]


def _crash_free() -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """Each instance's document and history (work ids left out) in one uninterrupted run."""
    outcome = {}
    with Runtime("memory://", machines=MACHINES) as runtime:
        for seed, instance_id in enumerate(_instance_ids()):
            runtime.start("chain", {"seed": seed}, instance_id=instance_id, wait=WaitMode.SETTLED)
            instance = runtime.settle(instance_id, timeout=30)
            outcome[instance_id] = (instance.state, without_work_ids(runtime.history(instance_id)))
    return outcome


def _phases_at_kill(worker: WorkerProcess) -> Counter[str]:
    """Where each instance the killed worker touched was: its last mark."""
    last: dict[str, str] = {}
    for words in worker.lines():
        if len(words) == 2 and words[0] != "ready":
            last[words[1]] = words[0]
    return Counter(phase for phase in last.values() if phase != IDLE)


def _unsettled(runtime: Runtime, instance_ids: list[str]) -> list[str]:
    return [i for i in instance_ids if runtime.get(i).pending_work_count]


def _wait_settled(runtime: Runtime, instance_ids: list[str], timeout: float) -> list[str]:
    """Waits until no instance has pending work; returns those that still have some."""
    deadline = time.monotonic() + timeout
    unsettled = _unsettled(runtime, instance_ids)
    while unsettled and time.monotonic() < deadline:
        time.sleep(0.1)
        unsettled = _unsettled(runtime, unsettled)
    return unsettled


def test_instances_end_as_a_crash_free_run_when_the_worker_is_killed_at_random(
    database_url: str, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(SEED)
    ids = _instance_ids()
    expected = _crash_free()
    hit: Counter[str] = Counter()
    kills = 0
    # max_workers=0: this runtime only enqueues and reads; the worker processes do the work.
    with Runtime(database_url, machines=MACHINES, max_workers=0) as enqueuer:
        for seed, instance_id in list(enumerate(ids))[: INSTANCES // 2]:
            enqueuer.start(
                "chain", {"seed": seed}, instance_id=instance_id, wait=WaitMode.ENQUEUED
            )
        started = time.monotonic()
        while kills < MAX_KILLS and time.monotonic() - started < KILL_BUDGET:
            worker = spawn_worker(database_url, pause=PAUSE, marks=True)
            worker.wait_ready()
            # Once it works (a dead worker's leases expire first), let it run a random while.
            working = worker.wait_for(lambda lines: len(lines) > 1, timeout=5)
            time.sleep(rng.uniform(0.0, 0.5))
            worker.kill()
            kills += 1
            hit.update(_phases_at_kill(worker))
            if kills == 1:  # the other half arrive while workers are dying
                for seed, instance_id in list(enumerate(ids))[INSTANCES // 2 :]:
                    enqueuer.start(
                        "chain", {"seed": seed}, instance_id=instance_id, wait=WaitMode.ENQUEUED
                    )
            covered = all(hit[phase] for phase in PHASES)
            if kills >= MIN_KILLS and (covered or not working):
                break

        last = spawn_worker(database_url)
        last.wait_ready()
        unsettled = _wait_settled(enqueuer, ids, SETTLE_TIMEOUT)
        assert not unsettled, f"still pending after {SETTLE_TIMEOUT}s: {unsettled}"
        last.kill()

        assert all(hit[phase] for phase in PHASES), (
            f"seed {SEED}: after {kills} kills, phases hit: {dict(hit)}"
        )
        for instance_id in ids:
            instance = enqueuer.get(instance_id)
            history = enqueuer.history(instance_id)
            document, steps = expected[instance_id]
            assert not instance.errors, (instance_id, instance.errors)
            check_history(instance_id, history, instance.state)
            appends = Counter(instance.state["log"])
            assert appends == Counter(document["log"]), (instance_id, instance.state["log"])
            assert max(appends.values()) == 1, (instance_id, instance.state["log"])
            assert instance.state == document, instance_id
            assert without_work_ids(history) == steps, instance_id
