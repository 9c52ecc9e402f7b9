"""The server's composition root: builds the grpc.aio server and runs it.

Today it serves the standard gRPC health service (`grpc.health.v1.Health`)
and server reflection, which publishes the `flou.v1.FlouService` contract so
that grpcurl, grpcui and load generators work without the .proto files. The
FlouService RPCs are registered here once the runtime behind them exists;
until then grpc answers them UNIMPLEMENTED.

Shutdown is graceful: on `stop`, health turns NOT_SERVING first (so load
balancers drain the replica), then new RPCs are refused and in-flight ones get
the grace period to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flou_grpc._proto.flou.v1 import flou_service_pb2
from flou_grpc.config import Settings

__all__ = ["FLOU_SERVICE_NAME", "Server", "serve"]

_log = logging.getLogger(__name__)

FLOU_SERVICE_NAME: Final = flou_service_pb2.DESCRIPTOR.services_by_name["FlouService"].full_name
"""The full name of the contract's service, `flou.v1.FlouService`."""


class Server:
    """One grpc.aio server with health checking and reflection.

    Use `start` then `stop`, or `async with Server(settings) as server:`;
    `port` is the port actually bound (useful with port 0).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._server = grpc.aio.server()
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                FLOU_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self.port = 0

    async def start(self) -> int:
        """Binds the address, starts serving and returns the bound port.

        Raises:
            RuntimeError: The address cannot be bound.
        """
        try:
            self.port = self._server.add_insecure_port(self._settings.address)
        except RuntimeError as exc:  # grpc raises it when nothing could be bound
            raise RuntimeError(f"cannot listen on {self._settings.address}: {exc}") from None
        await self._server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        _log.info("flou-grpc listening on %s:%d", self._settings.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drains and stops the server; in-flight RPCs get `grace` seconds (default: settings)."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._settings.shutdown_grace_seconds if grace is None else grace)
        _log.info("flou-grpc stopped")

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(settings: Settings) -> None:
    """Runs a server until SIGTERM or SIGINT, then shuts it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # signals unsupported on this platform
            loop.add_signal_handler(signum, stop.set)
    async with Server(settings):
        await stop.wait()
        _log.info("shutdown requested; draining for up to %ss", settings.shutdown_grace_seconds)
