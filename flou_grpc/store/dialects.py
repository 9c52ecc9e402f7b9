"""What differs between the SQL store's backends, behind one small interface: `SqlDialect`.

The store (`flou_grpc.store.sql`) has one code path; each backend brings:
- its engine: URL, pool and connection setup (SQLite: WAL, busy timeout,
  foreign keys, `BEGIN IMMEDIATE` for write transactions);
- the append to a JSON list, as ONE statement (PostgreSQL `jsonb_set`, SQLite
  `json_insert`), guarded so that it changes nothing unless the path holds a
  list, and returning the list after it and the new revision;
- row locking (`FOR UPDATE`, `SKIP LOCKED` for claims) and "insert unless the
  key exists" / upsert statements;
- which errors are transient, for `flou_grpc.store.retry`;
- the lock that serializes schema migrations.

A distributed engine speaking PostgreSQL (CockroachDB, YugabyteDB) would be one
more subclass here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import TextClause

from flou_grpc.engine.document import Path
from flou_grpc.store.base import EVENTS_CHANNEL
from flou_grpc.store.schema import UtcDateTime, events, instances

__all__ = ["PostgresDialect", "SqlDialect", "SqliteDialect", "dumps", "open_engine"]

dumps = partial(json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""How the store writes JSON: compact, non-ASCII kept as is (SQLite's JSON paths
match object keys by their text as written; see `SqliteDialect.json_path`)."""


@functools.cache
def _notify_statement(count: int) -> TextClause:
    calls = ", ".join(f"pg_notify(:channel{n}, :payload{n})" for n in range(count))
    return text(f"SELECT {calls}")


