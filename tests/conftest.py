"""Fixtures shared by every layer of the suite, databases included.

PostgreSQL: the server at FLOU_TEST_POSTGRES_URL (default: the local server,
trust auth). Each test session creates its own databases there and drops them
at the end. Without a reachable server the postgres cases are skipped, except
under CI, where they fail. The throwaway databases run with
`synchronous_commit=off` (atomicity and isolation, what the suite checks, are
unchanged).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flou_grpc.store.sql import SqlStore
from tests.databases import DEFAULT_POSTGRES_URL, TABLES, libpq, with_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the server's maintenance database; skips (fails under CI) if unreachable."""
    url = os.environ.get("FLOU_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(libpq(url), connect_timeout=3).close()
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
        with psycopg.connect(libpq(postgres_server), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(name)
                )
            )
        created.append(name)
        return with_database(postgres_server, name)

    yield create
    with psycopg.connect(libpq(postgres_server), autocommit=True) as conn:
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
    with psycopg.connect(libpq(postgres_session_url)) as conn:  # one transaction
        for table in TABLES:  # DELETE: faster than TRUNCATE on small tables
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


@pytest.fixture
def postgres_database(new_postgres_database: Callable[[], str]) -> str:
    """A new, empty database of this test's own."""
    return new_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'flou.db'}"
