"""Transition round-trip latency of each client (Python, TypeScript, Go), same server, same run.

Starts one `flou-grpc serve` process (tests/server_process.py,
a SQLite file in a temporary directory), then, one client after the other,
each client sends sequential `Transition("again", wait=processed)` calls to its
own `self_loop` instance (a self loop: the event can be sent any number of
times): `--warmup` unmeasured calls, then `--n` timed ones, each timed in the
client's own process around the wrapper's call (request id, retry wrapper and
decoding included). The TypeScript and Go sides are the driver programs of the
cross-language test (clients/typescript/examples/drive.ts,
clients/go/examples/drive) in their latency mode; they are built here the way
the client tests build them (`tsc -p tsconfig.json`; `go build` in GOPATH mode
with Debian's Go and /usr/share/gocode).

    .venv/bin/python bench/clients_bench.py [--n 300] [--warmup 30] [--rounds 1]

Prints p50 / p99 / mean / max in ms per client (with --rounds > 1 the clients
take turns again and every round's figures are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flou_client import FlouClient  # noqa: E402

from tests.server_process import ServerProcess  # noqa: E402

TS_DIR = ROOT / "clients" / "typescript"
GO_DIR = ROOT / "clients" / "go"
GO_IMPORT_PATH = "github.com/flou-grpc/flou-grpc/clients/go"
LABEL = "again"


def build_ts() -> list[str]:
    """Compiles clients/typescript (npm ci first when node_modules is missing); the command."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("node and npm are needed (apt-get install nodejs npm)")
    if not (TS_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True)
    subprocess.run(
        [str(TS_DIR / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=TS_DIR,
        check=True,
    )
    return [node, str(TS_DIR / "dist" / "examples" / "drive.js")]


def build_go(work: Path) -> list[str]:
    """Builds clients/go/examples/drive offline (GOPATH mode); the command."""
    if shutil.which("go") is None:
        raise SystemExit("go is needed: see tests/integration/clients/test_go_client.py")
    gopath = work / "gopath"
    package = gopath / "src" / GO_IMPORT_PATH
    package.parent.mkdir(parents=True)
    package.symlink_to(GO_DIR, target_is_directory=True)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:/usr/share/gocode",
        "GOCACHE": str(Path("/tmp") / f"flou-go-build-cache-{uid}"),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "CGO_ENABLED": "0",
        "PWD": str(package),
    }
    binary = work / "drive"
    subprocess.run(
        ["go", "build", "-o", str(binary), "./examples/drive"], cwd=package, env=env, check=True
    )
    return [str(binary)]


def run_driver(
    command: list[str], dash: str, address: str, instance_id: str, n: int, warmup: int
) -> list[float]:
    """Runs a driver program in latency mode (`dash`: its flags' prefix); its latencies in ms."""
    args = {"addr": address, "instance": instance_id, "mode": "latency", "label": LABEL}
    args |= {"n": str(n), "warmup": str(warmup)}
    flags = [part for key, value in args.items() for part in (f"{dash}{key}", value)]
    ran = subprocess.run(
        [*command, *flags], input="go\n", capture_output=True, text=True, timeout=300, check=False
    )
    if ran.returncode != 0:
        raise SystemExit(f"{command} failed:\n{ran.stdout}\n{ran.stderr}")
    return [float(x) for x in json.loads(ran.stdout.strip().splitlines()[-1])["latencies_ms"]]


def run_python(client: FlouClient, instance_id: str, n: int, warmup: int) -> list[float]:
    latencies = []
    for i in range(warmup + n):
        began = time.perf_counter()
        client.transition(instance_id, LABEL, wait="processed")
        if i >= warmup:
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="timed calls per client")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured calls first")
    parser.add_argument("--rounds", type=int, default=1, help="turns of the three clients")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flou-clients-bench-") as tmp:
        work = Path(tmp)
        # The command of each driver program and its flags' prefix (node's parseArgs, Go's flag).
        commands = {"typescript": (build_ts(), "--"), "go": (build_go(work), "-")}
        server = ServerProcess(work / "flou.db").start()
        rows: list[tuple[int, str, list[float]]] = []
        try:
            with FlouClient(server.address, timeout=20) as client:
                for round_ in range(1, options.rounds + 1):
                    for name in ("python", "typescript", "go"):
                        instance_id = f"bench-{name}-{uuid.uuid4()}"
                        client.start("self_loop", instance_id=instance_id, wait="settled")
                        if name == "python":
                            latencies = run_python(client, instance_id, options.n, options.warmup)
                        else:
                            command, dash = commands[name]
                            latencies = run_driver(
                                command,
                                dash,
                                server.address,
                                instance_id,
                                options.n,
                                options.warmup,
                            )
                        rows.append((round_, name, latencies))
        finally:
            server.stop()

    print(
        f"\nTransition round trip (self_loop '{LABEL}', wait=processed), one server, "
        f"{options.n} sequential calls per client after {options.warmup} warm-up calls"
    )
    header = (
        f"{'round':>5}  {'client':<11} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for round_, name, latencies in rows:
        print(
            f"{round_:>5}  {name:<11} {percentile(latencies, 50):>8.2f} "
            f"{percentile(latencies, 99):>8.2f} {statistics.fmean(latencies):>8.2f} "
            f"{max(latencies):>8.2f}"
        )


if __name__ == "__main__":
    main()
