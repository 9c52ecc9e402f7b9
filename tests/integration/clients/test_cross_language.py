"""Cross-language: Go and Node processes drive ONE instance at once; a Python watcher sees it.

A real server (`ServerProcess`, SQLite file) hosts one `self_loop` instance.
`clients/go/examples/drive` (built offline in GOPATH mode, as test_go_client
builds the Go client) and `clients/typescript/examples/drive.ts` (compiled by
the package's tsconfig, as test_typescript_client compiles it) each
AtomicAppend distinct values ("go-1".."go-N", "ts-1".."ts-N") to the root's
list `items`, concurrently (both wait on stdin until both are connected, then
start together). AtomicAppend commits exactly one revision per call.

Meanwhile `flou_client.FlouClient.watch`, from the instance's start revision,
must see every revision from there to the final one exactly once and in order,
each an APPENDED event carrying one driven value; the drivers' own answers must
account for the same revisions; and the final list holds every value exactly
once. The figures are printed (run with `-s` to see them).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flou_client import Event, EventKind, FlouClient, Heartbeat, Instance

from tests.integration.clients import test_go_client as go_tests
from tests.integration.clients import test_typescript_client as ts_tests
from tests.server_process import ServerProcess

# As test_go_client: installing the Go toolchain on a fresh machine takes minutes.
pytestmark = pytest.mark.timeout(600)

PER_LANGUAGE = 50
KEY = "items"
DRIVE_TIMEOUT = 60

# The build fixtures of the per-language tests, reused (pytest finds them by name here).
go_toolchain = go_tests.go_toolchain
go_env = go_tests.go_env
typescript_build = ts_tests.typescript_build


@pytest.fixture(scope="module")
def toolchains() -> None:
    missing = [name for name in ("node", "npm") if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"the cross-language test needs Node.js >= 20 with npm ({', '.join(missing)} missing)"
        )


@pytest.fixture(scope="module")
def go_drive(
    toolchains: None, go_env: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """clients/go/examples/drive, built offline (GOPATH mode) into a temporary directory."""
    package, env = go_env
    binary = tmp_path_factory.mktemp("go-drive") / "drive"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "./examples/drive"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, (
        f"go build ./examples/drive failed:\n{built.stdout}{built.stderr}"
    )
    return binary


@pytest.fixture(scope="module")
def ts_drive(toolchains: None, typescript_build: Path) -> Path:
    """clients/typescript/examples/drive.ts, compiled by the package's tsconfig."""
    script = typescript_build.parent / "examples" / "drive.js"
    assert script.is_file(), f"{script} missing: is examples/ in clients/typescript/tsconfig.json?"
    return script


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cross-language") / "flou.db").start()
    yield process
    process.stop()


class Watcher(threading.Thread):
    """Watches one instance from `from_revision` until it has seen `until` (set later)."""

    def __init__(self, address: str, instance_id: str, from_revision: int) -> None:
        super().__init__(daemon=True)
        self.address, self.instance_id, self.from_revision = address, instance_id, from_revision
        self.snapshot = threading.Event()
        self.until: int | None = None
        self.deadline = time.monotonic() + DRIVE_TIMEOUT * 2
        self.events: list[Event] = []
        self.snapshots: list[Instance] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with FlouClient(self.address, timeout=20) as client:
                watch = client.watch(
                    self.instance_id, from_revision=self.from_revision, heartbeat_interval=0.2
                )
                try:
                    for item in watch:
                        if isinstance(item, Instance):
                            self.snapshots.append(item)
                            self.snapshot.set()
                        elif isinstance(item, Event):
                            self.events.append(item)
                        else:
                            assert isinstance(item, Heartbeat)
                        last = self.events[-1].revision if self.events else self.from_revision
                        if self.until is not None and last >= self.until:
                            return
                        if time.monotonic() > self.deadline:
                            return
                finally:
                    close = getattr(watch, "close", None)  # a generator: cancels the stream
                    if close is not None:
                        close()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.snapshot.set()


