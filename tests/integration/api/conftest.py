"""Real servers on port 0 for the API tests, their machines, and helpers to read errors.

Every test here talks to a real `Server` over a real socket with the generated
stubs; nothing is mocked. Besides the library machines of `tests.ltms` (served
through `Settings.app`), the servers host three machines of their own:

- `gated`: `idle --block--> slow`, where `slow.run` blocks until the test
  opens the gate (`gate` fixture): a step that stays in progress.
- `fragile`: its only state `boom` raises until the root's state key `fixed`
  is true; `retries = 1`, so it exhausts its retries at once.
- `lists`: a single-state root holding a list (`items`), a nested list
  (`nested.inner`) and a scalar (`scalar`), for `AtomicAppend`.

Fixtures: `api` (a server with the small `api_limits`, which a module may
override), `stub` (a FlouService stub to it), `gate`, `start_server` (more
servers with other settings), and the helpers `rich` / `fails`, which decode
the rich status of a failed call. The helpers are fixtures because importing
this conftest by its package name would load a second copy of it.
The servers of `test_server.py` keep their own fixtures there.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
import pytest
from grpc_status import rpc_status

from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Limits, Settings
from flou_grpc.engine import LTM
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.service.server import Server
from flou_grpc.store.sql import SqlStore

GATE = threading.Event()
"""Opened by the `gate` fixture's teardown; `slow.run` waits on it."""

LIBRARY = ("tests.ltms.flat", "tests.ltms.nested", "tests.ltms.lanes")
"""Library modules every API server also serves (linear, self_loop, shop, deep, ...)."""


class Idle(LTM):
    name = "idle"


class Slow(LTM):
    name = "slow"

    def run(self, **payload: Any) -> None:
        self.update_state({"started": True})
        GATE.wait(10)


class Gated(LTM):
    """`idle --block--> slow`; `slow` blocks until the gate opens."""

    name = "gated"
    init = [Idle]
    transitions = [{"from": Idle, "label": "block", "to": Slow}]


class Boom(LTM):
    name = "boom"
    retries = 1

    def run(self, **payload: Any) -> None:
        if not self.root.state.get("fixed"):
            raise ValueError("boom: not fixed yet")
        self.update_state({"ran": True})


class Fragile(LTM):
    """`boom` fails until the root's `fixed` key is true."""

    name = "fragile"
    init = [Boom]


class Lists(LTM):
    """A single state holding lists to append to."""

    name = "lists"

    def get_initial_state(self) -> dict[str, Any]:
        return {"items": [], "nested": {"inner": []}, "scalar": 5}


MACHINES = (Gated, Fragile, Lists)


def api_settings(**overrides: Any) -> Settings:
    """Settings for a test server: port 0, short grace, 0.1 s heartbeats."""
    values: dict[str, Any] = {
        "port": 0,
        "app": LIBRARY,
        "shutdown_grace_seconds": 1.0,
        "heartbeat_seconds": 0.1,
    }
    values.update(overrides)
    return Settings(**values)


class ApiServer:
    """A started `Server` over its own runtime (closed with it) hosting `MACHINES`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = AsyncRuntime(
            settings.database_url, machines=MACHINES, retry_delay=0.01, poll_interval=1.0
        )
        self.server = Server(settings, self.runtime)
        self.stopped = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def start(self) -> ApiServer:
        await self.server.start()
        return self

    async def stop(self, grace: float | None = None) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            await self.server.stop(grace)
        finally:
            await self.runtime.close()

    async def __aenter__(self) -> ApiServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at the current schema, migrated once per session."""
    path = tmp_path_factory.mktemp("api-template") / "flou.db"
    SqlStore(f"sqlite:///{path}").close()
    assert not path.with_name("flou.db-wal").exists()
    return path


@pytest.fixture
def api_database_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    """A fresh copy of the migrated database, this test's own (faster than migrating)."""
    target = tmp_path / "api.db"
    shutil.copyfile(migrated_sqlite, target)
    return f"sqlite:///{target}"


@pytest.fixture
def api_limits() -> Limits:
    """The limits of the `api` server; override the fixture to change them."""
    return Limits(
        max_json_depth=8,
        max_payload_bytes=2048,
        max_params=3,
        max_message_bytes=64 * 1024,
        max_watchers_per_instance=2,
        watch_buffer=16,
    )


@pytest.fixture
async def api(api_database_url: str, api_limits: Limits) -> AsyncIterator[ApiServer]:
    """A started server on SQLite with small limits and 0.1 s heartbeats."""
    settings = api_settings(database_url=api_database_url, limits=api_limits)
    async with ApiServer(settings) as running:
        yield running


@pytest.fixture
async def stub(api: ApiServer) -> AsyncIterator[flou_service_pb2_grpc.FlouServiceStub]:
    """A `FlouService` stub on a plaintext channel to `api`."""
    async with grpc.aio.insecure_channel(api.target) as channel:
        yield flou_service_pb2_grpc.FlouServiceStub(channel)


@pytest.fixture
def gate(api: ApiServer) -> Any:
    """Closes the gate of `slow.run` for the test; opens it before the server stops."""
    GATE.clear()
    yield GATE
    GATE.set()


@dataclass(frozen=True)
class RichError:
    """What an `AioRpcError` carried: the code, its ErrorInfo and its BadRequest fields."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: tuple[str, ...]
    detail_types: tuple[str, ...]


def _rich(error: grpc.aio.AioRpcError | grpc.RpcError) -> RichError:
    """Decodes the `grpc-status-details-bin` trailer of a failed call.

    Asserts that it holds exactly one `google.rpc.ErrorInfo` of domain `flou.v1`.
    """
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    assert status.code == error.code().value[0]
    infos, fields, types = [], [], []
    for detail in status.details:
        types.append(detail.TypeName())
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    assert len(infos) == 1, f"expected one ErrorInfo, got {types}"
    assert infos[0].domain == "flou.v1"
    return RichError(
        code=error.code(),
        message=status.message,
        reason=infos[0].reason,
        domain=infos[0].domain,
        metadata=dict(infos[0].metadata),
        fields=tuple(fields),
        detail_types=tuple(types),
    )


async def _fails(call: Any) -> RichError:
    """Awaits a call that must fail; returns its decoded rich status."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return _rich(error)
    raise AssertionError("the call succeeded")


@pytest.fixture(scope="session")
def rich() -> Any:
    """`rich(error)`: the decoded rich status of a failed call (`RichError`)."""
    return _rich


@pytest.fixture(scope="session")
def fails() -> Any:
    """`await fails(call)`: awaits a call that must fail; returns its `RichError`."""
    return _fails


@pytest.fixture
async def start_server(tmp_path: Path, migrated_sqlite: Path) -> AsyncIterator[Any]:
    """`await start_server(**settings)`: another started server, on a fresh SQLite database
    of its own unless `database_url` is given, stopped at the end of the test."""
    started: list[ApiServer] = []

    async def start(**overrides: Any) -> ApiServer:
        if "database_url" not in overrides:
            target = tmp_path / f"server-{len(started)}.db"
            shutil.copyfile(migrated_sqlite, target)
            overrides["database_url"] = f"sqlite:///{target}"
        running = await ApiServer(api_settings(**overrides)).start()
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.stop()
