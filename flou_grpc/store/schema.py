"""The tables of the SQL store, as SQLAlchemy Core metadata.

One definition for both backends: JSON columns are JSONB on PostgreSQL and
JSON text on SQLite; times are timezone-aware UTC datetimes in and out
(`UtcDateTime`). The migrations (`flou_grpc.store.migrations`) create exactly
these tables; a test compares the two.

    flou_instances   one row per instance: its document at its current revision,
                     and the lease (owner, expiry) of the runtime working on it
    flou_work_items  the mailboxes: work items in `seq` order per instance
    flou_events      the history: one row per committed step, (instance, revision)
    flou_errors      the failures of work items whose code raised
    flou_requests    the first answer to each request id (idempotency)
    flou_appends     the first answer to each deduplicated append
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

__all__ = [
    "VERSION_TABLE",
    "UtcDateTime",
    "appends",
    "errors",
    "events",
    "instances",
    "json_type",
    "metadata",
    "requests",
    "work_items",
]

VERSION_TABLE = "flou_alembic_version"
"""Where Alembic keeps the schema revision (its own name: the database may be shared)."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; SQLite keeps it as naive UTC text, PostgreSQL as timestamptz.

    Naive datetimes are refused on the way in: a time without a zone is a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Converts to UTC (naive UTC on SQLite, whose text format keeps no zone)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware times")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Returns an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type(*, none_as_null: bool = False) -> TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON (text) elsewhere; `none_as_null` stores None as SQL NULL."""
    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


instances = Table(
    "flou_instances",
    metadata,
    Column("id", String, primary_key=True),
    Column("machine", String, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("document", json_type(), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    Column("lease_owner", String, nullable=False, server_default=""),
    Column("lease_expiry", UtcDateTime, nullable=True),
    Index(None, "create_time", "id"),
    Index(None, "machine", "create_time", "id"),
)


def _instance_fk() -> ForeignKey:
    """The reference to an instance of rows that go when it goes."""
    return ForeignKey(instances.c.id, ondelete="CASCADE")


work_items = Table(
    "flou_work_items",
    metadata,
    # INTEGER PRIMARY KEY AUTOINCREMENT on SQLite: a seq is never handed out twice.
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("instance_id", String, _instance_fk(), nullable=False),
    Column("id", String, nullable=False),
    Column("item", json_type(), nullable=False),
    Column("request_id", String, nullable=False, server_default=""),
    Column("expected_revision", BigInteger, nullable=False, server_default="0"),
    Index(None, "instance_id", "seq"),
    sqlite_autoincrement=True,
)

events = Table(
    "flou_events",
    metadata,
    Column(
        "instance_id",
        String,
        _instance_fk(),
        primary_key=True,
    ),
    Column("revision", BigInteger, primary_key=True),
    Column("kind", String, nullable=False),
    Column("item", json_type(), nullable=False),
    Column("patch", json_type(), nullable=False),
    Column("fired", json_type(), nullable=False),
    Column("error", json_type(none_as_null=True), nullable=True),
    Column("rejection", json_type(none_as_null=True), nullable=True),
    Column("request_id", String, nullable=False, server_default=""),
    Column("create_time", UtcDateTime, nullable=False),
    # The token of the store call that wrote the row: a call retried after a
    # commit whose answer was lost finds its own row instead of doing it twice.
    Column("txn", String, nullable=True),
)

errors = Table(
    "flou_errors",
    metadata,
    Column(
        "instance_id",
        String,
        _instance_fk(),
        primary_key=True,
    ),
    Column("work_item_id", String, primary_key=True),
    Column("fqn", String, nullable=False),
    Column("type", String, nullable=False),
    Column("message", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("retrying", Boolean, nullable=False),
    Column("item", json_type(none_as_null=True), nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

requests = Table(
    "flou_requests",
    metadata,
    Column("request_id", String, primary_key=True),
    Column("fingerprint", String, nullable=False),
    Column("response", json_type(), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
)

appends = Table(
    "flou_appends",
    metadata,
    Column("key", String, primary_key=True),
    Column(
        "instance_id",
        String,
        _instance_fk(),
        nullable=False,
        index=True,
    ),
    # NULL until the append's transaction fills them in (the row is inserted
    # first, to claim the key).
    Column("revision", BigInteger, nullable=True),
    Column("result", json_type(none_as_null=True), nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
)
