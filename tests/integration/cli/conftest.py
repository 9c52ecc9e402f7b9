"""Servers for the CLI tests, and helpers that run `flou-grpc`.

`flou_process` runs it as a user does, a new process each time; `flou` runs the
same `flou_grpc.cli.run` in the test's process (a real server, real sockets, but
no interpreter start-up: the output tests stay fast).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from flou_grpc import cli
from tests.server_process import ROOT, ServerProcess

TOKEN = "cli-test-token"

Run = Callable[..., subprocess.CompletedProcess[str]]


def _run(address: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOU_")}
    environment |= {"FLOU_ADDRESS": address, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flou_grpc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cli") / "flou.db").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that requires the bearer token `TOKEN`."""
    process = ServerProcess(
        tmp_path_factory.mktemp("cli-auth") / "flou.db", env={"FLOU_AUTH_TOKENS": TOKEN}
    ).start()
    yield process
    process.stop()


@pytest.fixture
def flou_process(server: ServerProcess) -> Run:
    """Runs `python -m flou_grpc ARGS...` against `server` (through FLOU_ADDRESS)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30):
        return _run(server.address, *args, env=env, timeout=timeout)

    return run


def run_in_process(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`flou-grpc ARGS... --address ADDRESS` in this process, as a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*args, "--address", address]
    with contextlib.redirect_stderr(err):
        try:
            code = cli.run(argv, out=out)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def flou(server: ServerProcess) -> Run:
    """Runs `flou-grpc ARGS...` against `server` in this process (see `run_in_process`)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_in_process(server.address, *args)

    return run
