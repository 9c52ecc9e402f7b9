"""`SqlStore`: the durable store, on SQLAlchemy Core (SQLite and PostgreSQL).

Every public operation is one transaction, a function of a connection that
`flou_grpc.store.retry` runs again from scratch on a transient error. Writes
never read, change in Python, then write back:
- `commit` is a compare-and-set on the revision (and, when fenced, the lease
  owner): `UPDATE ... WHERE id = :id AND revision = :rev`; only when no row
  changed does a read find out why (conflict, lease lost, no instance).
- `append` is one UPDATE of the backend's JSON functions (see
  `flou_grpc.store.dialects`), guarded to change nothing unless the path holds
  a list; the event row is inserted in the same transaction (on PostgreSQL
  by the same statement, so the row lock is held for one round trip).
- work items get their `seq` from the database (an identity column); an
  enqueue first locks the instance row, so items become visible in `seq`
  order per instance.

A retried write could find that its earlier attempt did commit, its answer lost
with the connection: `create`, `commit` and `append` write a per-call token in
their event row and look for it before writing again, so a lost answer does
not apply a step twice. An `enqueue` retried after a lost answer may queue its
items twice (callers for whom that matters pass request ids).

Opening a store upgrades an empty database to the newest schema
(`flou_grpc.store.migrations`).
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Row,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from flou_grpc.engine.document import JsonObject, Path, append_op, json_type, pointer
from flou_grpc.engine.work import from_json, to_json
from flou_grpc.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LimitExceededError,
    RevisionConflictError,
)
from flou_grpc.store import migrations
from flou_grpc.store.base import (
    EVENTS_CHANNEL,
    RECONNECTED,
    WORK_CHANNEL,
    LeaseLostError,
    MailboxNotEmptyError,
)
from flou_grpc.store.dialects import open_engine
from flou_grpc.store.records import (
    Appended,
    AppendRecord,
    ErrorRecord,
    EventRecord,
    InstanceRecord,
    RequestRecord,
    Snapshot,
    WorkRecord,
    utcnow,
)
from flou_grpc.store.retry import RetryPolicy, run_retrying
from flou_grpc.store.schema import appends, errors, events, instances, requests, work_items

_log = logging.getLogger("flou_grpc.store")

__all__ = ["SqlStore"]

T = TypeVar("T")
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

_INSTANCE_COLUMNS = (
    instances.c.id,
    instances.c.machine,
    instances.c.revision,
    instances.c.document,
    instances.c.create_time,
    instances.c.update_time,
)

_APPEND_TRIES = 3
"""Appends tried within one transaction when the guard failed but a list is there."""


def _token() -> str:
    return uuid.uuid4().hex


def _instance(row: AnyRow) -> InstanceRecord:
    return InstanceRecord(
        id=row.id,
        machine=row.machine,
        revision=row.revision,
        document=row.document,
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _work(row: AnyRow) -> WorkRecord:
    return WorkRecord(
        id=row.id,
        item=from_json(row.item),
        request_id=row.request_id,
        expected_revision=row.expected_revision,
        seq=row.seq,
    )


def _next_work(row: AnyRow) -> WorkRecord | None:
    """The mailbox's first item from a `_SNAPSHOT` row (its columns prefixed `w_`)."""
    if row.w_id is None:
        return None
    return WorkRecord(
        id=row.w_id,
        item=from_json(row.w_item),
        request_id=row.w_request_id,
        expected_revision=row.w_expected_revision,
        seq=row.w_seq,
    )


def _event(row: AnyRow) -> EventRecord:
    return EventRecord(
        instance_id=row.instance_id,
        revision=row.revision,
        kind=row.kind,
        item=row.item,
        patch=row.patch,
        fired=row.fired,
        error=row.error,
        rejection=row.rejection,
        request_id=row.request_id,
        create_time=row.create_time,
    )


def _request(row: AnyRow) -> RequestRecord:
    return RequestRecord(row.request_id, row.fingerprint, row.response)


def _error(row: AnyRow) -> ErrorRecord:
    return ErrorRecord(
        work_item_id=row.work_item_id,
        fqn=row.fqn,
        type=row.type,
        message=row.message,
        traceback=row.traceback,
        attempts=row.attempts,
        retrying=row.retrying,
        item=None if row.item is None else from_json(row.item),
        update_time=row.update_time,
    )


# --- statements -------------------------------------------------------------------------
# Built once: a call binds parameters only. Parameters of UPDATE and DELETE
# statements are named b_* (SQLAlchemy reserves column names there).

_SELECT_INSTANCE = select(*_INSTANCE_COLUMNS).where(instances.c.id == bindparam("id"))
_SELECT_INSTANCE_ROW = select(*_INSTANCE_COLUMNS, instances.c.lease_owner).where(
    instances.c.id == bindparam("id")
)
_SELECT_DOCUMENT = select(instances.c.document).where(instances.c.id == bindparam("id"))
_INSTANCE_EXISTS = select(exists().where(instances.c.id == bindparam("id")))
_LIST_INSTANCES = select(*_INSTANCE_COLUMNS).order_by(
    instances.c.create_time.desc(), instances.c.id.desc()
)
_LIST_MACHINE = _LIST_INSTANCES.where(instances.c.machine == bindparam("machine"))

_COMMIT = (
    update(instances)
    .where(instances.c.id == bindparam("b_id"), instances.c.revision == bindparam("b_revision"))
    .values(
        revision=bindparam("b_next"),
        document=bindparam("b_document"),
        update_time=bindparam("b_now"),
    )
    .returning(instances.c.machine, instances.c.create_time)
)
_COMMIT_FENCED = _COMMIT.where(instances.c.lease_owner == bindparam("b_owner"))

