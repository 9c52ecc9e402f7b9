"""The runtime suite runs against every store: memory, a SQLite file, PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of each backend (memory:// for the memory store)."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_url"))
