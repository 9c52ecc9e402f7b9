"""What the service benchmarks share: a real server process, a throwaway database.

`running_server` runs `python -m flou_grpc serve --port 0` as production would
(its own process, FLOU_* variables, the machines of an app file) and yields it
once it logs its port; `database` gives a temporary SQLite file or a uniquely
named PostgreSQL database, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    backend: str
    port: int
    pid: int
    log: Path

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process, in kB."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found


@contextlib.contextmanager
def running_server(
    backend: str,
    url: str,
    directory: Path,
    app: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """`python -m flou_grpc serve --port 0` serving `app` on `url`, its log in `directory`.

    SIGTERM (then SIGKILL) at the end; what it logged beyond INFO is printed.
    """
    log = directory / f"server-{backend}-{uuid.uuid4().hex[:6]}.log"
    environ = {
        **os.environ,
        "FLOU_DATABASE_URL": url,
        "FLOU_APP": str(app),
        "FLOU_SHUTDOWN_GRACE": "1",
        **(env or {}),
    }
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "flou_grpc", "serve", "--port", "0"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Server(backend, int(match.group(1)), process.pid, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"the {backend} server did not stop within 15 s of SIGTERM: killed")
                process.kill()
                process.wait()
        report_server_log(backend, log, process.returncode)


def report_server_log(backend: str, log: Path, returncode: int | None) -> None:
    """Prints what the server logged beyond its INFO lines, alike lines counted together."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    alike: dict[str, list[Any]] = {}  # the line, digits as N -> [first time, first line, count]
    for line in lines:
        if not line.strip() or re.match(r"^\S+ \S+ (INFO|DEBUG) ", line):
            continue
        stamp = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ", line)
        text = line[stamp.end() :] if stamp else line
        entry = alike.setdefault(re.sub(r"\d+", "N", text), [stamp and stamp[1], text, 0])
        entry[2] += 1
    if returncode not in (0, -15, None):
        print(f"{backend} server exited with status {returncode}")
    if alike:
        total = sum(entry[2] for entry in alike.values())
        print(f"{backend} server log: {total} lines other than INFO (alike lines counted once):")
        for first, text, count in list(alike.values())[:10]:
            print(f"    x{count}{f' (first at {first})' if first else ''}: {text[:300]}")


@dataclass(frozen=True)
class Postgres:
    """A throwaway PostgreSQL database: how to reach it, and the server's settings."""

    name: str
    conninfo: str
    url: str
    """The SQLAlchemy URL (psycopg 3) the store opens."""
    settings: dict[str, str]
    """server_version, synchronous_commit and fsync, as SHOW gives them."""


@contextlib.contextmanager
def postgres_database(admin: str, prefix: str) -> Iterator[Postgres]:
    """A uniquely named database made through `admin`, dropped at the end.

    Warns when the PostgreSQL server restarted meanwhile (other suites of this
    machine restart it): figures taken across a restart include its downtime.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        conninfo = make_conninfo(admin, dbname=name)
        with psycopg.connect(conninfo) as conn:
            settings = {
                key: str((conn.execute(f"SHOW {key}").fetchone() or ("?",))[0])
                for key in ("server_version", "synchronous_commit", "fsync")
            }
            started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        params = conninfo_to_dict(conninfo)
        user = params.get("user", "")
        password = f":{params['password']}" if params.get("password") else ""
        host = params.get("host", "127.0.0.1")
        port = params.get("port", 5432)
        url = f"postgresql+psycopg://{user}{password}@{host}:{port}/{name}"
        yield Postgres(name, conninfo, url, settings)
        with psycopg.connect(conninfo) as conn:
            if conn.execute("SELECT pg_postmaster_start_time()").fetchone() != started:
                print(
                    "WARNING: the PostgreSQL server restarted during this run (something else "
                    "restarted it): the PostgreSQL figures include its downtime"
                )
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for attempt in range(30):  # the server may be restarting
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(drop)
                break
            except psycopg.OperationalError:
                if attempt == 29:
                    print(f"could not drop the database {name}; drop it by hand")
                    raise
                time.sleep(1)


@contextlib.contextmanager
def database(backend: str, admin: str, directory: Path) -> Iterator[tuple[str, str]]:
    """(database URL, description): a temporary SQLite file, or a throwaway PostgreSQL database."""
    if backend == "sqlite":
        path = directory / f"flou-{uuid.uuid4().hex[:6]}.db"
        try:
            yield f"sqlite:///{path}", f"SQLite file {path.name} in a temporary directory"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with postgres_database(admin, "flou_bench") as made:
        yield (
            made.url,
            f"PostgreSQL {made.settings['server_version']} (synchronous_commit "
            f"{made.settings['synchronous_commit']}), database {made.name}",
        )
