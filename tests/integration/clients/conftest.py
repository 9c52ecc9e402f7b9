"""A server process shared by a module's client tests (tests use their own instance ids)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flou_client import FlouClient

from tests.server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "flou.db").start()
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[FlouClient]:
    with FlouClient(server.address, timeout=20) as opened:
        yield opened
