"""Settings of the server, read once from the environment (and the command line).

Every setting has an environment variable, documented in README's
"Configuration" table; command-line options of `flou-grpc serve` override them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Limits", "Settings"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request, one instance and the server as a whole may use.

    A request over a limit is refused with INVALID_ARGUMENT (RESOURCE_EXHAUSTED
    for the server-wide ones) naming the limit; nothing is changed.
    """

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest gRPC message received or sent (`FLOU_MAX_MESSAGE_BYTES`)."""

    max_json_depth: int = 32
    """Deepest nesting of a payload, update, appended value or state (`FLOU_MAX_JSON_DEPTH`)."""

    max_payload_bytes: int = 1024 * 1024
    """Largest payload, update or appended value, as JSON (`FLOU_MAX_PAYLOAD_BYTES`)."""

    max_state_bytes: int = 4 * 1024 * 1024
    """Largest instance state a step may commit, as JSON (`FLOU_MAX_STATE_BYTES`)."""

    max_params: int = 1000
    """Most lanes (param maps) one Transition may bind (`FLOU_MAX_PARAMS`)."""

    max_concurrent_rpcs: int = 1000
    """RPCs served at once; more are refused RESOURCE_EXHAUSTED (`FLOU_MAX_CONCURRENT_RPCS`)."""

    max_watchers_per_instance: int = 100
    """Open Watch streams on one instance (`FLOU_MAX_WATCHERS_PER_INSTANCE`)."""

    watch_buffer: int = 1024
    """Events a Watch stream may fall behind before it is closed RESOURCE_EXHAUSTED
    (`FLOU_WATCH_BUFFER`); the client resumes from its last revision."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's settings."""

    host: str = "127.0.0.1"
    """Address to listen on (`FLOU_HOST`); `0.0.0.0` or `[::]` for every interface."""

    port: int = 50051
    """TCP port to listen on (`FLOU_PORT`); 0 picks a free port, which is logged."""

    shutdown_grace_seconds: float = 10.0
    """On SIGTERM, how long in-flight RPCs may take to finish (`FLOU_SHUTDOWN_GRACE`)."""

    app: tuple[str, ...] = ()
    """Modules whose root machines are served (`FLOU_APP`, comma-separated)."""

    database_url: str | None = None
    """Where instances are kept (`FLOU_DATABASE_URL`; None: `sqlite:///flou.db`)."""

    metrics_port: int | None = None
    """Port of the Prometheus `/metrics` HTTP endpoint (`FLOU_METRICS_PORT`; unset: none)."""

    tls_cert: str = ""
    """PEM certificate chain of the server (`FLOU_TLS_CERT`); with `tls_key`, serve TLS."""

    tls_key: str = ""
    """PEM private key of the server (`FLOU_TLS_KEY`)."""

    tls_client_ca: str = ""
    """PEM CA bundle (`FLOU_TLS_CLIENT_CA`): when set, clients must present a
    certificate it signed (mutual TLS)."""

    auth_tokens: tuple[str, ...] = ()
    """Bearer tokens accepted (`FLOU_AUTH_TOKENS`, comma-separated, and the lines of
    `FLOU_AUTH_TOKENS_FILE`); empty: no authentication."""

    heartbeat_seconds: float = 15.0
    """Default interval of Watch heartbeats while idle (`FLOU_WATCH_HEARTBEAT`)."""

    log_format: str = "text"
    """`text` or `json` (one object per line) (`FLOU_LOG_FORMAT`)."""

    store_threads: int = 4
    """Threads making the database calls (`FLOU_STORE_THREADS`). More is not faster:
    they share the interpreter lock with the event loop, and on 2 cores 4 did about
    60% more transitions/s than 16 (README)."""

    limits: Limits = field(default_factory=Limits)

    @property
    def address(self) -> str:
        """The `host:port` the server binds."""
        return f"{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS."""
        return bool(self.tls_cert)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads the settings from environment variables; unset ones keep their default.

        Raises:
            ValueError: A variable is set to a value of the wrong type or range, or
                names a file that cannot be read; the message names the variable.
        """
        env = os.environ if environ is None else environ
        defaults, limits = cls(), Limits()

        def number(name: str, default: N, kind: Callable[[str], N], low: N, high: N) -> N:
            return _number(env, name, default, kind, low, high)

        metrics = env.get("FLOU_METRICS_PORT", "")
        settings = cls(
            host=env.get("FLOU_HOST", defaults.host),
            port=number("FLOU_PORT", defaults.port, int, 0, 65535),
            shutdown_grace_seconds=number(
                "FLOU_SHUTDOWN_GRACE", defaults.shutdown_grace_seconds, float, 0, 3600
            ),
            app=_words(env.get("FLOU_APP", "")),
            database_url=env.get("FLOU_DATABASE_URL") or None,
            metrics_port=number("FLOU_METRICS_PORT", 0, int, 0, 65535) if metrics else None,
            tls_cert=env.get("FLOU_TLS_CERT", ""),
            tls_key=env.get("FLOU_TLS_KEY", ""),
            tls_client_ca=env.get("FLOU_TLS_CLIENT_CA", ""),
            auth_tokens=(
                *_words(env.get("FLOU_AUTH_TOKENS", "")),
                *_token_file(env.get("FLOU_AUTH_TOKENS_FILE", "")),
            ),
            heartbeat_seconds=number(
                "FLOU_WATCH_HEARTBEAT", defaults.heartbeat_seconds, float, 0.05, 3600
            ),
            log_format=env.get("FLOU_LOG_FORMAT", defaults.log_format),
            store_threads=number("FLOU_STORE_THREADS", defaults.store_threads, int, 1, 64),
            limits=Limits(
                max_message_bytes=number(
                    "FLOU_MAX_MESSAGE_BYTES", limits.max_message_bytes, int, 1024, 1 << 30
                ),
                max_json_depth=number("FLOU_MAX_JSON_DEPTH", limits.max_json_depth, int, 1, 1000),
                max_payload_bytes=number(
                    "FLOU_MAX_PAYLOAD_BYTES", limits.max_payload_bytes, int, 16, 1 << 30
                ),
                max_state_bytes=number(
                    "FLOU_MAX_STATE_BYTES", limits.max_state_bytes, int, 16, 1 << 30
                ),
                max_params=number("FLOU_MAX_PARAMS", limits.max_params, int, 1, 1_000_000),
                max_concurrent_rpcs=number(
                    "FLOU_MAX_CONCURRENT_RPCS", limits.max_concurrent_rpcs, int, 1, 1_000_000
                ),
                max_watchers_per_instance=number(
                    "FLOU_MAX_WATCHERS_PER_INSTANCE",
                    limits.max_watchers_per_instance,
                    int,
                    1,
                    1_000_000,
                ),
                watch_buffer=number("FLOU_WATCH_BUFFER", limits.watch_buffer, int, 1, 1_000_000),
            ),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raises ValueError, naming the variable, for settings that do not fit together."""
        if self.log_format not in ("text", "json"):
            raise ValueError(f"FLOU_LOG_FORMAT={self.log_format!r}: use text or json")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("FLOU_TLS_CERT and FLOU_TLS_KEY go together: set both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError(
                "FLOU_TLS_CLIENT_CA (mutual TLS) needs FLOU_TLS_CERT and FLOU_TLS_KEY"
            )
        for name, path in (
            ("FLOU_TLS_CERT", self.tls_cert),
            ("FLOU_TLS_KEY", self.tls_key),
            ("FLOU_TLS_CLIENT_CA", self.tls_client_ca),
        ):
            if path and not os.path.isfile(path):
                raise ValueError(f"{name}={path!r}: no such file")


N = TypeVar("N", int, float)


def _number(
    env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N], low: N, high: N
) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is outside [{low}, {high}]")
    return value


def _words(raw: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in raw.split(",") if word.strip())


def _token_file(path: str) -> tuple[str, ...]:
    """The tokens of a file, one per line (blank lines and `#` comments skipped)."""
    if not path:
        return ()
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise ValueError(f"FLOU_AUTH_TOKENS_FILE={path!r}: {exc.strerror}") from None
    return tuple(s for line in lines if (s := line.strip()) and not s.startswith("#"))
