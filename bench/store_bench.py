"""Durable transitions per second of the Runtime on SQLite and PostgreSQL, against raw SQL.

The machine is a 2-state ping-pong LTM (`a --go--> b`, `b --back--> a`): each
external transition is TWO steps, the transition itself and then the execute
of its target, so steps/s = 2 x transitions/s. The target has no `run`, so
its execute commits in the transition's transaction (chained: an event each).
A "durable transition" is `Runtime.transition(..., wait=PROCESSED)` returning
(its step is committed) before the driver sends the next one; a timed window
ends only once the driven instances have settled, so every step of every
counted transition is inside the window.
Everything runs on the stores' durable defaults (SQLite WAL + synchronous
FULL; PostgreSQL synchronous_commit on), in throwaway databases: a temporary
SQLite file, a uniquely named PostgreSQL database dropped at the end.

Measured, per backend, interleaved run by run so that the ratios compare
figures taken moments apart on this noisy machine:
1. one instance driven sequentially (one driver thread);
2. 64 instances driven by 16 concurrent driver threads, each thread sending to
   its 4 instances in turn, through the one sync `Runtime` (threads, not
   AsyncRuntime + gather: what an embedding application does);
3. the raw baseline: the same database writes, done as plain SQL through
   psycopg / sqlite3 on equivalent tables (created here, `raw_*`), without the
   engine, with the same drivers. Per transition it issues the minimal
   transaction of what the store does when the runtime holds the instance
   (a lease taken once per instance) and the target runs no code: read the
   revision, check that the mailbox is empty, compare-and-set UPDATE of the
   document and revision (fenced by the lease), insert both steps' event
   rows (the transition, then the execute). Same JSON documents,
   items, patches as the runtime writes (taken from its history), same
   pragmas on SQLite, one writer at a time per process on SQLite as the store
   does (a thread lock), autocommit off and a commit per transaction on
   PostgreSQL. Documents are precomputed: the raw figure is database work only.
   Reported as flou / raw.
4. what one transition costs in SQL: statements, transactions and commits that
   changed rows (the ones that wait for the disk), counted with SQLAlchemy
   event listeners over sequential transitions, and the store calls behind
   them; the same counts for the raw baseline; and one durable commit alone
   (a 1-row INSERT + COMMIT), the floor under every figure above.
5. history independence: transitions/s of a block of --block from #10 (a
   fresh instance) and of one from #--late on an aged instance, the two
   interleaved run by run; late/early should be ~1.0. The instance is aged
   by driving it sequentially through the runtime for up to --age-seconds
   (pipelining with wait=ENQUEUED is no shortcut: a transition queued ahead
   of the previous target's execute step is rejected, its source not yet
   active); what the budget does not reach is bulk-loaded: the event rows
   and revision those transitions would leave, written into
   the store's tables through its engine (--no-bulk: start the late block
   where driving stopped). The output says how many were driven and loaded.

    .venv/bin/python bench/store_bench.py [--runs 3] [--seconds 2] [--block 50]
        [--late 10000] [--age-seconds 10] [--no-bulk] [--backends postgresql,sqlite]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]

Default total: about 2-3 minutes on this 2-core machine (both backends).
Prints the median over the runs (the machine is noisy) and every run's figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
from pingpong import PingPong  # bench/ is the script's directory: on sys.path
from serving import postgres_database
from sqlalchemy import event, insert, select, update

from flou_grpc import Runtime, WaitMode
from flou_grpc.engine.document import apply_patch
from flou_grpc.store.schema import events, instances

INSTANCES = 64
DRIVERS = 16
LABELS = ("go", "back")
ACTIVE = ("pingpong.a", "pingpong.b")  # the active leaf after an even / odd number sent


@dataclass
class Driven:
    """One instance a driver sends to; `sent` transitions so far (its parity says the label)."""

    id: str
    sent: int = 0


class Session(Protocol):
    def transition(self, instance: Driven) -> None: ...

    def settle(self, instance: Driven) -> None: ...


class Driver(Protocol):
    label: str

    def new_instance(self) -> Driven: ...

    def session(self) -> contextlib.AbstractContextManager[Session]: ...


# --- flou: the Runtime ------------------------------------------------------------------


class Flou:
    """The sync `Runtime` on a database URL; one session object serves every thread."""

    label = "flou"

    def __init__(self, url: str) -> None:
        self.runtime = Runtime(url, machines=[PingPong])
        store: Any = self.runtime.core.store
        self.counter = SqlCounter(store.engine)

    def close(self) -> None:
        self.runtime.close()

    def new_instance(self) -> Driven:
        instance_id = self.runtime.start("pingpong").id
        self.runtime.settle(instance_id)  # the root's and a's execute steps
        return Driven(instance_id)

    @contextlib.contextmanager
    def session(self) -> Iterator[Flou]:
        yield self

    def transition(self, instance: Driven) -> None:
        self.runtime.transition(instance.id, LABELS[instance.sent % 2], wait=WaitMode.PROCESSED)
        instance.sent += 1

    def settle(self, instance: Driven) -> None:
        active = self.runtime.settle(instance.id, timeout=120).active_states
        expected = ACTIVE[instance.sent % 2]
        if active[-1] != expected:
            raise AssertionError(f"{instance.id}: active {active}, expected {expected}")


# --- raw: the same writes as plain SQL ------------------------------------------------------


@dataclass(frozen=True)
class StepRows:
    """What one committed step writes: the event's JSON columns and the document after it."""

    kind: str
    item: str
    patch: str
    fired: str
    document: str