_INSERT_EVENT = insert(events)
_EVENT_OF_CALL = select(events.c.revision).where(
    events.c.instance_id == bindparam("id"), events.c.txn == bindparam("txn")
)
_SELECT_EVENTS = (
    select(events)
    .where(events.c.instance_id == bindparam("id"), events.c.revision >= bindparam("start"))
    .order_by(events.c.revision)
)
_OLDEST_EVENT = select(func.min(events.c.revision)).where(events.c.instance_id == bindparam("id"))

_INSERT_WORK = insert(work_items).returning(work_items.c.seq, sort_by_parameter_order=True)
_SELECT_PENDING = (
    select(work_items)
    .where(work_items.c.instance_id == bindparam("id"))
    .order_by(work_items.c.seq)
)


def _snapshot_query(*columns: Any) -> Any:
    """One statement for a `Snapshot`: `columns` of the instance and the rest.

    The rest: the mailbox's size and first item (`w_*` columns, NULL when
    empty), and whether any error is kept. Items of `seq` <= `:after` are
    known to be gone: bounding the index scan by it skips the dead index
    entries a busy mailbox leaves until vacuum.
    """
    queued = work_items.alias("queued")  # the mailbox, apart from its first item's join
    first_seq = (
        select(func.min(queued.c.seq))
        .where(queued.c.instance_id == instances.c.id, queued.c.seq > bindparam("after"))
        .correlate(instances)
        .scalar_subquery()
    )
    pending = (
        select(func.count())
        .select_from(queued)
        .where(queued.c.instance_id == instances.c.id, queued.c.seq > bindparam("after"))
        .correlate(instances)
        .scalar_subquery()
        .label("pending")
    )
    failed = exists().where(errors.c.instance_id == instances.c.id).label("failed")
    return (
        select(
            *columns,
            pending,
            failed,
            *(c.label(f"w_{c.name}") for c in work_items.c if c.name != "instance_id"),
        )
        .select_from(
            instances.outerjoin(
                work_items,
                (work_items.c.instance_id == instances.c.id) & (work_items.c.seq == first_seq),
            )
        )
        .where(instances.c.id == bindparam("id"))
    )


_DELETE_WORK = (
    delete(work_items)
    .where(
        work_items.c.instance_id == bindparam("b_id"), work_items.c.id == bindparam("b_work_id")
    )
    .returning(work_items.c.seq)
)

_HEAD = _snapshot_query(*_INSTANCE_COLUMNS)
_AFTER_COMMIT = _snapshot_query()

_SELECT_ERRORS = (
    select(errors)
    .where(errors.c.instance_id == bindparam("id"))
    .order_by(errors.c.create_time, errors.c.work_item_id)
)
_DELETE_ERROR = delete(errors).where(
    errors.c.instance_id == bindparam("b_id"), errors.c.work_item_id == bindparam("b_work_id")
)

# A step in fewer round trips, where the backend runs INSERT/UPDATE/DELETE inside WITH
# (PostgreSQL: `SqlDialect.dml_ctes`). Each statement is a round trip and about 0.2 ms of
# client CPU, so these take a step from 6 or 7 statements to 2 or 3.
_EVENT_FIELDS: tuple[str, ...] = ("kind", "item", "patch", "fired", "error", "rejection")
_EVENT_FIELDS += ("request_id", "create_time", "txn")


@functools.cache
def _commit_with_writes(fenced: bool, done: bool, resolved: bool, chained: int = 0) -> Any:
    """A step's writes but new work, in one statement (`e_*` parameters: the event's columns).

    The compare-and-set (fenced by the lease owner), the insert of its event
    (and of `chained` more, parameters `e1_*`, `e2_*`...), and with `done` the
    delete of the done item (column `done_seq`: NULL when it was not there)
    and, with `resolved`, of its kept error. The deletes run even when the
    compare-and-set matched nothing: the store then raises, and the
    transaction rolls back.
    """
    compare_and_set = _COMMIT_FENCED if fenced else _COMMIT
    committed = compare_and_set.returning(instances.c.id, instances.c.revision).cte("committed")
    ctes = [
        insert(events)
        .from_select(
            ["instance_id", "revision", *_EVENT_FIELDS],
            select(
                committed.c.id,
                bindparam(f"{prefix}revision", type_=events.c.revision.type),
                *(
                    bindparam(f"{prefix}{name}", type_=events.c[name].type)
                    for name in _EVENT_FIELDS
                ),
            ),
        )
        .cte(f"event{n}")
        for n, prefix in enumerate(_event_prefixes(chained))
    ]
    columns = [committed.c.machine, committed.c.create_time]
    if done:
        gone = _DELETE_WORK.cte("done")
        columns.append(select(gone.c.seq).scalar_subquery().label("done_seq"))
        if resolved:
            ctes.append(_DELETE_ERROR.cte("resolved"))
    return select(*columns).add_cte(*ctes)


def _event_prefixes(chained: int) -> list[str]:
    """The parameter prefixes of a step's event and its `chained` ones."""
    return ["e_", *(f"e{n}_" for n in range(1, chained + 1))]


def _after_commit_notifying(*channels: str) -> Any:
    """The snapshot after a commit, sending `pg_notify(channel, :id)` for each channel too."""
    return _AFTER_COMMIT.add_columns(
        *(func.pg_notify(literal(channel), bindparam("id")) for channel in channels)
    )


_locked = (
    select(instances.c.id)
    .where(instances.c.id == bindparam("instance_id"))
    .with_for_update()
    .cte("locked")
)
_ENQUEUE_ONE = (
    insert(work_items)
    .from_select(
        ["instance_id", "id", "item", "request_id", "expected_revision"],
        select(
            _locked.c.id,
            bindparam("id", type_=work_items.c.id.type),
            bindparam("item", type_=work_items.c.item.type),
            bindparam("request_id", type_=work_items.c.request_id.type),
            bindparam("expected_revision", type_=work_items.c.expected_revision.type),
        ),
    )
    .returning(work_items.c.seq, func.pg_notify(literal(WORK_CHANNEL), work_items.c.instance_id))
)
"""One item into the mailbox of an existing instance, row-locked, announced: one statement."""

