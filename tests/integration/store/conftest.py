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

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from flou_grpc.store.memory import MemoryStore
from flou_grpc.store.retry import RetryPolicy
from flou_grpc.store.sql import SqlStore

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TABLES = (
    "flou_appends",
    "flou_requests",
    "flou_errors",
    "flou_events",
    "flou_work_items",
    "flou_instances",
)
TEST_RETRY = RetryPolicy(deadline=10.0)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the server's maintenance database; skips (fails under CI) if unreachable."""
    url = os.environ.get("FLOU_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(_libpq(url), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {url} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Creates uniquely named databases on demand; drops them all at the end."""
    created: list[str] = []

    def create() -> str:
        name = f"flou_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_libpq(postgres_server), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(name)
                )
            )
        created.append(name)
        return _with_database(postgres_server, name)

    yield create
    with psycopg.connect(_libpq(postgres_server), autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_session_url(new_postgres_database: Callable[[], str]) -> str:
    """The database the postgres `store` cases share, migrated once."""
    url = new_postgres_database()
    SqlStore(url).close()
    return url


@pytest.fixture
def postgres_url(postgres_session_url: str) -> Iterator[str]:
    """The shared database, emptied after the test."""
    yield postgres_session_url
    with psycopg.connect(_libpq(postgres_session_url)) as conn:  # one transaction
        for table in TABLES:  # DELETE: faster than TRUNCATE on small tables
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


@pytest.fixture
def postgres_database(new_postgres_database: Callable[[], str]) -> str:
    """A new, empty database of this test's own."""
    return new_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'flou.db'}"


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
