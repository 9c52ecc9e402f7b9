"""The first schema: instances, mailboxes, events, errors, request records, append keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(*, none_as_null: bool = False) -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=none_as_null).with_variant(
        postgresql.JSONB(none_as_null=none_as_null), "postgresql"
    )


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "flou_instances",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("machine", sa.String(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("document", _json(), nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.Column("update_time", _time(), nullable=False),
        sa.Column("lease_owner", sa.String(), server_default="", nullable=False),
        sa.Column("lease_expiry", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_flou_instances"),
    )
    op.create_index("ix_flou_instances_create_time_id", "flou_instances", ["create_time", "id"])
    op.create_index(
        "ix_flou_instances_machine_create_time_id",
        "flou_instances",
        ["machine", "create_time", "id"],
    )
    op.create_table(
        "flou_work_items",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("item", _json(), nullable=False),
        sa.Column("request_id", sa.String(), server_default="", nullable=False),
        sa.Column("expected_revision", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["flou_instances.id"],
            name="fk_flou_work_items_instance_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_flou_work_items"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_flou_work_items_instance_id_seq", "flou_work_items", ["instance_id", "seq"]
    )
    op.create_table(
        "flou_events",
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("item", _json(), nullable=False),
        sa.Column("patch", _json(), nullable=False),
        sa.Column("fired", _json(), nullable=False),
        sa.Column("error", _json(none_as_null=True), nullable=True),
        sa.Column("rejection", _json(none_as_null=True), nullable=True),
        sa.Column("request_id", sa.String(), server_default="", nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.Column("txn", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["flou_instances.id"],
            name="fk_flou_events_instance_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "revision", name="pk_flou_events"),
    )
    op.create_table(
        "flou_errors",
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("work_item_id", sa.String(), nullable=False),
        sa.Column("fqn", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retrying", sa.Boolean(), nullable=False),
        sa.Column("item", _json(none_as_null=True), nullable=True),
        sa.Column("create_time", _time(), nullable=False),
        sa.Column("update_time", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["flou_instances.id"],
            name="fk_flou_errors_instance_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "work_item_id", name="pk_flou_errors"),
    )
    op.create_table(
        "flou_requests",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("response", _json(), nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_flou_requests"),
    )
    op.create_table(
        "flou_appends",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=True),
        sa.Column("result", _json(none_as_null=True), nullable=True),
        sa.Column("create_time", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["flou_instances.id"],
            name="fk_flou_appends_instance_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name="pk_flou_appends"),
    )
    op.create_index("ix_flou_appends_instance_id", "flou_appends", ["instance_id"])


def downgrade() -> None:
    """Drops the tables."""
    for table in (
        "flou_appends",
        "flou_requests",
        "flou_errors",
        "flou_events",
        "flou_work_items",
        "flou_instances",
    ):
        op.drop_table(table)
