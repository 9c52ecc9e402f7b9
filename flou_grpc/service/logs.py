"""Structured logs: every line carries the request id of the RPC it belongs to.

The request id is the caller's `x-request-id` metadata if it sent one (so a
trace crosses services), else one made up per RPC; `RpcObserver` sets it for
the RPC's task, and everything logged while handling the RPC (runtime and
store warnings included) carries it. `FLOU_LOG_FORMAT=json` writes one JSON
object per line (time, level, logger, message, request_id, and the RPC's
method, code and duration on access lines), for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestIdFilter", "configure"]

REQUEST_ID: Final[ContextVar[str]] = ContextVar("flou_request_id", default="-")
"""The id of the RPC being handled in this task ("-" outside RPCs)."""

_ACCESS_FIELDS: Final = ("method", "code", "duration_ms", "peer")
_HANDLER: Final = "flou_grpc.stderr"
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Sets `record.request_id`; keeps every record."""
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", REQUEST_ID.get()),
        }
        for name in _ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "INFO", log_format: str = "text") -> None:
    """Sends the process's logs to stderr, as text or JSON lines, with request ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for existing in list(root.handlers):  # one of ours only: called again, it replaces itself
        if existing.get_name() == _HANDLER:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # The formats above name no source line, thread or process: what the logging
    # docs' "Optimization" section says to switch off then (an access line per RPC
    # spent a tenth of the server's interpreter time in logging).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Alembic narrates every migration step at INFO; its warnings still show.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