@dataclass(frozen=True)
class Cycle:
    """The rows of go (transition, execute) then back (transition, execute), as flou wrote them.

    Taken from a flou instance's history, so the raw baseline writes the same bytes.
    """

    start_document: str
    steps: tuple[StepRows, StepRows, StepRows, StepRows]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # compact, as the store writes JSON


def cycle_of(flou: Flou) -> Cycle:
    """The last go/back cycle of a fresh instance driven 4 times."""
    instance = flou.new_instance()
    with flou.session() as session:
        for _ in range(4):
            session.transition(instance)
        session.settle(instance)
    history = flou.runtime.history(instance.id)
    document: dict[str, Any] = {}
    for past in history[:-4]:
        document = apply_patch(document, past.patch)
    start = document
    steps = []
    for step in history[-4:]:
        document = apply_patch(document, step.patch)
        steps.append(
            StepRows(
                str(step.kind.value),
                _dumps(step.item),
                _dumps(step.patch),
                _dumps(step.fired),
                _dumps(document),
            )
        )
    assert document == start, (document, start)  # a full cycle comes back
    assert [s.kind for s in steps] == ["transitioned", "executed"] * 2, steps
    return Cycle(_dumps(start), (steps[0], steps[1], steps[2], steps[3]))


@dataclass
class RawCounts:
    statements: int = 0
    write_transactions: int = 0


_PG_DDL = """
CREATE TABLE raw_instances (
    id text PRIMARY KEY, machine text NOT NULL, revision bigint NOT NULL,
    document jsonb NOT NULL, create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL, lease_owner text NOT NULL DEFAULT '',
    lease_expiry timestamptz);
CREATE INDEX ix_raw_instances_create_time_id ON raw_instances (create_time, id);
CREATE INDEX ix_raw_instances_machine ON raw_instances (machine, create_time, id);
CREATE TABLE raw_work_items (
    seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    instance_id text NOT NULL REFERENCES raw_instances (id) ON DELETE CASCADE,
    id text NOT NULL, item jsonb NOT NULL, request_id text NOT NULL DEFAULT '',
    expected_revision bigint NOT NULL DEFAULT 0);
CREATE INDEX ix_raw_work_items_instance_id_seq ON raw_work_items (instance_id, seq);
CREATE TABLE raw_events (
    instance_id text NOT NULL REFERENCES raw_instances (id) ON DELETE CASCADE,
    revision bigint NOT NULL, kind text NOT NULL, item jsonb NOT NULL, patch jsonb NOT NULL,
    fired jsonb NOT NULL, error jsonb, rejection jsonb, request_id text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL, txn text, PRIMARY KEY (instance_id, revision));
"""

