"""The default Runtime behind `LTM.start()`: one per process, configured from the environment.

`MyLtm().start(**payload)` (seed 000) needs no setup: it starts an instance on
a Runtime built at first use from `FLOU_DATABASE_URL` (unset: the embedded
default), registering the class if needed, and returns the instance's id.
"""

from __future__ import annotations

import atexit
import threading

from flou_grpc.engine.document import JsonObject
from flou_grpc.engine.ltm import LTM
from flou_grpc.runtime.embedded import Runtime

__all__ = ["close_default_runtime", "default_runtime", "start_on_default"]

_lock = threading.Lock()
_runtime: Runtime | None = None


def default_runtime() -> Runtime:
    """The process's default Runtime, created at first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(None)  # FLOU_DATABASE_URL, else the embedded SQLite file
            atexit.register(_runtime.close)
        return _runtime


def close_default_runtime() -> None:
    """Closes the default Runtime; the next `LTM.start()` builds a new one."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None


def start_on_default(cls: type[LTM], payload: JsonObject) -> str:
    """Starts an instance of a root LTM class on the default Runtime; returns its id."""
    runtime = default_runtime()
    runtime.registry.register(cls)
    return runtime.start(cls.name, payload).id
