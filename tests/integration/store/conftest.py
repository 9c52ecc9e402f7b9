"""Fixtures of the store suite: one `store` fixture over every implementation.

- memory: a new `MemoryStore` per test.
- sqlite: one `SqlStore` on a file of the test session (migrated on open),
  emptied after each test.
- postgres: one `SqlStore` on a database created for this test session on
  the server at FLOU_TEST_POSTGRES_URL (default: the local server, trust
  auth), emptied after each test, dropped at the end.

`sql_store` and `database_url` give each test a store or database of its own
(SQLite: a new file; PostgreSQL: the session's database, emptied after).
Tests that need an empty database (migrations) take `postgres_database`.

The suite's databases trade durability for speed, as throwaway databases may:
SQLite runs with `synchronous=NORMAL` in the shared store, PostgreSQL with
`synchronous_commit=off`. Atomicity and isolation, what the suite checks, are
the same; the store's durable default (FULL) has a test of its own.

Without a reachable server the postgres cases are skipped, except under CI,
where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flou_grpc.store.memory import MemoryStore
from flou_grpc.store.retry import RetryPolicy
from flou_grpc.store.sql import SqlStore
from tests.databases import TABLES

TEST_RETRY = RetryPolicy(deadline=10.0)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sql_backend: str) -> str:
    """The URL of an empty, migrated database of the SQL backend."""
    name = "sqlite_url" if sql_backend == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def shared_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    path = tmp_path_factory.mktemp("store") / "shared.db"
    opened = SqlStore(f"sqlite:///{path}", retry=TEST_RETRY, synchronous="NORMAL")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def shared_postgres_store(postgres_session_url: str) -> Iterator[SqlStore]:
    opened = SqlStore(postgres_session_url, retry=TEST_RETRY)
    yield opened
    opened.close()


def empty(store: SqlStore) -> None:
    """Deletes every row of the store's tables."""
    with store.engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
def store(request: pytest.FixtureRequest, backend: str) -> Iterator[object]:
    """An empty store of each implementation."""
    if backend == "memory":
        yield MemoryStore()
        return
    shared: SqlStore = request.getfixturevalue(f"shared_{backend}_store")
    try:
        yield shared
    finally:
        empty(shared)


@pytest.fixture
def sql_store(database_url: str) -> Iterator[SqlStore]:
    """An empty `SqlStore` of each SQL backend."""
    opened = SqlStore(database_url, retry=TEST_RETRY)
    yield opened
    opened.close()