def _spawn(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _appended_value(event: Event) -> Any:
    """The value an APPENDED event added to `items` (from its JSON Patch)."""
    added = [
        op.get("value") for op in event.patch if str(op.get("path", "")).startswith(f"/{KEY}")
    ]
    assert len(added) == 1, f"revision {event.revision}: patch {event.patch}"
    return added[0]


def test_go_and_node_drive_one_instance_python_sees_every_revision_once(
    server: ServerProcess, go_drive: Path, ts_drive: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    with FlouClient(server.address, timeout=20) as client:
        instance_id = f"cross-{uuid.uuid4()}"
        client.start("self_loop", instance_id=instance_id, wait="settled")
        # AtomicAppend needs the list to exist: one revision before the watched ones.
        start = client.update_state(instance_id, {KEY: []}, wait="settled").instance.revision

        watcher = Watcher(server.address, instance_id, start)
        watcher.start()
        assert watcher.snapshot.wait(20), "the watcher got no snapshot"
        assert watcher.error is None, watcher.error

        common = ["--addr", server.address, "--instance", instance_id, "--mode", "append"]
        common += ["--key", KEY, "--n", str(PER_LANGUAGE)]
        go_args = [a.replace("--", "-", 1) if a.startswith("--") else a for a in common]
        drivers = {
            "go": _spawn([str(go_drive), *go_args, "-prefix", "go"], go_drive.parent),
            "ts": _spawn([node, str(ts_drive), *common, "--prefix", "ts"], ts_drive.parent),
        }
        outputs: dict[str, dict[str, Any]] = {}
        try:
            for name, process in drivers.items():  # both connected before either starts
                assert process.stdout is not None
                ready = process.stdout.readline().strip()
                assert ready == "ready", f"{name} driver: {ready!r} {process.stderr.read()}"  # type: ignore[union-attr]
            began = time.monotonic()
            for process in drivers.values():
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            for name, process in drivers.items():
                stdout, stderr = process.communicate(timeout=DRIVE_TIMEOUT)
                assert process.returncode == 0, f"{name} driver failed:\n{stdout}\n{stderr}"
                outputs[name] = json.loads(stdout.strip().splitlines()[-1])
            driven = time.monotonic() - began
        finally:
            for process in drivers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(10)

        final = client.get_instance(instance_id)
        watcher.until = final.revision
        watcher.join(DRIVE_TIMEOUT)
        assert not watcher.is_alive(), "the watcher did not reach the final revision"
        assert watcher.error is None, watcher.error

    # The drivers: each call committed one revision, none shared.
    driver_revisions = {name: out["revisions"] for name, out in outputs.items()}
    for name, out in outputs.items():
        assert out["sent"] == PER_LANGUAGE, (name, out)
        assert len(out["revisions"]) == PER_LANGUAGE, (name, out)
    all_driver_revisions = sorted(r for revs in driver_revisions.values() for r in revs)
    expected = list(range(start + 1, final.revision + 1))

    # The watcher: every revision from the start one to the final one, once, in order.
    seen = [event.revision for event in watcher.events]
    duplicates = len(seen) - len(set(seen))
    gaps = sorted(set(expected) - set(seen))
    out_of_order = sum(1 for a, b in itertools.pairwise(seen) if b <= a)
    owner = {r: name for name, revs in driver_revisions.items() for r in revs}
    order = [owner.get(r, "?") for r in seen]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)

    print(
        "\ncross-language figures:"
        f"\n  events driven: go {len(driver_revisions['go'])}, ts {len(driver_revisions['ts'])}"
        f" (total {len(all_driver_revisions)}) in {driven:.2f} s"
        f"\n  revisions seen by the Python watcher: {len(seen)}"
        f" (r{start + 1}..r{final.revision}, snapshot at r{start})"
        f"\n  duplicates: {duplicates}, gaps: {len(gaps)}, out of order: {out_of_order}"
        f"\n  go/ts interleavings in revision order: {switches}"
    )

    assert [s.revision for s in watcher.snapshots] == [start]
    assert duplicates == 0, seen
    assert gaps == [], gaps
    assert out_of_order == 0, seen
    assert seen == expected
    assert all_driver_revisions == expected, (all_driver_revisions, expected)
    assert len(expected) == 2 * PER_LANGUAGE

    # Each revision is the append its driver was answered with.
    values = {f"{name}-{i}" for name in ("go", "ts") for i in range(1, PER_LANGUAGE + 1)}
    for event in watcher.events:
        assert event.kind is EventKind.APPENDED, event
        value = _appended_value(event)
        assert value in values, value
        assert str(value).startswith(owner[event.revision] + "-"), (event.revision, value)
    seen_values = [_appended_value(event) for event in watcher.events]
    assert sorted(seen_values) == sorted(values)
    # Each language's values were committed in the order it sent them.
    for name in ("go", "ts"):
        mine = [v for v in seen_values if v.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(1, PER_LANGUAGE + 1)], mine

    # The final list: every value exactly once.
    assert final.state is not None
    items = final.state[KEY]
    assert len(items) == len(values) == len(set(items))
    assert set(items) == values