def _notify_params(notices: Sequence[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for n, (channel, payload) in enumerate(notices):
        params[f"channel{n}"], params[f"payload{n}"] = channel, payload
    return params


AppendCall = tuple[str, Path, Any, datetime, Mapping[str, Any], bool, bool]
"""The arguments of one `SqlDialect.append` after the connection."""

_EVENT_JSON = ("item", "patch", "fired", "error", "rejection")


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


@functools.lru_cache(maxsize=16)
def _converters(dialect: Any) -> tuple[Any, dict[str, Any]]:
    """What SQLAlchemy's column types do to a time and to each JSON column's value.

    Once per dialect (an engine's lives as long as the engine), not at every
    append; bounded, for processes that open many engines (tests).
    """

    def processor(type_: Any) -> Any:
        convert = type_.dialect_impl(dialect).bind_processor(dialect)
        return convert if convert is not None else (lambda value: value)

    return processor(UtcDateTime()), {key: processor(events.c[key].type) for key in _EVENT_JSON}


class SqlDialect(ABC):
    """The backend-specific pieces of the SQL store."""

    name: ClassVar[str]
    dml_ctes: ClassVar[bool] = False
    """The backend runs INSERT, UPDATE and DELETE inside WITH, so that the store
    can do several of a step's writes in one statement (PostgreSQL)."""
    read_options: ClassVar[Mapping[str, Any]] = {}
    """Execution options of read-only transactions, so that all their statements
    see one snapshot (SQLite's transactions in WAL mode already do)."""

    @abstractmethod
    def configure(self, engine: Engine) -> None:
        """Installs the connection setup of the backend on a new engine."""

    def append(
        self,
        conn: Connection,
        instance_id: str,
        path: Path,
        value: Any,
        now: datetime,
        event_row: Mapping[str, Any],
        measure: bool = False,
        with_values: bool = True,
    ) -> tuple[int, list[Any] | None, int, int] | None:
        """Appends `value` to the list at `path`, revision + 1, in one statement; adds its event.

        Args:
            conn: The connection, in the append's transaction.
            instance_id: The instance.
            path: Object keys from the document's root to the list.
            value: The JSON value to append.
            now: The instance's new update time.
            event_row: The event row's columns but `instance_id` and `revision`.
            measure: Also answer the new document's length in JSON, as the
                database writes it (else 0).
            with_values: Answer the list (else None: it is not sent back).

        Returns:
            The new revision, the list after the append (or None), the list's
            length and the document's; None when no row changed (no such
            instance, or no list at `path`): then no event was added either.
            Other processes hear of the event (`notify`) once the transaction
            commits.
        """
        call = (instance_id, path, value, now, event_row, measure, with_values)
        return self.append_all(conn, [call])[0]

    @abstractmethod
    def append_all(
        self, conn: Connection, appends: Sequence[AppendCall]
    ) -> list[tuple[int, list[Any] | None, int, int] | None]:
        """`append` for each of `appends` (its arguments after `conn`), in order.

        The statements go to the driver itself, without SQLAlchemy's work per
        statement (most of an append's cost in the store); its errors come
        back as SQLAlchemy's, so that retries and the pool see them as usual.
        """

    @staticmethod
    def _driver_error(
        conn: Connection, statement: str, error: Exception, base: type[Exception], broken: bool
    ) -> StatementError:
        """A driver's error as SQLAlchemy's, so that retries and the pool see it as usual.

        `broken`: the connection is unusable; it is invalidated (the pool drops it).
        """
        if broken:
            conn.invalidate(error)
        return DBAPIError.instance(statement, None, error, base, connection_invalidated=broken)

    @abstractmethod
    def insert(self, table: Table) -> Insert:
        """An INSERT of the backend's own kind (it has `on_conflict_do_*`)."""

    def insert_ignore(self, table: Table, keys: Sequence[str]) -> Insert:
        """An INSERT that does nothing when a row with the same `keys` exists."""
        statement: Any = self.insert(table)
        result: Insert = statement.on_conflict_do_nothing(index_elements=list(keys))
        return result

    def upsert(self, table: Table, keys: Sequence[str], replace: Sequence[str]) -> Insert:
        """An INSERT that, when a row with the same `keys` exists, sets its `replace` columns."""
        statement: Any = self.insert(table)
        result: Insert = statement.on_conflict_do_update(
            index_elements=list(keys), set_={name: statement.excluded[name] for name in replace}
        )
        return result

    def lock(self, query: Select[Any]) -> Select[Any]:
        """`query` locking the rows it reads until the transaction ends."""
        return query

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        """`query` locking the rows it reads, skipping rows other transactions hold."""
        return query

    def writing(self) -> AbstractContextManager[object]:
        """Held around each write transaction of this engine (nothing by default)."""
        return contextlib.nullcontext()

    def migration_lock(self, conn: Connection) -> None:  # noqa: B027 (optional hook)
        """Serializes schema migrations of several processes (held until the transaction ends).

        Nothing by default: SQLite's `BEGIN IMMEDIATE` already does.
        """

    @abstractmethod
    def is_transient(self, error: BaseException) -> bool:
        """Whether `error` may go away when the whole transaction is tried again."""

    def notify(  # noqa: B027 (optional hook)
        self, conn: Connection, notices: Sequence[tuple[str, str]]
    ) -> None:
        """Sends (channel, payload) notices to other processes at commit, in one statement.

        Nothing by default.

        SQLite serves one process: its runtime wakes itself.
        """


class SqliteDialect(SqlDialect):
    """SQLite (the sqlite3 driver): one file, one writer at a time, readers alongside (WAL).

    Write transactions start with `BEGIN IMMEDIATE`, taking the write lock
    first, so two writers never deadlock upgrading read locks; a connection
    waits `busy_timeout` for the lock before "database is locked", which is
    then retried like any transient error. Read transactions (execution option
    `flou_write=False`) start with a plain `BEGIN`.

    Writers of one process also queue on a thread lock (`writing`): SQLite's
    busy handler polls with growing sleeps, so a lock it waits for would sit
    free for milliseconds; a thread lock hands over at once. Other processes
    still meet the busy timeout.
    """

    name = "sqlite"

    _SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

    def __init__(self, busy_timeout: float = 5.0, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in self._SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {self._SYNCHRONOUS}, not {synchronous!r}"
            )
        self.busy_timeout_ms = max(0, round(busy_timeout * 1000))
        self.synchronous = synchronous.upper()
        self._writer = threading.Lock()

    def writing(self) -> AbstractContextManager[object]:
        """The process's writers, one at a time."""
        return self._writer

    def configure(self, engine: Engine) -> None:
        """Checks the SQLite version; installs the pragmas and our own BEGIN."""
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: the store needs 3.35 or newer "
                "(RETURNING, json_insert with [#])"
            )
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "begin", self._on_begin)

    def _on_connect(self, dbapi_connection: Any, connection_record: Any) -> None:
        # The driver's own transaction handling off: _on_begin says BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {self.synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @staticmethod
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("flou_write", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    _APPEND_SQL = (
        f"UPDATE {instances.name} "
        "SET document = json_insert(document, :target, json(:value)), "
        "revision = revision + 1, update_time = :now "
        "WHERE id = :id AND json_type(document, :path) = 'array' "
        "RETURNING revision, "
        "CASE WHEN :with_values THEN json_extract(document, :path) END AS items, "
        "json_array_length(document, :path) AS length, "
        "CASE WHEN :measure THEN length(CAST(document AS BLOB)) ELSE 0 END AS size"
    )
    _EVENT_COLUMNS = (
        "instance_id",
        "revision",
        "kind",
        *_EVENT_JSON,
        "request_id",
        "create_time",
        "txn",
    )
    _INSERT_EVENT_SQL = (
        f"INSERT INTO {events.name} ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES ({', '.join(':' + column for column in _EVENT_COLUMNS)})"
    )

    def append_all(
        self, conn: Connection, appends: Sequence[AppendCall]
    ) -> list[tuple[int, list[Any] | None, int, int] | None]:
        """`append` for each of `appends`, in order, on the sqlite3 connection itself.

        Two statements each: the UPDATE (the event needs its revision), then
        the event's INSERT; the transaction holds SQLite's write lock, so
        nothing gets in between. Values are converted by the columns' own
        SQLAlchemy types: the rows are those SQLAlchemy would write.
        """
        when, as_json = _converters(conn.dialect)
        driver: Any = conn.connection.driver_connection
        cursor = driver.cursor()
        rows: list[tuple[int, list[Any] | None, int, int] | None] = []
        try:
            for instance_id, path, value, now, event_row, measure, with_values in appends:
                target = self.json_path(path)
                found = cursor.execute(
                    self._APPEND_SQL,
                    {
                        "id": instance_id,
                        "path": target,
                        "target": target + "[#]",
                        "value": dumps(value),
                        "now": when(now),
                        "measure": measure,
                        "with_values": with_values,
                    },
                ).fetchone()
                if found is None:
                    rows.append(None)
                    continue
                revision, items, length, size = found
                cursor.execute(
                    self._INSERT_EVENT_SQL,
                    {
                        **{key: as_json[key](event_row[key]) for key in _EVENT_JSON},
                        "instance_id": instance_id,
                        "revision": revision,
                        "kind": event_row["kind"],
                        "request_id": event_row["request_id"],
                        "create_time": when(event_row["create_time"]),
                        "txn": event_row["txn"],
                    },
                )
                rows.append((revision, None if items is None else json.loads(items), length, size))
        except sqlite3.Error as exc:
            raise self._driver_error(conn, self._APPEND_SQL, exc, sqlite3.Error, False) from exc
        finally:
            cursor.close()
        return rows

    @staticmethod
    def json_path(path: Path) -> str:
        """The SQLite JSON path of object keys (bound as a parameter, never spliced into SQL).

        SQLite matches a path label against the key's text as the JSON holds
        it, escapes included, so the label is the key escaped the way `dumps`
        writes it: quoted (`."a.b"`), or bare when the key holds a double
        quote (a quoted label ends at the first one; a bare one at `.` or `[`).

        Raises:
            ValueError: A key holds both a double quote and `.` or `[`: no
                SQLite JSON path can name it.
        """
        labels = ["$"]
        for key in path:
            escaped = dumps(key)[1:-1]
            if '"' not in key:
                labels.append(f'."{escaped}"')
            elif "." not in escaped and "[" not in escaped:
                labels.append(f".{escaped}")
            else:
                raise ValueError(f"SQLite JSON paths cannot name the key {key!r}")
        return "".join(labels)

    def insert(self, table: Table) -> Insert:
        """`sqlite.insert` (INSERT ... ON CONFLICT)."""
        return sqlite.insert(table)

    def is_transient(self, error: BaseException) -> bool:
        """A connection invalidated, or SQLITE_BUSY / SQLITE_LOCKED ("database is locked")."""
        if not isinstance(error, DBAPIError):
            return False
        if error.connection_invalidated:
            return True
        orig = error.orig
        if not isinstance(orig, sqlite3.OperationalError):
            return False
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and extended codes)
        message = str(orig).lower()
        return "locked" in message or "busy" in message