_SQLITE_DDL = """
CREATE TABLE raw_instances (
    id VARCHAR PRIMARY KEY, machine VARCHAR NOT NULL, revision BIGINT NOT NULL,
    document JSON NOT NULL, create_time DATETIME NOT NULL, update_time DATETIME NOT NULL,
    lease_owner VARCHAR NOT NULL DEFAULT '', lease_expiry DATETIME);
CREATE INDEX ix_raw_instances_create_time_id ON raw_instances (create_time, id);
CREATE INDEX ix_raw_instances_machine ON raw_instances (machine, create_time, id);
CREATE TABLE raw_work_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id VARCHAR NOT NULL REFERENCES raw_instances (id) ON DELETE CASCADE,
    id VARCHAR NOT NULL, item JSON NOT NULL, request_id VARCHAR NOT NULL DEFAULT '',
    expected_revision BIGINT NOT NULL DEFAULT 0);
CREATE INDEX ix_raw_work_items_instance_id_seq ON raw_work_items (instance_id, seq);
CREATE TABLE raw_events (
    instance_id VARCHAR NOT NULL REFERENCES raw_instances (id) ON DELETE CASCADE,
    revision BIGINT NOT NULL, kind VARCHAR NOT NULL, item JSON NOT NULL, patch JSON NOT NULL,
    fired JSON NOT NULL, error JSON, rejection JSON, request_id VARCHAR NOT NULL DEFAULT '',
    create_time DATETIME NOT NULL, txn VARCHAR, PRIMARY KEY (instance_id, revision));
"""

# The statements: `?` is a parameter, `?j` a JSON one (jsonb on PostgreSQL), `{lock}`
# FOR UPDATE on PostgreSQL (SQLite's BEGIN IMMEDIATE already holds the write lock).
_CLAIM = (
    "UPDATE raw_instances SET lease_owner = ?, lease_expiry = ? "
    "WHERE id = ? AND (lease_owner = '' OR lease_owner = ? OR lease_expiry <= ?)"
)
_FIRST_WORK = "SELECT seq, id, item FROM raw_work_items WHERE instance_id = ? ORDER BY seq LIMIT 1"
_READ_DOCUMENT = "SELECT revision, document FROM raw_instances WHERE id = ?"
_CAS = (
    "UPDATE raw_instances SET revision = ?, document = ?j, update_time = ? "
    "WHERE id = ? AND revision = ? AND lease_owner = ?"
)
_INSERT_EVENT = (
    "INSERT INTO raw_events (instance_id, revision, kind, item, patch, fired, create_time, txn) "
    "VALUES (?, ?, ?, ?j, ?j, ?j, ?, ?)"
)
_CREATE = (
    "INSERT INTO raw_instances (id, machine, revision, document, create_time, update_time) "
    "VALUES (?, 'pingpong', 1, ?j, ?, ?)"
)


def _dialect(statement: str, postgres: bool) -> str:
    """The statement in psycopg's or sqlite3's form."""
    if postgres:
        return statement.replace("?j", "%s::jsonb").replace("?", "%s").format(lock=" FOR UPDATE")
    return statement.replace("?j", "?").format(lock="")


class RawSession:
    """One connection's transactions, the minimal ones the store's work needs per transition."""

    def __init__(
        self, conn: Any, cycle: Cycle, postgres: bool, writer: threading.Lock, owner: str
    ) -> None:
        self.conn, self.cycle, self.postgres = conn, cycle, postgres
        self.writer, self.owner = writer, owner
        self.counts = RawCounts()
        self._sql: dict[str, str] = {}

    def _time(self, value: datetime) -> Any:
        # SQLite: SQLAlchemy's text form of a naive UTC datetime, as the store writes it.
        return value if self.postgres else value.replace(tzinfo=None).isoformat(" ")

    def _now(self) -> Any:
        return self._time(datetime.now(UTC))

    def _execute(self, statement: str, params: Sequence[Any]) -> Any:
        self.counts.statements += 1
        text = self._sql.get(statement)
        if text is None:
            text = self._sql[statement] = _dialect(statement, self.postgres)
        return self.conn.execute(text, params)

    def _write(self, body: Callable[[], Any]) -> Any:
        self.counts.write_transactions += 1
        if self.postgres:
            try:
                result = body()
            except BaseException:
                self.conn.rollback()
                raise
            self.conn.commit()
            return result
        with self.writer:  # the store's thread lock: one writer of this process at a time
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = body()
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return result

    def create(self, instance_id: str) -> None:
        now = self._now()

        def body() -> None:
            self._execute(_CREATE, (instance_id, self.cycle.start_document, now, now))

        self._write(body)

    def transition(self, instance: Driven) -> None:
        if instance.sent == 0:  # the instance's lease, once: held from then on, as flou's worker
            now = datetime.now(UTC)
            expiry = self._time(now + timedelta(seconds=3600))
            claim = (self.owner, expiry, instance.id, self.owner, self._time(now))
            if self._write(lambda: self._execute(_CLAIM, claim).rowcount) != 1:
                raise AssertionError(f"{instance.id}: the claim changed no row")
        first = 2 * (instance.sent % 2)  # the cycle's rows of this label: go 0-1, back 2-3
        self._write(lambda: self._steps(instance.id, first))
        instance.sent += 1

    def _steps(self, instance_id: str, first: int) -> None:
        """The transition and its target's execute: one transaction, an event each."""
        revision = self._execute(_READ_DOCUMENT, (instance_id,)).fetchone()[0]
        if self._execute(_FIRST_WORK, (instance_id,)).fetchone() is not None:
            raise AssertionError(f"{instance_id}: work queued")  # nothing may go first
        steps = self.cycle.steps[first : first + 2]
        now = self._now()
        cas = (revision + 2, steps[-1].document, now, instance_id, revision, self.owner)
        if self._execute(_CAS, cas).rowcount != 1:
            raise AssertionError(f"{instance_id}: compare-and-set changed no row")
        for n, rows in enumerate(steps, 1):
            txn = uuid.uuid4().hex if n == 1 else None
            event = (rows.kind, rows.item, rows.patch, rows.fired, now, txn)
            self._execute(_INSERT_EVENT, (instance_id, revision + n, *event))

    def settle(self, instance: Driven) -> None:
        """Nothing is ever pending: each raw transition commits both of its steps."""


