"""Which store a database URL names.

`memory://` (and None) is the in-process `MemoryStore`. SQLAlchemy URLs of
SQLite and PostgreSQL open the durable `SqlStore`, once it is installed.
"""

from __future__ import annotations

from flou_grpc.store.base import Store
from flou_grpc.store.memory import MemoryStore

__all__ = ["open_store"]


def open_store(database_url: str | None) -> Store:
    """Opens the store a URL names.

    Raises:
        ValueError: The URL names no store this installation has.
    """
    if database_url in (None, "", "memory://"):
        return MemoryStore()
    raise ValueError(
        f"database_url {database_url!r}: only the in-memory store ('memory://', or None) "
        "exists yet; SQLite and PostgreSQL come with the durable store"
    )