class PostgresDialect(SqlDialect):
    """PostgreSQL through psycopg 3, at READ COMMITTED.

    Concurrent writers of one instance row queue on its row lock, and an
    UPDATE re-evaluates its WHERE and SET on the row version it finally gets:
    compare-and-set and the one-statement append need nothing more.
    """

    name = "postgresql"
    dml_ctes = True
    read_options: ClassVar[Mapping[str, Any]] = {"isolation_level": "REPEATABLE READ"}

    # Class 08 connection exception, 53 insufficient resources, 57 operator
    # intervention (admin shutdown, cannot connect now, ...).
    _TRANSIENT_CLASSES = frozenset({"08", "53", "57"})
    _TRANSIENT_STATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
    _MIGRATION_LOCK = 0x666C6F75  # "flou"

    def configure(self, engine: Engine) -> None:
        """Nothing to install: psycopg and SQLAlchemy's defaults fit."""

    _APPEND_SQL = (
        "WITH appended AS ("
        f"UPDATE {instances.name} "
        "SET document = jsonb_set(document, CAST(:path AS text[]), "
        "(document #> CAST(:path AS text[])) || jsonb_build_array(CAST(:value AS jsonb)), "
        "false), "
        "revision = revision + 1, update_time = :now "
        "WHERE id = :id AND jsonb_typeof(document #> CAST(:path AS text[])) = 'array' "
        # Keys name object members only: `#>` would also index into arrays.
        "AND NOT EXISTS (SELECT 1 FROM generate_series(1, cardinality(CAST(:path AS text[]))"
        " - 1) AS depth WHERE jsonb_typeof(document #> (CAST(:path AS text[]))[1:depth])"
        " <> 'object') "
        "RETURNING id, revision, "
        "CASE WHEN :with_values THEN document #> CAST(:path AS text[]) END AS items, "
        "jsonb_array_length(document #> CAST(:path AS text[])) AS length, "
        "CASE WHEN :measure THEN octet_length(CAST(document AS text)) ELSE 0 END AS size), "
        f"event AS (INSERT INTO {events.name} "
        "(instance_id, revision, kind, item, patch, fired, error, rejection, request_id, "
        "create_time, txn) "
        "SELECT id, revision, CAST(:kind AS text), CAST(:item AS jsonb), CAST(:patch AS jsonb), "
        "CAST(:fired AS jsonb), CAST(:error AS jsonb), CAST(:rejection AS jsonb), "
        "CAST(:request_id AS text), CAST(:create_time AS timestamptz), CAST(:txn AS text) "
        "FROM appended) "
        # The notice goes out at commit.
        f"SELECT revision, items, length, size, pg_notify('{EVENTS_CHANNEL}', id) "
        "FROM appended"
    )
    # In psycopg's placeholders, for its own executemany (pipelined: one round trip).
    _APPEND_PIPELINED = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", _APPEND_SQL)

    def append_all(
        self, conn: Connection, appends: Sequence[AppendCall]
    ) -> list[tuple[int, list[Any] | None, int, int] | None]:
        """`append` for each of `appends`, in order, in one round trip (psycopg's pipeline).

        `_APPEND_SQL`, run by psycopg's own `executemany` on the transaction's
        connection: SQLAlchemy would take one round trip and one result
        object per append.
        """
        when, _ = _converters(conn.dialect)
        driver: Any = conn.connection.driver_connection
        params = [
            {
                **{key: _jsonb(event_row[key]) for key in _EVENT_JSON},
                "kind": event_row["kind"],
                "request_id": event_row["request_id"],
                "create_time": when(event_row["create_time"]),
                "txn": event_row["txn"],
                "id": instance_id,
                "path": list(path),
                "value": Jsonb(value),
                "now": when(now),
                "measure": measure,
                "with_values": with_values,
            }
            for instance_id, path, value, now, event_row, measure, with_values in appends
        ]
        try:
            with driver.cursor() as cursor:
                cursor.executemany(self._APPEND_PIPELINED, params, returning=True)
                rows: list[tuple[int, list[Any] | None, int, int] | None] = []
                while True:
                    row = cursor.fetchone()
                    rows.append(None if row is None else (row[0], row[1], row[2], row[3]))
                    if not cursor.nextset():
                        break
        except psycopg.Error as exc:
            broken = bool(driver.broken or driver.closed)
            raise self._driver_error(
                conn, self._APPEND_PIPELINED, exc, psycopg.Error, broken
            ) from exc
        return rows

    def insert(self, table: Table) -> Insert:
        """`postgresql.insert` (INSERT ... ON CONFLICT)."""
        return postgresql.insert(table)

    def lock(self, query: Select[Any]) -> Select[Any]:
        """`FOR UPDATE`."""
        return query.with_for_update()

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        """`FOR UPDATE SKIP LOCKED`."""
        return query.with_for_update(skip_locked=True)

    def notify(self, conn: Connection, notices: Sequence[tuple[str, str]]) -> None:
        """`pg_notify`, once per notice in one SELECT: delivered at commit to every listener."""
        if notices:
            conn.execute(_notify_statement(len(notices)), _notify_params(notices))

    def migration_lock(self, conn: Connection) -> None:
        """A transaction-level advisory lock."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._MIGRATION_LOCK})

    def is_transient(self, error: BaseException) -> bool:
        """Connection lost or refused, SQLSTATE 40001, 40P01 or classes 08, 53, 57."""
        if not isinstance(error, DBAPIError):
            return False
        if error.connection_invalidated:
            return True
        state = getattr(error.orig, "sqlstate", None)
        if isinstance(state, str) and state:
            return state in self._TRANSIENT_STATES or state[:2] in self._TRANSIENT_CLASSES
        # An OperationalError without SQLSTATE never reached the server (refused, reset).
        return isinstance(error, OperationalError)


def open_engine(
    url: str | URL,
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "FULL",
    pool_size: int = 8,
    max_overflow: int = 16,
    echo: bool = False,
) -> tuple[Engine, SqlDialect]:
    """Creates the engine of a SQLite or PostgreSQL URL, set up for the store.

    `postgresql://` URLs use psycopg 3 (`postgresql+psycopg://`). SQLite needs
    a file: every pooled connection must see the same database.

    Args:
        url: A SQLAlchemy URL.
        busy_timeout: SQLite: seconds a connection waits for the write lock
            before "database is locked" (then retried by the store).
        synchronous: SQLite: the `synchronous` pragma (FULL: a commit is on
            disk when it returns).
        pool_size: Connections kept open.
        max_overflow: Connections opened beyond `pool_size` under load.
        echo: Log every statement (SQLAlchemy's `echo`).

    Raises:
        ValueError: The URL names another database, or an in-memory SQLite.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
    dialect: SqlDialect
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError(
                f"{url!s}: an in-memory SQLite database is private to one connection; "
                "use a file, or memory:// for the in-memory store"
            )
        dialect = SqliteDialect(busy_timeout, synchronous)
    elif backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        dialect = PostgresDialect()
        # No pre-ping (a round trip per transaction): a connection found dead
        # is a transient error, and SQLAlchemy then drops the whole pool.
    else:
        raise ValueError(f"{parsed!r}: the store speaks SQLite and PostgreSQL, not {backend}")
    engine = create_engine(parsed, json_serializer=dumps, echo=echo, **pool)
    dialect.configure(engine)
    return engine, dialect