_AFTER_COMMIT_NOTIFYING = {
    False: _after_commit_notifying(EVENTS_CHANNEL),
    True: _after_commit_notifying(EVENTS_CHANNEL, WORK_CHANNEL),
}


def _alone_notifying(*channels: str) -> Any:
    """Whether work is queued and errors kept, sending `pg_notify(channel, :id)` for each.

    For a step that must find the mailbox empty: then its new work is the
    whole mailbox, and the snapshot needs no read.
    """
    return select(
        exists().where(work_items.c.instance_id == bindparam("id")).label("queued"),
        exists().where(errors.c.instance_id == bindparam("id")).label("failed"),
        *(func.pg_notify(literal(channel), bindparam("id")) for channel in channels),
    )


_ALONE = _alone_notifying()
_ALONE_NOTIFYING = {
    False: _alone_notifying(EVENTS_CHANNEL),
    True: _alone_notifying(EVENTS_CHANNEL, WORK_CHANNEL),
}

_SELECT_REQUEST = select(requests).where(requests.c.request_id == bindparam("id"))

_SELECT_APPEND = select(appends.c.result, appends.c.revision).where(
    appends.c.key == bindparam("key")
)
_FILL_APPEND = (
    update(appends)
    .where(appends.c.key == bindparam("b_key"))
    .values(revision=bindparam("b_revision"), result=bindparam("b_result"))
)

