"""Schema migrations of the SQL store: Alembic, configured in code (no alembic.ini).

The scripts live here (`env.py`, `script.py.mako`, `versions/`), shipped with
the package. `upgrade(url)` brings a database to the newest schema: what an
operator's `flou-grpc db upgrade` runs. `SqlStore` calls `prepare` when it
opens: an empty database is upgraded at once; one at another revision is
refused until an operator upgrades it (a schema change is their decision).
Migrations take the dialect's migration lock, so processes starting together
do not race. A new revision: `alembic.command.revision(config(url), message,
autogenerate=True)` against a database at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from flou_grpc.store.dialects import SqlDialect, open_engine
from flou_grpc.store.schema import VERSION_TABLE

__all__ = ["SchemaVersionError", "config", "current", "head", "prepare", "upgrade"]

SCRIPTS = Path(__file__).resolve().parent


class SchemaVersionError(RuntimeError):
    """The database's schema is not the one this version of flou-grpc needs."""

    def __init__(self, found: str | None, needed: str) -> None:
        super().__init__(
            f"the database schema is at revision {found}, this flou-grpc needs {needed}: "
            "run `flou-grpc db upgrade` (back up the database first)"
        )
        self.found, self.needed = found, needed


def config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """The Alembic configuration of the store's scripts, for a URL or an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    if url is not None:
        cfg.set_main_option(
            "sqlalchemy.url",
            url.render_as_string(hide_password=False) if isinstance(url, URL) else url,
        )
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    if found is None:
        raise RuntimeError(f"no migration scripts in {SCRIPTS}")
    return found


def current(conn: Connection) -> str | None:
    """The schema revision of a database (None: never migrated)."""
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade(conn: Connection, revision: str) -> None:
    command.upgrade(config(connection=conn), revision)


def prepare(engine: Engine, dialect: SqlDialect, *, upgrade_empty: bool = True) -> None:
    """Checks a database's schema on open; upgrades it to head when it is empty.

    Raises:
        SchemaVersionError: The database is at another revision (or empty,
            when `upgrade_empty` is False).
    """
    needed = head()
    with engine.begin() as conn:
        found = current(conn)
        if found == needed:
            return
        dialect.migration_lock(conn)
        found = current(conn)  # another process may have migrated it meanwhile
        if found is None and upgrade_empty:
            _upgrade(conn, needed)
        elif found != needed:
            raise SchemaVersionError(found, needed)


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Upgrades the database at `url` to `revision` (default: the newest), in one transaction."""
    engine, dialect = open_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            dialect.migration_lock(conn)
            _upgrade(conn, revision)
    finally:
        engine.dispose()
