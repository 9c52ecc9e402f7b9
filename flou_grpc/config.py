"""Settings of the server, read once from the environment (and the command line).

Every setting has an environment variable, documented in README's
"Configuration" table; command-line options of `flou-grpc serve` override them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's settings."""

    host: str = "127.0.0.1"
    """Address to listen on (`FLOU_HOST`); `0.0.0.0` or `[::]` for every interface."""

    port: int = 50051
    """TCP port to listen on (`FLOU_PORT`); 0 picks a free port, which is logged."""

    shutdown_grace_seconds: float = 10.0
    """On SIGTERM, how long in-flight RPCs may take to finish (`FLOU_SHUTDOWN_GRACE`)."""

    @property
    def address(self) -> str:
        """The `host:port` the server binds."""
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads the settings from environment variables; unset ones keep their default.

        Raises:
            ValueError: A variable is set to a value of the wrong type or range;
                the message names the variable.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host=env.get("FLOU_HOST", defaults.host),
            port=_number(env, "FLOU_PORT", defaults.port, int, 0, 65535),
            shutdown_grace_seconds=_number(
                env, "FLOU_SHUTDOWN_GRACE", defaults.shutdown_grace_seconds, float, 0, 3600
            ),
        )


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, kind: type[N], low: N, high: N) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is outside [{low}, {high}]")
    return value
