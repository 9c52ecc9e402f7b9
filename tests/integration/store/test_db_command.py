"""`flou-grpc db upgrade`: operators migrate a database before the servers start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flou_grpc.store.migrations import SchemaVersionError, head
from flou_grpc.store.sql import SqlStore


def _db_upgrade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flou_grpc", "db", "upgrade", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_db_upgrade_migrates_an_empty_database_and_can_run_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with pytest.raises(SchemaVersionError):
        SqlStore(url, upgrade=False)
    for _ in range(2):
        result = _db_upgrade("--database-url", url)
        assert result.returncode == 0, result.stderr
        assert f"schema at revision {head()}" in result.stdout
    SqlStore(url, upgrade=False).close()


def test_db_upgrade_refuses_the_memory_store():
    result = _db_upgrade("--database-url", "memory://")
    assert result.returncode != 0
    assert "memory:// has no schema" in result.stderr
