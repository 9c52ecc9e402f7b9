"""Names and URLs of the test databases (the fixtures are in conftest.py)."""

from __future__ import annotations

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TABLES = (
    "flou_appends",
    "flou_requests",
    "flou_errors",
    "flou_events",
    "flou_work_items",
    "flou_instances",
)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"
