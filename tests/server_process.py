"""A real `flou-grpc serve` process, for every test that needs one in its own process.

Started as an operator would (`python -m flou_grpc serve --port 0 --app ...
--database-url ...`, or configured by FLOU_* variables alone, as a container
is); its port is read from the line it logs, `flou-grpc listening on
127.0.0.1:PORT`. Its stderr is drained by a thread (a full pipe would block
the server) and kept for failure messages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ("tests.ltms.flat", "tests.ltms.nested", "tests.ltms.lanes")
"""The library machines every test server serves (linear, self_loop, shop, deep, hub_lanes...)."""

_LISTENING = re.compile(r"flou-grpc listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """One server process; `start()` returns once it listens, `stop()` sends SIGTERM."""

    def __init__(
        self,
        database: Path | str | None,
        *,
        port: int = 0,
        app: tuple[str, ...] | None = APP,
        env: dict[str, str] | None = None,
    ) -> None:
        """`database`: a SQLite file, or a URL; None (and `app` None): from `env` alone."""
        self.database, self.port, self.app = database, port, app
        self.env = {**os.environ, **(env or {})}
        for name in ("FLOU_APP", "FLOU_DATABASE_URL", "FLOU_PORT", "FLOU_AUTH_TOKENS"):
            if env is None or name not in env:
                self.env.pop(name, None)
        self.process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self.log: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        self.log = []
        options = ["--port", str(self.port)]
        if self.app is not None:
            options += ["--app", ",".join(self.app)]
        if isinstance(self.database, Path):
            options += ["--database-url", f"sqlite:///{self.database}"]
        elif self.database is not None:
            options += ["--database-url", self.database]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flou_grpc", "serve", *options],
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        listening = threading.Event()

        def drain() -> None:
            assert self.process is not None
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)
                found = _LISTENING.search(line)
                if found:
                    self.port = int(found.group(1))
                    listening.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the server did not start:\n" + "".join(self.log))
        return self

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (graceful: streams end SHUTTING_DOWN, leases are given back); the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self._drain is not None:
            self._drain.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
