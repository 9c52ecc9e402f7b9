"""The server's composition root: builds the runtime, the grpc.aio server, and runs them.

It serves `flou.v1.FlouService` (`FlouServicer`), the standard gRPC health
service (`grpc.health.v1.Health`) and server reflection, so that grpcurl,
grpcui and load generators work without the .proto files.

Start-up: the machines of `settings.app` are registered, the store opened
(an empty database is migrated; a database at another schema version is an
error), and only then does health say SERVING: a replica whose database is
unreachable or unmigrated receives no traffic.

Shutdown is graceful (`stop`, SIGTERM): health turns NOT_SERVING (load
balancers drain the replica), Watch streams end with UNAVAILABLE
`ERROR_REASON_SHUTTING_DOWN` (clients resume elsewhere from their last
revision), new RPCs are refused, in-flight ones get the grace period, and
steps in progress what is left of it to commit; workers then give their
leases back. A step still running after that is abandoned: its lease expires
and another replica takes the instance over.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flou_grpc._proto.flou.v1 import flou_service_pb2, flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.engine.registry import Registry
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.service.auth import TokenAuth
from flou_grpc.service.metrics import Metrics, StepCounter
from flou_grpc.service.observe import RpcObserver
from flou_grpc.service.servicer import FlouServicer
from flou_grpc.store.retry import on_retry

__all__ = ["FLOU_SERVICE_NAME", "Server", "load_app", "serve"]

_log = logging.getLogger(__name__)

FLOU_SERVICE_NAME: Final = flou_service_pb2.DESCRIPTOR.services_by_name["FlouService"].full_name
"""The full name of the contract's service, `flou.v1.FlouService`."""


def load_app(registry: Registry, modules: tuple[str, ...]) -> None:
    """Registers the root machines of each module (`pkg.module`, or a path to a .py file).

    Like other Python servers, the working directory is importable, so that
    `--app examples.orders` finds `./examples/orders.py`.

    Raises:
        ImportError: A module cannot be imported.
        InvalidDefinitionError: A machine is invalid, or two share a name.
    """
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for module in modules:
        if module.endswith(".py"):
            path = Path(module).resolve()
            name = path.stem
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {module}")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[name] = loaded
            spec.loader.exec_module(loaded)
            module = name
        registered = registry.register_module(module)
        _log.info("serving %s from %s", ", ".join(m.name for m in registered) or "nothing", module)


