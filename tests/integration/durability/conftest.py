"""Fixtures of the durability suite: databases, and runtime processes the tests kill.

`spawn_worker` starts `tests/integration/durability/worker.py` as a separate
Python process; every process it started is killed and reaped when the test
ends, whatever happened. Each PostgreSQL case gets a database of its own
(`postgres_database`): worker processes hold connections to it, and the
restart test breaks every connection of the server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.durability.support import WorkerProcess


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each SQL backend: a SQLite file, a new PostgreSQL database."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_database"
    return str(request.getfixturevalue(name))


@pytest.fixture
def spawn_worker(repo_root: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts runtime processes on a database; all are killed and reaped at the end."""
    started: list[WorkerProcess] = []

    def spawn(
        url: str,
        *,
        lease: float = 1.0,
        poll: float = 0.1,
        pause: float = 0.0,
        marks: bool = False,
    ) -> WorkerProcess:
        args = [
            sys.executable,
            "-m",
            "tests.integration.durability.worker",
            url,
            f"--lease={lease}",
            f"--poll={poll}",
            f"--pause={pause}",
            *(["--marks"] if marks else []),
        ]
        n = len(started)
        process = WorkerProcess(
            args, repo_root, tmp_path / f"worker-{n}.out", tmp_path / f"worker-{n}.err"
        )
        started.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in started:  # every one is signalled before any is waited for
            process.popen.kill()
        for process in started:
            process.popen.wait(timeout=30)
