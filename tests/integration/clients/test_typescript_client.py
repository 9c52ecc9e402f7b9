"""The TypeScript client's end-to-end tests (clients/typescript/test), against a real server.

Starts a `flou-grpc serve` process (the library machines of `server_process.APP`),
installs the TypeScript package's pinned dependencies (`npm ci`, only when
node_modules is missing or older than package-lock.json) and compiles it
(`tsc`), once per session, then runs `node --test` with FLOU_TEST_ADDRESS set to
the server's address and asserts that every test passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import ROOT, ServerProcess

PACKAGE = ROOT / "clients" / "typescript"
NODE_TIMEOUT = 120


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=PACKAGE, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def _require(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def typescript_build() -> Path:
    """clients/typescript with its dependencies installed and compiled into dist/."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail(
            "the TypeScript client's tests need Node.js >= 20 with npm on PATH "
            "(e.g. `apt-get install nodejs npm`)"
        )
    modules = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not modules.exists() or modules.stat().st_mtime < lock.stat().st_mtime:
        _require(
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=600),
            "npm ci in clients/typescript",
        )
    tsc = PACKAGE / "node_modules" / ".bin" / "tsc"
    _require(_run([str(tsc), "-p", "tsconfig.json"], timeout=300), "tsc in clients/typescript")
    return PACKAGE / "dist" / "test"


@pytest.fixture(scope="module")
def ts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("ts-server") / "flou.db").start()
    yield process
    process.stop()


def test_typescript_client_end_to_end(typescript_build: Path, ts_server: ServerProcess) -> None:
    node = shutil.which("node")
    assert node is not None
    result = _run(
        [node, "--test", "--test-reporter=spec", str(typescript_build)],
        env={**os.environ, "FLOU_TEST_ADDRESS": ts_server.address},
        timeout=NODE_TIMEOUT,
    )
    report = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, (
        f"node --test failed ({result.returncode}):\n{report}\n"
        f"server log:\n{''.join(ts_server.log)}"
    )
    assert "fail 0" in report, report
