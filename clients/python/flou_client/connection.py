"""How the client reaches the server: TLS credentials, the bearer token, channel options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc

__all__ = ["CHANNEL_OPTIONS", "Connection", "Pem"]

Pem: TypeAlias = bytes | str | os.PathLike[str]
"""PEM data: the bytes themselves, or the path of a file holding them."""

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Reconnect quickly after the server went away (a restart, a failover): the
    # channel's own backoff otherwise fails calls fast for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # The server's default limit of FLOU_MAX_MESSAGE_BYTES.
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # The client retries itself (flou_client.retry); no second layer underneath.
    ("grpc.enable_retries", 0),
)
"""The options of every channel the client opens (the caller's `options` come after)."""


def _read(pem: Pem | None) -> bytes | None:
    if pem is None or isinstance(pem, bytes):
        return pem
    return Path(pem).read_bytes()


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to connect: target, TLS (mutual with a client certificate), token.

    Attributes:
        target: `host:port` (or any gRPC target, e.g. `dns:///flou.internal:443`).
        token: Sent as `authorization: Bearer <token>` metadata on every call.
        tls: Use TLS; implied by any of the PEM options. Without `root_certificates`
            the system's roots are used.
        root_certificates: CA bundle that signed the server's certificate.
        client_cert: Client certificate chain, for mutual TLS (with `client_key`).
        client_key: Private key of `client_cert`.
        options: Extra gRPC channel options, e.g. `("grpc.ssl_target_name_override", name)`.
    """

    target: str
    token: str | None = None
    tls: bool = False
    root_certificates: Pem | None = None
    client_cert: Pem | None = None
    client_key: Pem | None = None
    options: Sequence[tuple[str, Any]] = field(default=())

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS."""
        return self.tls or any(
            pem is not None for pem in (self.root_certificates, self.client_cert, self.client_key)
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The TLS credentials, or None for a plaintext channel.

        Raises:
            OSError: A PEM file cannot be read.
        """
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of every call: the bearer token, if any."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options: the caller's, and the client's that they do not set."""
        mine = {name for name, _ in self.options}
        return [*(o for o in CHANNEL_OPTIONS if o[0] not in mine), *self.options]

    def channel(self) -> grpc.Channel:
        """A new synchronous channel."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target, options=self.channel_options())
        return grpc.secure_channel(self.target, credentials, options=self.channel_options())

    def aio_channel(self) -> grpc.aio.Channel:
        """A new asyncio channel (to be created inside the event loop that uses it)."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.channel_options())
        return grpc.aio.secure_channel(self.target, credentials, options=self.channel_options())