class Raw:
    """The raw baseline on one database: psycopg (PostgreSQL) or sqlite3 (SQLite)."""

    label = "raw"

    def __init__(self, conninfo: str | None, sqlite_path: Path | None, cycle: Cycle) -> None:
        self.conninfo, self.sqlite_path, self.cycle = conninfo, sqlite_path, cycle
        self.postgres = conninfo is not None
        self.writer = threading.Lock()
        self.owner = f"raw:{uuid.uuid4().hex[:8]}"
        with self._connect() as conn:
            if self.postgres:
                conn.execute(_PG_DDL)
                conn.commit()
            else:
                conn.executescript(_SQLITE_DDL)

    def _connect(self) -> Any:
        if self.conninfo is not None:
            return contextlib.closing(psycopg.connect(self.conninfo))
        assert self.sqlite_path is not None
        conn = sqlite3.connect(self.sqlite_path, isolation_level=None, check_same_thread=False)
        # The store's pragmas (flou_grpc.store.dialects.SqliteDialect._on_connect).
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return contextlib.closing(conn)

    @contextlib.contextmanager
    def session(self) -> Iterator[RawSession]:
        with self._connect() as conn:
            yield RawSession(conn, self.cycle, self.postgres, self.writer, self.owner)

    def new_instance(self) -> Driven:
        instance = Driven(f"raw-{uuid.uuid4()}")
        with self.session() as session:
            session.create(instance.id)
        return instance


# --- measurements ---------------------------------------------------------------------


def sequential(driver: Driver, instance: Driven, seconds: float) -> float:
    """One instance, one driver, for `seconds` (then settled); returns transitions/s."""
    with driver.session() as session:
        session.transition(instance)  # warm up the connection
        session.settle(instance)
        sent = 0
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            session.transition(instance)
            sent += 1
        session.settle(instance)
        return sent / (time.perf_counter() - began)