_CLAIMABLE = (
    select(instances.c.id)
    .where(
        exists().where(work_items.c.instance_id == instances.c.id),
        or_(
            instances.c.lease_owner == "",
            instances.c.lease_owner == bindparam("owner"),
            instances.c.lease_expiry <= bindparam("now"),
        ),
    )
    .order_by(
        select(func.min(work_items.c.seq))
        .where(work_items.c.instance_id == instances.c.id)
        .scalar_subquery(),
        instances.c.id,
    )
    .limit(bindparam("limit", type_=Integer))
)
_LEASE = (
    update(instances)
    .where(instances.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(lease_owner=bindparam("b_owner"), lease_expiry=bindparam("b_expiry"))
)
_RELEASE = (
    update(instances)
    .where(instances.c.id == bindparam("b_id"), instances.c.lease_owner == bindparam("b_owner"))
    .values(lease_owner="", lease_expiry=None)
)

_ERROR_COLUMNS = ("fqn", "type", "message", "traceback", "attempts", "retrying", "item")


class SqlStore:
    """The `Store` on a SQLite file or a PostgreSQL database; thread-safe (one connection pool).

    Args:
        url: A SQLAlchemy URL: `sqlite:///path/to/file.db`, or
            `postgresql+psycopg://user@host/db` (`postgresql://` means psycopg too).
        retry: How long transient errors are retried (default: 30 s, jittered
            exponential backoff from 10 ms to 1 s).
        busy_timeout: SQLite: seconds to wait for the write lock before
            "database is locked" (itself then retried).
        synchronous: SQLite: the `synchronous` pragma. FULL (default): a
            commit is on disk when it returns; NORMAL survives a crash of the
            process, not of the machine.
        pool_size: Connections kept open (up to twice as many more under load).
        upgrade: Upgrade an empty database to the newest schema on open.
        echo: Log every SQL statement.

    Raises:
        ValueError: The URL names no database the store speaks.
        SchemaVersionError: The database's schema is at another revision.
        StoreUnavailableError: The database cannot be reached.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        retry: RetryPolicy | None = None,
        busy_timeout: float = 5.0,
        synchronous: str = "FULL",
        pool_size: int = 8,
        upgrade: bool = True,
        echo: bool = False,
    ) -> None:
        self._engine, self._dialect = open_engine(
            url,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            echo=echo,
        )
        self._policy = retry or RetryPolicy()
        dialect = self._dialect
        self._lock_instance_row = dialect.lock(_SELECT_INSTANCE_ROW)
        self._create_instance = dialect.insert_ignore(instances, ["id"]).returning(instances.c.id)
        self._claim_key = dialect.insert_ignore(appends, ["key"]).returning(appends.c.key)
        self._put_request = dialect.insert_ignore(requests, ["request_id"])
        self._put_error = dialect.upsert(
            errors, ["instance_id", "work_item_id"], (*_ERROR_COLUMNS, "update_time")
        )
        self._claimable = dialect.lock_skipping(_CLAIMABLE)
        self._own_backends: set[int] = set()
        """PostgreSQL: the backend pids of this store's pooled connections."""
        if dialect.name == "postgresql":
            event.listen(self._engine, "connect", self._pooled)
            event.listen(self._engine, "close", self._unpooled)
            event.listen(self._engine, "close_detached", self._unpooled)
        try:
            run_retrying(
                "open",
                lambda _: migrations.prepare(self._engine, dialect, upgrade_empty=upgrade),
                dialect.is_transient,
                self._policy,
            )
        except BaseException:
            self._engine.dispose()
            raise

    def _pooled(self, dbapi_connection: Any, record: Any) -> None:
        record.info["flou_backend"] = pid = dbapi_connection.info.backend_pid
        self._own_backends.add(pid)

    def _unpooled(self, dbapi_connection: Any, record: Any = None) -> None:
        pid = (getattr(record, "info", None) or {}).get("flou_backend")
        if pid is None:  # a detached connection: no record, but psycopg remembers
            pid = getattr(getattr(dbapi_connection, "pgconn", None), "backend_pid", None)
        self._own_backends.discard(pid)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for operator tools and tests; the store owns it)."""
        return self._engine

    @property
    def backend(self) -> str:
        """The database's dialect name: sqlite or postgresql."""
        return self._dialect.name

    def __repr__(self) -> str:
        return f"SqlStore({self._engine.url!r})"

    # --- transactions -------------------------------------------------------------------

    def _run(
        self, operation: str, body: Callable[[Connection, int], T], *, write: bool = True
    ) -> T:
        """Runs `body(connection, attempt)` in one transaction, retried whole when transient."""

        def attempt(number: int) -> T:
            if not write:
                with self._engine.connect() as conn:
                    conn.execution_options(flou_write=False, **self._dialect.read_options)
                    with conn.begin():
                        return body(conn, number)
            with self._dialect.writing(), self._engine.connect() as conn, conn.begin():
                return body(conn, number)

        return run_retrying(operation, attempt, self._dialect.is_transient, self._policy)

    def _lock_instance(self, conn: Connection, instance_id: str) -> AnyRow | None:
        """The instance's row (revision, owner, ...), locked until the transaction ends."""
        return conn.execute(self._lock_instance_row, {"id": instance_id}).first()

    @staticmethod
    def _committed(conn: Connection, instance_id: str, token: str) -> int | None:
        """The revision of the event an earlier attempt of this call committed, if it did."""
        return conn.execute(_EVENT_OF_CALL, {"id": instance_id, "txn": token}).scalar()

    @staticmethod
    def _event_row(event: EventRecord, token: str) -> dict[str, Any]:
        """The columns of an event's row, but its instance_id and revision."""
        return {
            "kind": event.kind,
            "item": event.item,
            "patch": event.patch,
            "fired": event.fired,
            "error": event.error,
            "rejection": event.rejection,
            "request_id": event.request_id,
            "create_time": event.create_time,
            "txn": token,
        }

    def _insert_event(
        self, conn: Connection, event: EventRecord, instance_id: str, revision: int, token: str
    ) -> None:
        row = self._event_row(event, token)
        conn.execute(_INSERT_EVENT, {**row, "instance_id": instance_id, "revision": revision})

    def _notify(self, conn: Connection, instance_id: str, *, event: bool, work: bool) -> None:
        """Tells other processes, at commit, of the instance's new event and/or work."""
        channels = ((EVENTS_CHANNEL,) if event else ()) + ((WORK_CHANNEL,) if work else ())
        self._dialect.notify(conn, [(channel, instance_id) for channel in channels])

    def _insert_work(
        self, conn: Connection, instance_id: str, work: Sequence[WorkRecord]
    ) -> list[WorkRecord]:
        if not work:
            return []
        rows = self._work_rows(instance_id, work)
        seqs = conn.execute(_INSERT_WORK, rows).scalars().all()
        return [replace(record, seq=seq) for record, seq in zip(work, seqs, strict=True)]

    @staticmethod
    def _work_rows(instance_id: str, work: Sequence[WorkRecord]) -> list[dict[str, Any]]:
        return [
            {
                "instance_id": instance_id,
                "id": record.id,
                "item": to_json(record.item),
                "request_id": record.request_id,
                "expected_revision": record.expected_revision,
            }
            for record in work
        ]

    @staticmethod
    def _remove_work(conn: Connection, instance_id: str, work_item_id: str) -> int | None:
        """Deletes a work item; its seq, None if it was not there."""
        params = {"b_id": instance_id, "b_work_id": work_item_id}
        seq: int | None = conn.execute(_DELETE_WORK, params).scalar()
        return seq

    # --- instances ----------------------------------------------------------------------

    def create(
        self,
        instance: InstanceRecord,
        event: EventRecord,
        work: Sequence[WorkRecord],
        owner: str = "",
        lease_seconds: float = 0.0,
    ) -> InstanceRecord:
        """Stores a new instance at revision 1, its start event (revision 1) and first work.

        With `owner`, the instance starts leased to it for `lease_seconds`;
        other processes are not told of its work then (none of them may
        claim it).

        Raises:
            InstanceAlreadyExistsError: The id is taken.
        """
        record = replace(instance, revision=1)
        token = _token()
        row: dict[str, Any] = {
            "id": record.id,
            "machine": record.machine,
            "revision": 1,
            "document": record.document,
            "create_time": record.create_time,
            "update_time": record.update_time,
        }
        if owner:
            row["lease_owner"] = owner
            row["lease_expiry"] = utcnow() + timedelta(seconds=lease_seconds)

        def body(conn: Connection, attempt: int) -> InstanceRecord:
            if conn.execute(self._create_instance, row).first() is None:
                if attempt > 1 and self._committed(conn, record.id, token) is not None:
                    return record
                raise InstanceAlreadyExistsError(record.id)
            self._insert_event(conn, event, record.id, 1, token)
            self._insert_work(conn, record.id, work)
            self._notify(conn, record.id, event=True, work=bool(work) and not owner)
            return record

        return self._run("create", body)

    def instance(self, instance_id: str) -> InstanceRecord:
        """The instance at its current revision.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """

        def body(conn: Connection, attempt: int) -> InstanceRecord:
            row = conn.execute(_SELECT_INSTANCE, {"id": instance_id}).first()
            if row is None:
                raise InstanceNotFoundError(instance_id)
            return _instance(row)

        return self._run("instance", body, write=False)

    def instances(self, machine: str = "") -> list[InstanceRecord]:
        """Every instance (of one machine, if given), newest first (create_time, then id)."""

        def body(conn: Connection, attempt: int) -> list[InstanceRecord]:
            if machine:
                rows = conn.execute(_LIST_MACHINE, {"machine": machine})
            else:
                rows = conn.execute(_LIST_INSTANCES)
            return [_instance(row) for row in rows]

        return self._run("instances", body, write=False)

    # --- mailboxes ----------------------------------------------------------------------

    def enqueue(self, instance_id: str, work: Sequence[WorkRecord]) -> list[WorkRecord]:
        """Appends work at the end of the mailbox; returns it with `seq` assigned.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """

        def body(conn: Connection, attempt: int) -> list[WorkRecord]:
            # The row lock orders concurrent enqueues: seq order is commit order.
            if self._dialect.dml_ctes and len(work) == 1:
                row = conn.execute(_ENQUEUE_ONE, self._work_rows(instance_id, work)[0]).first()
                if row is None:
                    raise InstanceNotFoundError(instance_id)
                return [replace(work[0], seq=row.seq)]
            if self._lock_instance(conn, instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            self._notify(conn, instance_id, event=False, work=bool(work))
            return self._insert_work(conn, instance_id, work)

        return self._run("enqueue", body)

    def pending(self, instance_id: str) -> list[WorkRecord]:
        """The mailbox, in `seq` order (empty for an unknown instance)."""

        def body(conn: Connection, attempt: int) -> list[WorkRecord]:
            return [_work(row) for row in conn.execute(_SELECT_PENDING, {"id": instance_id})]

        return self._run("pending", body, write=False)

    def head(self, instance_id: str) -> Snapshot:
        """The instance, the head of its mailbox, its size and the kept errors, read together.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """

        def body(conn: Connection, attempt: int) -> Snapshot:
            row = conn.execute(_HEAD, {"id": instance_id, "after": 0}).first()
            if row is None:
                raise InstanceNotFoundError(instance_id)
            return self._snapshot(conn, _instance(row), row)

        return self._run("head", body, write=False)

    @staticmethod
    def _snapshot(
        conn: Connection, record: InstanceRecord, row: AnyRow | None = None, after: int = 0
    ) -> Snapshot:
        """A `Snapshot` of `record` from its `_snapshot_query` row (read now if not given).

        `after`: a seq no item of the mailbox is at or below (one just removed).
        """
        if row is None:
            row = conn.execute(_AFTER_COMMIT, {"id": record.id, "after": after}).one()
        kept = SqlStore._errors(conn, record.id) if row.failed else ()  # rare: read only then
        return Snapshot(record, _next_work(row), row.pending, kept)

    @staticmethod
    def _errors(conn: Connection, instance_id: str) -> tuple[ErrorRecord, ...]:
        """The kept errors of an instance, first recorded first."""
        return tuple(_error(e) for e in conn.execute(_SELECT_ERRORS, {"id": instance_id}))

    def discard(self, instance_id: str, work_item_id: str) -> None:
        """Removes a work item that needs no step (its node is no longer queued)."""

        def body(conn: Connection, attempt: int) -> None:
            self._remove_work(conn, instance_id, work_item_id)

        self._run("discard", body)

    # --- steps --------------------------------------------------------------------------

    def commit(
        self,
        instance_id: str,
        revision: int,
        document: JsonObject,
        event: EventRecord,
        done: str | None,
        work: Sequence[WorkRecord] = (),
        owner: str = "",
        alone: bool = False,
        chained: Sequence[EventRecord] = (),
    ) -> Snapshot:
        """Commits one step: the document at `revision + 1`, its event, the done item, new work.

        The event's `instance_id` and `revision` are set by the store. `done`
        (a work item id) leaves the mailbox; `work` joins its end. `chained`:
        events of steps taken on after this one (`Store.commit`), at the next
        revisions. Returns the instance as the commit left it (read in the
        same transaction).

        Raises:
            RevisionConflictError: The instance is no longer at `revision`.
            LeaseLostError: `owner` is given and no longer holds the lease.
            InstanceNotFoundError: No instance has that id.
            MailboxNotEmptyError: `alone` (the item never entered the mailbox)
                or `chained`, and work other than `done` is queued: nothing is
                committed.
        """
        now = utcnow()
        token = _token()
        statement = _COMMIT_FENCED if owner else _COMMIT
        last = revision + 1 + len(chained)
        params = {
            "b_id": instance_id,
            "b_revision": revision,
            "b_next": last,
            "b_document": document,
            "b_now": now,
            "b_owner": owner,
        }

        ctes = self._dialect.dml_ctes  # the events go in the compare-and-set's statement
        rows = [  # the first event's token alone tells a retry that the commit happened
            {**self._event_row(e, token if n == 0 else ""), "revision": revision + 1 + n}
            for n, e in enumerate((event, *chained))
        ]
        for later in rows[1:]:
            later["txn"] = None
        event_params = (
            {
                f"{prefix}{k}": v
                for prefix, columns in zip(_event_prefixes(len(chained)), rows, strict=True)
                for k, v in columns.items()
            }
            if ctes
            else {}
        )

        def record(machine: str, create_time: datetime) -> InstanceRecord:
            return InstanceRecord(
                instance_id, machine, last, document, create_time, update_time=now
            )

        def body(conn: Connection, attempt: int) -> Snapshot:
            if attempt > 1:
                current = self._lock_instance(conn, instance_id)
                if current is not None and self._committed(conn, instance_id, token) is not None:
                    return self._snapshot(conn, record(current.machine, current.create_time))
            resolved = done is not None and event.kind != "failed"  # its kept error goes
            if ctes:
                writes = _commit_with_writes(bool(owner), done is not None, resolved, len(chained))
                row = conn.execute(writes, {**params, **event_params, "b_work_id": done}).first()
            else:
                row = conn.execute(statement, params).first()
            if row is None:
                raise self._commit_failure(conn, instance_id, revision, owner)
            done_seq = 0
            if not ctes:  # the step's event and the chained ones, in one executemany
                conn.execute(_INSERT_EVENT, [{**r, "instance_id": instance_id} for r in rows])
            if done is not None:
                removed = row.done_seq if ctes else self._remove_work(conn, instance_id, done)
                if removed is None:
                    # Another runtime processed it meanwhile (after our lease ran out and
                    # before we got it back): this step is stale, and rolls back whole.
                    raise LeaseLostError(instance_id, owner)
                # Items are processed in seq order: none of the mailbox is at or below it.
                done_seq = removed
                if resolved and not ctes:
                    conn.execute(_DELETE_ERROR, {"b_id": instance_id, "b_work_id": done})
            after = record(row.machine, row.create_time)
            # The compare-and-set holds the row, which enqueues lock first: a statement
            # from now on sees every item enqueued before, and none can come in.
            if not ctes:  # else the notices go with the check, or with the snapshot's read
                self._notify(conn, instance_id, event=True, work=bool(work))
            if alone or chained:  # the mailbox must be empty: then its new work is all of it
                check_query = _ALONE_NOTIFYING[bool(work)] if ctes else _ALONE
                check = conn.execute(check_query, {"id": instance_id}).one()
                if check.queued:
                    raise MailboxNotEmptyError(instance_id)  # rolls the transaction back
                queued = self._insert_work(conn, instance_id, work)
                kept = self._errors(conn, instance_id) if check.failed else ()
                return Snapshot(after, queued[0] if queued else None, len(queued), kept)
            self._insert_work(conn, instance_id, work)
            if ctes:
                query = _AFTER_COMMIT_NOTIFYING[bool(work)]
                read = conn.execute(query, {"id": instance_id, "after": done_seq}).one()
                return self._snapshot(conn, after, read)
            return self._snapshot(conn, after, after=done_seq)

        return self._run("commit", body)

    def _commit_failure(
        self, conn: Connection, instance_id: str, revision: int, owner: str
    ) -> Exception:
        """Why a compare-and-set changed no row."""
        current = self._lock_instance(conn, instance_id)
        if current is None:
            return InstanceNotFoundError(instance_id)
        if owner and current.lease_owner != owner:
            return LeaseLostError(instance_id, owner)
        return RevisionConflictError(instance_id, revision, current.revision)

    def append(
        self,
        instance_id: str,
        path: Path,
        value: Any,
        event: EventRecord,
        dedup: str = "",
        max_bytes: int | None = None,
    ) -> tuple[list[Any], int]:
        """Appends `value` to the list at `path` (document keys) as one atomic step.

        One UPDATE statement appends and increments the revision; the event
        (its patch set here) is inserted in the same transaction (on
        PostgreSQL, by the same statement). With
        `dedup`, the key is claimed first: a second append with the same key
        waits for the first one's transaction, then answers its result.

        Returns:
            The whole list after the append, appends of others included, and
            the revision the append created.

        Raises:
            InstanceNotFoundError: No instance has that id.
            KeyError: Nothing is at `path`.
            TypeError: What is at `path` is not a list; the message is its JSON type.
            LimitExceededError: The document as the database writes it in JSON
                would be over `max_bytes`; nothing is committed.
        """
        now = utcnow()
        token = _token()
        event_row = self._append_event_row(path, value, event, token)

        def body(conn: Connection, attempt: int) -> tuple[list[Any], int]:
            if dedup:
                first = self._claim_append_key(conn, instance_id, dedup, now)
                if first is not None:
                    return first
            appended = self._append_in(
                conn, instance_id, path, value, now, event_row, token, max_bytes, attempt > 1
            )
            items, revision = appended.values or [], appended.revision
            if dedup:
                conn.execute(
                    _FILL_APPEND, {"b_key": dedup, "b_revision": revision, "b_result": items}
                )
            return items, revision

        return self._run("append", body)

    def append_many(
        self, appends: Sequence[AppendRecord], max_bytes: int | None = None
    ) -> list[Appended | Exception]:
        """Several appends in one transaction; see `Store.append_many`.

        Each append is its `append` statement(s); the transaction commits
        once for all of them. An append refused before it changed anything
        (no instance, no list) is left out by itself. One over `max_bytes`
        has changed its row: the transaction is rolled back and run again
        without it. Rows are locked in instance order, so two batches never
        wait on each other in a cycle.
        """
        if not appends:
            return []
        now = utcnow()
        tokens = [_token() for _ in appends]
        rows = [
            self._append_event_row(one.path, one.value, one.event, token)
            for one, token in zip(appends, tokens, strict=True)
        ]
        measure = max_bytes is not None
        calls = [
            (one.instance_id, one.path, one.value, now, row, measure, one.with_values)
            for one, row in zip(appends, rows, strict=True)
        ]
        order = sorted(range(len(appends)), key=lambda index: appends[index].instance_id)
        refused: dict[int, Exception] = {}
        again = False  # run again after a refusal: earlier attempts may have committed

        def body(conn: Connection, attempt: int) -> dict[int, Appended | Exception]:
            if not again and attempt == 1:
                return at_once(conn)
            outcomes: dict[int, Appended | Exception] = {}
            for index in order:
                if index in refused:
                    continue
                one = appends[index]
                try:
                    outcomes[index] = self._append_in(
                        conn,
                        one.instance_id,
                        one.path,
                        one.value,
                        now,
                        rows[index],
                        tokens[index],
                        max_bytes,
                        again or attempt > 1,
                        one.with_values,
                    )
                except (InstanceNotFoundError, KeyError, TypeError) as exc:
                    outcomes[index] = exc  # its statement changed nothing
                except LimitExceededError as exc:
                    raise _Refused(index, exc) from None
            return outcomes

        def at_once(conn: Connection) -> dict[int, Appended | Exception]:
            """The first attempt: every statement sent together (`SqlDialect.append_all`)."""
            made_all = self._dialect.append_all(conn, [calls[index] for index in order])
            outcomes: dict[int, Appended | Exception] = {}
            for index, made in zip(order, made_all, strict=True):
                one = appends[index]
                if made is None:  # no row changed: why is the answer
                    try:
                        self._list_at(conn, one.instance_id, one.path)
                    except (InstanceNotFoundError, KeyError, TypeError) as exc:
                        outcomes[index] = exc
                        continue
                    raise _Refused(index, None)  # a list got there meanwhile: one at a time
                try:
                    outcomes[index] = _within(made, max_bytes)
                except LimitExceededError as exc:
                    raise _Refused(index, exc) from None
            return outcomes

        while True:
            try:
                outcomes = self._run("append", body)
            except _Refused as refusal:
                if refusal.error is not None:
                    refused[refusal.index] = refusal.error
                again = True
                continue
            return [refused.get(index) or outcomes[index] for index in range(len(appends))]

    def _append_event_row(
        self, path: Path, value: Any, event: EventRecord, token: str
    ) -> dict[str, Any]:
        patch: list[JsonObject] = [append_op(path, value)]
        return self._event_row(replace(event, patch=patch), token)

    def _append_in(
        self,
        conn: Connection,
        instance_id: str,
        path: Path,
        value: Any,
        now: datetime,
        event_row: Mapping[str, Any],
        token: str,
        max_bytes: int | None,
        retried: bool,
        with_values: bool = True,
    ) -> Appended:
        """One append inside the caller's transaction: the list after it, and its revision.

        `retried`: an earlier attempt may have committed it, its answer lost;
        then the answer is the list as it is now.
        """
        if retried and self._lock_instance(conn, instance_id) is not None:
            revision = self._committed(conn, instance_id, token)
            if revision is not None:
                values = self._list_at(conn, instance_id, path)
                return Appended(values if with_values else None, len(values), revision)
        for _ in range(_APPEND_TRIES):
            appended = self._dialect.append(
                conn, instance_id, path, value, now, event_row, max_bytes is not None, with_values
            )
            if appended is not None:
                break
            # Raises unless a list got there between the two statements.
            self._list_at(conn, instance_id, path)
        else:
            raise RuntimeError(
                f"the {self.backend} append found no list at {pointer(path)!r} of "
                f"instance {instance_id!r}, but a read finds one"
            )
        return _within(appended, max_bytes)

    def _claim_append_key(
        self, conn: Connection, instance_id: str, key: str, now: datetime
    ) -> tuple[list[Any], int] | None:
        """Takes a dedup key for this transaction; if it was taken, the first answer."""
        try:
            claimed = conn.execute(
                self._claim_key, {"key": key, "instance_id": instance_id, "create_time": now}
            ).first()
        except IntegrityError:  # the foreign key: no such instance
            raise InstanceNotFoundError(instance_id) from None
        if claimed is not None:
            return None
        row = conn.execute(_SELECT_APPEND, {"key": key}).one()
        return row.result, row.revision

    @staticmethod
    def _list_at(conn: Connection, instance_id: str, path: Path) -> list[Any]:
        """The list at `path` of the instance's document, read.

        Raises:
            InstanceNotFoundError: No instance has that id.
            KeyError: Nothing is at `path` (a key on the way is missing, or not an object).
            TypeError: What is at `path` is not a list; the message is its JSON type.
        """
        document = conn.execute(_SELECT_DOCUMENT, {"id": instance_id}).scalar()
        if document is None:
            raise InstanceNotFoundError(instance_id)
        value: Any = document
        for key in path:
            if not isinstance(value, dict) or key not in value:
                raise KeyError(pointer(path))
            value = value[key]
        if not isinstance(value, list):
            raise TypeError(json_type(value))
        return value

    # --- history ------------------------------------------------------------------------

    def events(
        self, instance_id: str, from_revision: int = 1, limit: int = 0
    ) -> list[EventRecord]:
        """Events from `from_revision` on, in revision order, at most `limit` (0: all).

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        query = _SELECT_EVENTS.limit(limit) if limit > 0 else _SELECT_EVENTS
        params = {"id": instance_id, "start": from_revision}

        def body(conn: Connection, attempt: int) -> list[EventRecord]:
            found = [_event(row) for row in conn.execute(query, params)]
            if not found and not conn.execute(_INSTANCE_EXISTS, {"id": instance_id}).scalar():
                raise InstanceNotFoundError(instance_id)
            return found

        return self._run("events", body, write=False)

    def oldest_revision(self, instance_id: str) -> int:
        """The oldest revision whose event is still kept.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """

        def body(conn: Connection, attempt: int) -> int:
            oldest = conn.execute(_OLDEST_EVENT, {"id": instance_id}).scalar()
            if oldest is None:
                raise InstanceNotFoundError(instance_id)
            return int(oldest)

        return self._run("oldest_revision", body, write=False)

    # --- failures -----------------------------------------------------------------------

    def errors(self, instance_id: str) -> list[ErrorRecord]:
        """The recorded failures of the instance's work items, first recorded first."""

        def body(conn: Connection, attempt: int) -> list[ErrorRecord]:
            return [_error(row) for row in conn.execute(_SELECT_ERRORS, {"id": instance_id})]

        return self._run("errors", body, write=False)

    def put_error(self, instance_id: str, error: ErrorRecord) -> None:
        """Records, or replaces, the failures of one work item.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        row = {
            "instance_id": instance_id,
            "work_item_id": error.work_item_id,
            "fqn": error.fqn,
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback,
            "attempts": error.attempts,
            "retrying": error.retrying,
            "item": None if error.item is None else to_json(error.item),
            "create_time": error.update_time,
            "update_time": error.update_time,
        }

        def body(conn: Connection, attempt: int) -> None:
            try:
                conn.execute(self._put_error, row)
            except IntegrityError:  # the foreign key: no such instance
                raise InstanceNotFoundError(instance_id) from None

        self._run("put_error", body)

    def clear_error(self, instance_id: str, work_item_id: str) -> None:
        """Forgets the failures of one work item."""

        def body(conn: Connection, attempt: int) -> None:
            conn.execute(_DELETE_ERROR, {"b_id": instance_id, "b_work_id": work_item_id})

        self._run("clear_error", body)

    # --- idempotency --------------------------------------------------------------------

    def request(self, request_id: str) -> RequestRecord | None:
        """The stored first answer to a request id, if any."""

        def body(conn: Connection, attempt: int) -> RequestRecord | None:
            row = conn.execute(_SELECT_REQUEST, {"id": request_id}).first()
            return None if row is None else _request(row)

        return self._run("request", body, write=False)

    def put_request(self, record: RequestRecord) -> RequestRecord:
        """Stores the first answer to a request id; returns the record kept (the first)."""
        row = {
            "request_id": record.request_id,
            "fingerprint": record.fingerprint,
            "response": record.response,
            "create_time": utcnow(),
        }

        def body(conn: Connection, attempt: int) -> RequestRecord:
            conn.execute(self._put_request, row)
            return _request(conn.execute(_SELECT_REQUEST, {"id": record.request_id}).one())

        return self._run("put_request", body)

    # --- leases -------------------------------------------------------------------------

    def claim(self, owner: str, lease_seconds: float, limit: int) -> list[str]:
        """Leases up to `limit` instances with pending work that nobody else holds.

        An instance is free when it has no lease, its lease expired, or
        `owner` holds it already (the lease is then renewed). Oldest pending
        work first; on PostgreSQL, rows other claimers hold are skipped
        (`FOR UPDATE SKIP LOCKED`), never waited for.

        Raises:
            ValueError: `owner` is empty.
        """
        if not owner:
            raise ValueError("claim needs an owner")
        if limit <= 0:
            return []

        def body(conn: Connection, attempt: int) -> list[str]:
            now = utcnow()
            params = {"owner": owner, "now": now, "limit": limit}
            ids = list(conn.execute(self._claimable, params).scalars())
            if ids:
                expiry = now + timedelta(seconds=lease_seconds)
                conn.execute(_LEASE, {"b_ids": ids, "b_owner": owner, "b_expiry": expiry})
            return ids

        return self._run("claim", body)

    def release(self, owner: str, instance_id: str) -> None:
        """Gives up a lease `owner` holds (no-op otherwise)."""

        def body(conn: Connection, attempt: int) -> None:
            conn.execute(_RELEASE, {"b_id": instance_id, "b_owner": owner})

        self._run("release", body)

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None] | None:
        """Calls `callback(channel, instance_id)` for changes other processes commit.

        PostgreSQL only (LISTEN/NOTIFY): `WORK_CHANNEL` when an instance got
        new work, `EVENTS_CHANNEL` when it got a new event. What this store's
        own connections committed is not passed on: its caller knows already
        (echoing it back would only make everyone look again). A dedicated
        connection listens in a daemon thread and reconnects after a failure,
        then calls `callback(RECONNECTED, "")`: notifications sent meanwhile
        are lost, so the caller should look for work again. The callback runs
        in that thread.

        Returns:
            A function that stops listening; None on SQLite (one process: its
            runtime wakes itself).
        """
        if self.backend != "postgresql":
            return None
        listener = _Listener(self._engine.url, callback, self._own_backends)
        listener.start()
        return listener.stop

    def close(self) -> None:
        """Closes every pooled connection."""
        self._engine.dispose()


def _within(made: tuple[int, list[Any] | None, int, int], max_bytes: int | None) -> Appended:
    """An append the dialect made, unless it left the document over `max_bytes`.

    Raises:
        LimitExceededError: The document is over; the caller's transaction
            must roll back (the row has changed).
    """
    revision, items, length, size = made
    if max_bytes is not None and size > max_bytes:
        raise LimitExceededError("state", "max_state_bytes", max_bytes, size)
    return Appended(items, length, revision)


class _Refused(Exception):
    """An append of `append_many` that must not commit as it was sent.

    With `error`: it changed its row, over a limit; the batch runs again
    without it. None: it found no list that is there now; the batch runs
    again one append at a time.
    """

    def __init__(self, index: int, error: Exception | None) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


class _Listener(threading.Thread):
    """LISTENs on the store's channels on a connection of its own, until stopped."""

    def __init__(self, url: URL, callback: Callable[[str, str], None], ignored: set[int]) -> None:
        super().__init__(name="flou-store-listener", daemon=True)
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._callback = callback
        self._ignored = ignored
        """Backend pids whose notifications are not passed on (the store's own pool)."""
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Stops listening; returns once the thread has ended."""
        self._stopped.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=5)

    def run(self) -> None:
        delay = 0.05
        first = True
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    for channel in (WORK_CHANNEL, EVENTS_CHANNEL):
                        conn.execute(f"LISTEN {channel}")
                    if not first:
                        self._callback(RECONNECTED, "")
                    first, delay = False, 0.05
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=0.25):
                            if notice.pid not in self._ignored:
                                self._callback(notice.channel, notice.payload)
            except psycopg.Error as exc:
                if self._stopped.is_set():
                    return
                _log.warning("listening for notifications failed (%s); reconnecting", exc)
                self._stopped.wait(delay)
                delay = min(delay * 2, 2.0)
                first = False
