"""Which store a database URL names.

- `memory://`: the in-process `MemoryStore` (nothing is kept across restarts);
- `sqlite:///path/to/file.db`: the durable `SqlStore` on an embedded SQLite file;
- `postgresql+psycopg://user@host/db` (or `postgresql://`): the durable `SqlStore` on
  PostgreSQL, which several server processes may share.

None or "" means `FLOU_DATABASE_URL` from the environment, else the embedded
default, `sqlite:///flou.db` (a file in the working directory).
"""

from __future__ import annotations

import os
from typing import Final

from flou_grpc.store.base import Store
from flou_grpc.store.memory import MemoryStore

__all__ = ["DEFAULT_DATABASE_URL", "database_url", "open_store"]

DEFAULT_DATABASE_URL: Final = "sqlite:///flou.db"
"""The embedded default: a SQLite file in the working directory."""


def database_url(url: str | None) -> str:
    """The URL a runtime uses: `url`, else `FLOU_DATABASE_URL`, else the embedded default."""
    return url or os.environ.get("FLOU_DATABASE_URL") or DEFAULT_DATABASE_URL


def open_store(url: str | None) -> Store:
    """Opens (and, for SQL, migrates) the store a URL names.

    Raises:
        ValueError: The URL names no supported store.
    """
    resolved = database_url(url)
    if resolved == "memory://":
        return MemoryStore()
    scheme = resolved.partition(":")[0]
    if scheme.startswith(("sqlite", "postgresql")):
        from flou_grpc.store.sql import SqlStore  # sqlalchemy only when a SQL store is used

        if scheme == "postgresql":
            resolved = "postgresql+psycopg" + resolved[len("postgresql") :]
        return SqlStore(resolved)
    raise ValueError(
        f"database URL {resolved!r}: use memory://, sqlite:///path, or "
        "postgresql+psycopg://user@host/database"
    )
