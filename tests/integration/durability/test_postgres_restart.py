"""PostgreSQL restarted in the middle of a load: the load completes, nothing lost, retries logged.

A thread drives 200 transitions over four `Relay` instances (50 each, every
call waiting until its instance settles) on a runtime of its own, while the
test restarts the local server with `pg_ctlcluster ... restart` once a
quarter of the load is done. Every connection dies; the store retries its
transactions until the server is back. Each transition must then be in its
instance's history exactly once, in order, and have run its target once; the
retries must be in the `flou_grpc.store` log. The server is up again when the
test ends, whatever happened (its database is this test's own: a restart
breaks every connection, shared fixtures' included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from flou_grpc import AsyncRuntime, Runtime, WaitMode
from flou_grpc.runtime import EventKind
from tests.integration.durability.support import check_history
from tests.integration.durability.worker import MACHINES

INSTANCES, TRANSITIONS = 4, 50
RESTART_AFTER = INSTANCES * TRANSITIONS // 4
"""Transitions done when the server is restarted."""
CALL_TIMEOUT = 45.0
"""Seconds one transition may take (the store retries for up to 30 s)."""
LOAD_TIMEOUT = 120.0

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]


def _cluster_command(action: str) -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action]


@pytest.fixture
def restart_postgres(postgres_database: str) -> Iterator[Callable[[], None]]:
    """Restarts the local server; makes sure it is accepting connections again at the end."""
    if (
        os.geteuid() != 0
        or not shutil.which("pg_ctlcluster")
        or not Path("/etc/postgresql").is_dir()
    ):
        pytest.skip("restarting PostgreSQL needs root and a local pg_ctlcluster cluster")
    url = make_url(postgres_database)
    ready = ["pg_isready", "-q", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]

    def is_ready(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(ready, check=False, timeout=10).returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def restart() -> None:
        subprocess.run(_cluster_command("restart"), check=True, timeout=60)

    try:
        yield restart
    finally:
        if not is_ready(30):
            subprocess.run(_cluster_command("start"), check=False, timeout=60)
            assert is_ready(60), "PostgreSQL did not come back after the restart test"


def _drive(url: str, done: list[int], failures: list[BaseException]) -> None:
    """The load: INSTANCES relays, TRANSITIONS steps each, concurrently; counts what is done."""

    async def load() -> None:
        async with AsyncRuntime(url, machines=MACHINES, lease_seconds=5, poll_interval=0.1) as rt:
            for i in range(INSTANCES):
                await rt.start("relay", instance_id=f"relay-{i}", wait=WaitMode.SETTLED)

            async def relay(instance_id: str) -> None:
                for n in range(TRANSITIONS):
                    async with asyncio.timeout(CALL_TIMEOUT):
                        await rt.transition(instance_id, "step", {"n": n}, wait=WaitMode.SETTLED)
                    done.append(n)

            await asyncio.gather(*(relay(f"relay-{i}") for i in range(INSTANCES)))

    try:
        asyncio.run(load())
    except BaseException as exc:  # reported by the test
        failures.append(exc)


def test_load_completes_exactly_once_when_postgres_restarts_midway(
    postgres_database: str,
    restart_postgres: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flou_grpc.store")
    done: list[int] = []
    failures: list[BaseException] = []
    driver = threading.Thread(target=_drive, args=(postgres_database, done, failures))
    driver.start()
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT
        while len(done) < RESTART_AFTER and driver.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert driver.is_alive(), f"the load ended before the restart: {failures}"
        restarted_at = len(done)
        restart_postgres()
        left_at_restart = INSTANCES * TRANSITIONS - restarted_at
    finally:
        driver.join(timeout=LOAD_TIMEOUT)
    assert not driver.is_alive(), f"the load did not finish in {LOAD_TIMEOUT}s"
    assert not failures, failures
    assert len(done) == INSTANCES * TRANSITIONS
    assert left_at_restart > INSTANCES * TRANSITIONS // 2  # the restart was mid-load

    retries = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flou_grpc.store" and "transient error" in r.getMessage()
    ]
    assert retries, "no retry of a store transaction was logged"

    with Runtime(postgres_database, machines=MACHINES, max_workers=0) as reader:
        for i in range(INSTANCES):
            instance = reader.get(f"relay-{i}")
            history = reader.history(instance.id)
            check_history(instance.id, history, instance.state)
            kinds = [event.kind for event in history]
            assert kinds.count(EventKind.TRANSITIONED) == TRANSITIONS, instance.id
            assert EventKind.REJECTED not in kinds, instance.id
            steps = [e.item["payload"]["n"] for e in history if e.kind == EventKind.TRANSITIONED]
            assert steps == list(range(TRANSITIONS)), instance.id
            assert [entry["n"] for entry in instance.state["log"]] == list(range(TRANSITIONS))
            assert len(instance.state["pids"]) == 1, instance.id
            assert instance.pending_work_count == 0, instance.id
            assert not instance.errors, instance.id