def concurrent(driver: Driver, instances: Sequence[Driven], seconds: float) -> float:
    """`DRIVERS` threads, each sending to its share of `instances` in turn; transitions/s.

    Each thread settles its instances before it stops: the window closes when
    the last one has.
    """
    window: list[float] = []
    barrier = threading.Barrier(DRIVERS, action=lambda: window.append(time.perf_counter()))
    sent = [0] * DRIVERS
    failures: list[BaseException] = []

    def drive(number: int) -> None:
        mine = instances[number::DRIVERS]
        try:
            with driver.session() as session:
                for instance in mine:  # warm up the connection
                    session.transition(instance)
                for instance in mine:
                    session.settle(instance)
                barrier.wait()
                deadline = window[0] + seconds
                while time.perf_counter() < deadline:
                    for instance in mine:
                        session.transition(instance)
                        sent[number] += 1
                for instance in mine:
                    session.settle(instance)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=drive, args=(n,)) for n in range(DRIVERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise next(
            (f for f in failures if not isinstance(f, threading.BrokenBarrierError)), failures[0]
        )
    return sum(sent) / (time.perf_counter() - window[0])


def block_rate(driver: Flou, instance: Driven, count: int) -> float:
    """`count` sequential transitions, settled; transitions/s."""
    began = time.perf_counter()
    for _ in range(count):
        driver.transition(instance)
    driver.settle(instance)
    return count / (time.perf_counter() - began)


def age(driver: Flou, instance: Driven, target: int, budget: float) -> float:
    """Drives `instance` sequentially until `target` were sent or `budget` s passed."""
    began = time.perf_counter()
    while instance.sent < target and time.perf_counter() - began < budget:
        for _ in range(min(50, target - instance.sent)):
            driver.transition(instance)
    driver.settle(instance)
    return time.perf_counter() - began


def bulk_history(flou: Flou, instance: Driven, cycle: Cycle, transitions: int) -> float:
    """Writes the rows `transitions` more (an even number) would leave in the store; seconds.

    In the store's own tables, through its engine, in one transaction per 1,000
    transitions: each step's event row (the cycle's, revisions renumbered) and
    the instance at the final revision (an even number of transitions leaves
    the document as it is). No work item: a transition handed to the worker,
    with its target's execute chained to it, never enters the mailbox. The
    instance must be settled.
    """
    assert transitions % 2 == 0, transitions
    steps = [
        {
            "kind": rows.kind,
            "item": json.loads(rows.item),
            "patch": json.loads(rows.patch),
            "fired": json.loads(rows.fired),
        }
        for rows in cycle.steps
    ]
    store: Any = flou.runtime.core.store
    engine = store.engine
    began = time.perf_counter()
    left = transitions
    while left:
        chunk = min(1000, left)
        with engine.begin() as conn:
            revision = conn.execute(
                select(instances.c.revision).where(instances.c.id == instance.id)
            ).scalar_one()
            now = datetime.now(UTC)
            event_rows = []
            for n in range(2 * chunk):
                event_rows.append(
                    {
                        **steps[n % 4],
                        "instance_id": instance.id,
                        "revision": revision + 1 + n,
                        "error": None,
                        "rejection": None,
                        "request_id": "",
                        "create_time": now,
                        "txn": uuid.uuid4().hex,
                    }
                )
            conn.execute(insert(events), event_rows)
            moved = conn.execute(
                update(instances)
                .where(instances.c.id == instance.id, instances.c.revision == revision)
                .values(revision=revision + 2 * chunk, update_time=now)
            ).rowcount
            assert moved == 1, moved
        left -= chunk
        instance.sent += chunk
    return time.perf_counter() - began


@dataclass
class SqlCounts:
    """What the store's engine did, per SQLAlchemy events."""

    statements: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    commits: int = 0
    changing_commits: int = 0
    rollbacks: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    call_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    seconds: float = 0.0


def _outer_from(flat: str) -> str:
    """What follows the outermost FROM of a SELECT (not one of its subqueries')."""
    depth = 0
    for n, char in enumerate(flat):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and flat.startswith(" FROM ", n):
            return flat[n + 6 :]
    return ""


def _kind(statement: str) -> str:
    """A statement's verb and table: `UPDATE flou_instances`, `SELECT FOR UPDATE flou_...`."""
    flat = " ".join(statement.split())
    words = flat.split(" ")
    head = words[0].upper()
    if head == "BEGIN":
        return flat.upper()
    if head == "WITH":  # writes inside WITH: `WITH (UPDATE flou_instances + INSERT flou_events)`
        writes = re.findall(r"(INSERT INTO|UPDATE|DELETE FROM) (\w+)", flat)
        return "WITH (" + " + ".join(f"{verb.split()[0]} {table}" for verb, table in writes) + ")"
    if head == "SELECT" and " FROM " not in flat:  # a function: SELECT pg_notify(...)
        table = words[1].split("(", 1)[0] if len(words) > 1 else ""
    elif head == "SELECT":
        table = _outer_from(flat).split(" ", 1)[0]
        if "LEFT OUTER JOIN" in _outer_from(flat):
            table += " + mailbox (snapshot)"
        elif flat.startswith("SELECT EXISTS (SELECT"):
            notify = " + pg_notify" if "pg_notify" in flat else ""
            table = f"mailbox + errors empty?{notify} (step alone)"
        elif "EXISTS (SELECT" in flat:
            table += " (claimable)"
        if "FOR UPDATE" in flat:
            head = "SELECT FOR UPDATE"
    else:
        table = next((w for w in words[1:4] if w.startswith(("flou_", "raw_"))), "")
    return f"{head} {table}".strip()


class SqlCounter:
    """Counts the store engine's statements and transactions while `active`.

    Installed once, before the runtime does anything: SQLAlchemy's listener
    lists must not change while other threads run statements.
    """

    def __init__(self, engine: Any) -> None:
        self.sqlite = engine.dialect.name == "sqlite"
        self.active = False
        self.counts = SqlCounts()
        self.lock = threading.Lock()
        event.listen(engine, "begin", self.on_begin)
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)
        event.listen(engine, "commit", self.on_commit)
        event.listen(engine, "rollback", self.on_rollback)

    def on_begin(self, conn: Any) -> None:
        if not self.active:
            return
        conn.info["bench_dirty"] = False
        if self.sqlite:
            conn.info["bench_changes"] = conn.connection.dbapi_connection.total_changes
        with self.lock:
            self.counts.transactions += 1

    def before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.active:
            with self.lock:
                self.counts.statements[_kind(statement)] += 1

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.active or self.sqlite:
            return
        flat = " ".join(statement.split()).upper()
        writes = flat[:6] in ("INSERT", "UPDATE", "DELETE") or (
            flat.startswith("WITH ")  # PostgreSQL steps write inside WITH
            and re.search(r"(INSERT INTO|UPDATE|DELETE FROM) \w", flat) is not None
        )
        if writes and cursor.rowcount != 0:
            conn.info["bench_dirty"] = True

    def on_commit(self, conn: Any) -> None:
        if not self.active:
            return
        dirty = conn.info.pop("bench_dirty", False)
        if self.sqlite:
            total = conn.connection.dbapi_connection.total_changes
            dirty = total != conn.info.pop("bench_changes", total)
        with self.lock:
            self.counts.commits += 1
            self.counts.changing_commits += bool(dirty)

    def on_rollback(self, conn: Any) -> None:
        if self.active:
            with self.lock:
                self.counts.rollbacks += 1