class Server:
    """One grpc.aio server over one `AsyncRuntime`.

    Use `start` then `stop`, or `async with Server(settings) as server:`;
    `port` is the port actually bound (useful with port 0).

    Args:
        settings: Address, app modules, database, TLS, tokens, limits.
        runtime: A runtime to serve instead of one built from `settings`
            (its machines are served; `settings.app` is added to them).
    """

    def __init__(self, settings: Settings, runtime: AsyncRuntime | None = None) -> None:
        self.settings = settings
        self._own_runtime = runtime is None
        self._runtime = runtime
        limits = settings.limits
        self.metrics = Metrics()
        interceptors: list[grpc.aio.ServerInterceptor] = [RpcObserver(self.metrics)]
        if settings.auth_tokens:
            interceptors.append(TokenAuth(settings.auth_tokens))
        self._stop_counting_retries: Callable[[], None] | None = None
        self.metrics_port: int | None = None
        self._server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
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
        self.servicer: FlouServicer | None = None
        self.port = 0

    @property
    def runtime(self) -> AsyncRuntime:
        """The runtime served (built by `start` when none was given)."""
        if self._runtime is None:
            raise RuntimeError("the server is not started")
        return self._runtime

    def _credentials(self) -> grpc.ServerCredentials | None:
        settings = self.settings
        if not settings.tls:
            return None
        key = Path(settings.tls_key).read_bytes()
        chain = Path(settings.tls_cert).read_bytes()
        client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    async def start(self) -> int:
        """Opens the runtime, binds the address, serves, and says SERVING; returns the port.

        Raises:
            RuntimeError: The address cannot be bound, or the database cannot be
                opened (unreachable, not migratable, another schema version).
            ImportError, InvalidDefinitionError: The app cannot be loaded.
        """
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._health.set(FLOU_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._runtime is None:
            registry = Registry()
            load_app(registry, self.settings.app)
            # Opening the store reaches the database and migrates an empty one.
            try:
                self._runtime = await asyncio.to_thread(
                    AsyncRuntime,
                    self.settings.database_url,
                    registry=registry,
                    max_state_bytes=self.settings.limits.max_state_bytes,
                    store_threads=self.settings.store_threads,
                )
            except Exception as exc:  # what the database said is what the operator needs
                raise RuntimeError(f"cannot open the database: {exc}") from exc
        else:
            load_app(self._runtime.registry, self.settings.app)
        runtime = self._runtime
        runtime.observer = StepCounter(self.metrics)
        self._stop_counting_retries = on_retry(
            lambda operation: self.metrics.store_retries.labels(operation).inc()
        )
        await runtime.__aenter__()
        self.servicer = FlouServicer(runtime, self.settings)
        watchers = self.servicer.watchers
        self.metrics.track(
            lambda: runtime.pending_work, lambda: runtime.leased_instances, lambda: watchers.count
        )
        if self.settings.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(
                    self.settings.host, self.settings.metrics_port
                )
            except OSError as exc:
                await self._close_runtime()
                raise RuntimeError(
                    f"cannot serve metrics on {self.settings.host}:{self.settings.metrics_port}: "
                    f"{exc.strerror}"
                ) from None
            _log.info("metrics on http://%s:%d/metrics", self.settings.host, self.metrics_port)
        flou_service_pb2_grpc.add_FlouServiceServicer_to_server(self.servicer, self._server)
        credentials = self._credentials()
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(self.settings.address)
            else:
                self.port = self._server.add_secure_port(self.settings.address, credentials)
        except RuntimeError as exc:  # grpc raises it when nothing could be bound
            await self._close_runtime()
            raise RuntimeError(f"cannot listen on {self.settings.address}: {exc}") from None
        await self._server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(FLOU_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        _log.info(
            "flou-grpc listening on %s:%d (%s, %d machines)",
            self.settings.host,
            self.port,
            "TLS" if credentials else "plaintext",
            len(self._runtime.registry),
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drains and stops the server; in-flight RPCs get `grace` seconds (default: settings)."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        await self._health.enter_graceful_shutdown()
        if self.servicer is not None:
            await self.servicer.close()
        await self._server.stop(grace)
        # Steps in progress finish within what is left of the grace period.
        await self._close_runtime(max(0.0, deadline - asyncio.get_running_loop().time()))
        _log.info("flou-grpc stopped")

    async def _close_runtime(self, grace: float = 1.0) -> None:
        self.metrics.close()
        if self._stop_counting_retries is not None:
            self._stop_counting_retries()
            self._stop_counting_retries = None
        if self._runtime is not None and self._own_runtime:
            await self._runtime.close(grace)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _freeze_heap() -> None:
    """Keeps what start-up made out of the cyclic collector's full collections (`gc.freeze`).

    Modules, descriptors, the engine and the server live as long as the
    process. Left in the oldest generation, every full collection walks them:
    about 40-50 ms each on a 2-core machine, every few seconds under load, a
    stall of every call in flight. Frozen, a full collection takes 3-4 ms.
    Only the serving process does this: an application that embeds the
    runtime owns its own collector.
    """
    gc.collect()
    gc.freeze()
    _log.info("start-up heap frozen: %d objects out of garbage collection", gc.get_freeze_count())


async def serve(settings: Settings) -> None:
    """Runs a server until SIGTERM or SIGINT, then shuts it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # signals unsupported on this platform
            loop.add_signal_handler(signum, stop.set)
    async with Server(settings):
        _freeze_heap()
        await stop.wait()
        _log.info("shutdown requested; draining for up to %ss", settings.shutdown_grace_seconds)