@contextlib.contextmanager
def counting(flou: Flou) -> Iterator[SqlCounts]:
    """Counts statements and transactions (`flou.counter`), and the store calls and their time."""
    store: Any = flou.runtime.core.store
    counter = flou.counter
    counts = counter.counts = SqlCounts()
    wrapped = []
    for name in dir(type(store)):
        method = getattr(store, name, None)
        if name.startswith("_") or name == "close" or not callable(method):
            continue

        def call(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                with counter.lock:
                    counts.calls[_name] += 1
                    counts.call_seconds[_name] += time.perf_counter() - began

        setattr(store, name, call)  # an instance attribute: the runtime looks it up per call
        wrapped.append(name)
    counter.active = True
    try:
        yield counts
    finally:
        counter.active = False
        for name in wrapped:
            delattr(store, name)


def durable_commits(driver: Raw, seconds: float = 0.5) -> float:
    """1-row INSERT + COMMIT in a loop, on the raw connection: commits/s (the disk's floor)."""
    with driver._connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_floor (v int)")
        if driver.postgres:
            conn.commit()
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            if driver.postgres:
                conn.execute("INSERT INTO raw_floor VALUES (1)")
                conn.commit()
            else:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO raw_floor VALUES (1)")
                conn.execute("COMMIT")
            done += 1
        return done / (time.perf_counter() - began)


# --- the backends ---------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    flou_url: str
    raw_conninfo: str | None
    raw_sqlite: Path | None
    settings: str


@contextlib.contextmanager
def postgres(admin: str) -> Iterator[Backend]:
    """A uniquely named throwaway database, dropped at the end."""
    with postgres_database(admin, "flou_store_bench") as made:
        settings = (
            f"PostgreSQL {made.settings['server_version']}, synchronous_commit "
            f"{made.settings['synchronous_commit']}, fsync {made.settings['fsync']}"
        )
        yield Backend("postgresql", made.url, made.conninfo, None, settings)


@contextlib.contextmanager
def sqlite_files() -> Iterator[Backend]:
    """Two files in a temporary directory: the store's and the raw baseline's."""
    with tempfile.TemporaryDirectory(prefix="flou-store-bench-") as directory:
        path = Path(directory)
        settings = f"SQLite {sqlite3.sqlite_version}, WAL, synchronous FULL"
        yield Backend("sqlite", f"sqlite:///{path / 'flou.db'}", None, path / "raw.db", settings)


# --- the report -----------------------------------------------------------------------


def _runs(values: Sequence[float], spec: str = ".0f") -> str:
    return ", ".join(format(v, spec) for v in values)


@dataclass
class Results:
    backend: str
    settings: str = ""
    floor: float = 0.0
    flou_seq: list[float] = field(default_factory=list)
    raw_seq: list[float] = field(default_factory=list)
    flou_conc: list[float] = field(default_factory=list)
    raw_conc: list[float] = field(default_factory=list)
    early: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    late_start: int = 0
    driven: int = 0
    aging_seconds: float = 0.0
    bulk_seconds: float = 0.0
    counts: SqlCounts = field(default_factory=SqlCounts)
    counted: int = 0
    raw_counts: RawCounts = field(default_factory=RawCounts)


def measure(backend: Backend, args: argparse.Namespace) -> Results:
    results = Results(backend.name, backend.settings)
    flou = Flou(backend.flou_url)
    try:
        cycle = cycle_of(flou)
        raw = Raw(backend.raw_conninfo, backend.raw_sqlite, cycle)
        results.floor = durable_commits(raw)

        # What one transition costs, counted (untimed).
        counted = flou.new_instance()
        flou.transition(counted)
        flou.settle(counted)
        with counting(flou) as counts:
            began = time.perf_counter()
            for _ in range(args.count):
                flou.transition(counted)
            flou.settle(counted)
            counts.seconds = time.perf_counter() - began
        results.counts, results.counted = counts, args.count
        raw_counted = raw.new_instance()
        with raw.session() as session:
            session.transition(raw_counted)
            session.counts = RawCounts()
            for _ in range(args.count):
                session.transition(raw_counted)
            results.raw_counts = session.counts

        flou_many = [flou.new_instance() for _ in range(INSTANCES)]
        raw_many = [raw.new_instance() for _ in range(INSTANCES)]
        for _ in range(args.runs):  # flou and raw interleaved: the ratios compare neighbours
            results.flou_seq.append(sequential(flou, flou.new_instance(), args.seconds))
            results.raw_seq.append(sequential(raw, raw.new_instance(), args.seconds))
            results.flou_conc.append(concurrent(flou, flou_many, args.seconds))
            results.raw_conc.append(concurrent(raw, raw_many, args.seconds))

        # History independence: age one instance, then early and late blocks interleaved.
        old = flou.new_instance()
        results.aging_seconds = age(flou, old, args.late - 10, args.age_seconds)
        results.driven = old.sent
        missing = args.late - 10 - old.sent
        if args.bulk and missing > 0:
            results.bulk_seconds = bulk_history(flou, old, cycle, missing + missing % 2)
        for _ in range(10):  # as before the early block
            flou.transition(old)
        flou.settle(old)
        results.late_start = old.sent
        for _ in range(args.runs):
            fresh = flou.new_instance()
            for _ in range(10):
                flou.transition(fresh)
            flou.settle(fresh)
            results.early.append(block_rate(flou, fresh, args.block))
            results.late.append(block_rate(flou, old, args.block))
    finally:
        flou.close()
    return results


def report(results: Results, args: argparse.Namespace) -> None:
    b = results.backend
    print(f"== {b}: {results.settings}")
    print(
        f"{b}, one durable commit alone (1-row INSERT + COMMIT): "
        f"{results.floor:.0f} commits/s ({1000 / results.floor:.2f} ms each)"
    )
    for label, flou, raw in (
        ("1 instance, sequential  ", results.flou_seq, results.raw_seq),
        (f"{INSTANCES} instances, {DRIVERS} drivers", results.flou_conc, results.raw_conc),
    ):
        ratios = [f / r for f, r in zip(flou, raw, strict=True)]
        flou_median = statistics.median(flou)
        print(
            f"{b}, {label}: flou median {flou_median:6.0f} transitions/s "
            f"({2 * flou_median:.0f} steps/s) (runs: {_runs(flou)})"
        )
        print(
            f"{b}, {label}: raw  median {statistics.median(raw):6.0f} transitions/s "
            f"(runs: {_runs(raw)}); flou/raw median {statistics.median(ratios):.3f} "
            f"(per run: {_runs(ratios, '.3f')})"
        )
    counts, n = results.counts, results.counted
    statements = {k: v for k, v in counts.statements.items() if not k.startswith("BEGIN")}
    begins = {k: v for k, v in counts.statements.items() if k.startswith("BEGIN")}
    print(
        f"{b}, per transition, flou (over {n} sequential): "
        f"{sum(statements.values()) / n:.2f} statements (BEGIN/COMMIT not counted), "
        f"{counts.transactions / n:.2f} transactions, {counts.commits / n:.2f} commits "
        f"({counts.changing_commits / n:.2f} changed rows, i.e. waited for the disk), "
        f"{counts.rollbacks / n:.2f} rollbacks"
    )
    if begins:
        print(f"    {', '.join(f'{v / n:.2f} {k}' for k, v in sorted(begins.items()))}")
    print(
        "    statements: "
        + ", ".join(
            f"{v / n:.2f} {k}" for k, v in counts.statements.most_common() if k in statements
        )
    )
    print(
        f"    store calls ({n / counts.seconds:.0f} transitions/s while counted; a call's mean "
        "time inside its thread, the dispatcher's overlapping the worker's): "
        + ", ".join(
            f"{v / n:.2f} {k} x {1000 * counts.call_seconds[k] / v:.2f} ms"
            for k, v in counts.calls.most_common()
        )
    )
    rawc = results.raw_counts
    print(
        f"{b}, per transition, raw  (over {n} sequential): {rawc.statements / n:.2f} statements, "
        f"{rawc.write_transactions / n:.2f} transactions, all commits that changed rows"
    )
    loaded = results.late_start - 10 - results.driven
    aged = f"{results.driven + 10:,} driven in {results.aging_seconds:.0f} s"
    if loaded:
        aged += f" + {loaded:,} bulk-loaded in {results.bulk_seconds:.1f} s"
    age_ratio = [late / early for early, late in zip(results.early, results.late, strict=True)]
    print(
        f"{b}, history: {args.block} transitions from #10: median "
        f"{statistics.median(results.early):.0f}/s (runs: {_runs(results.early)}); "
        f"from #{results.late_start:,} ({aged}): "
        f"median {statistics.median(results.late):.0f}/s (runs: {_runs(results.late)}); "
        f"late/early {statistics.median(results.late) / statistics.median(results.early):.3f} "
        f"(per run: {_runs(age_ratio, '.3f')})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput window")
    parser.add_argument("--count", type=int, default=50, help="transitions counted in SQL")
    parser.add_argument("--block", type=int, default=50, help="history: transitions per block")
    parser.add_argument("--late", type=int, default=10_000, help="history: the late block's start")
    parser.add_argument(
        "--age-seconds", type=float, default=10.0, help="history: the most spent driving to --late"
    )
    parser.add_argument(
        "--no-bulk",
        dest="bulk",
        action="store_false",
        help="history: start the late block where driving stopped, without bulk-loading the rest",
    )
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if unknown := set(backends) - {"postgresql", "sqlite"}:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    print(
        f"ping-pong LTM: 1 transition = 2 steps (transition, execute); {args.runs} runs of "
        f"{args.seconds:g} s per figure; {DRIVERS} driver threads on one sync Runtime"
    )
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the start {load} ({cpus} CPUs): other work on the machine skews all")
    results: list[Results] = []
    began = time.perf_counter()
    for name in backends:
        opened = postgres(args.pg_admin) if name == "postgresql" else sqlite_files()
        with opened as backend:
            results.append(measure(backend, args))
        report(results[-1], args)
    for result in results:
        if result.backend != "postgresql":
            continue
        rate = statistics.median(result.flou_seq)
        ratio = statistics.median(
            f / r for f, r in zip(result.flou_seq, result.raw_seq, strict=True)
        )
        print(
            f"target, PostgreSQL, 1 instance sequential: >= 1,000 transitions/s: "
            f"{'met' if rate >= 1000 else 'NOT met'} ({rate:.0f}/s); >= 40% of raw: "
            f"{'met' if ratio >= 0.4 else 'NOT met'} ({ratio:.1%})"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"total {time.perf_counter() - began:.0f} s; load average at the end {load} ({cpus} CPUs)"
    )


if __name__ == "__main__":
    main()
