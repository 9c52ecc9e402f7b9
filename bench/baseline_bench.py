"""The gRPC baseline of this server stack: unary RPC throughput and latency over loopback.

Runs `flou-grpc serve` as its own process (as in production) and drives the
standard health `Check` RPC, which does no work, from this process with 1 and
32 concurrent callers. Every later service benchmark (Start/s, Transition/s,
AtomicAppend/s) is reported as a ratio to these figures, measured in the same
run: they say what the grpc.aio stack itself costs on this machine.

    .venv/bin/python bench/baseline_bench.py [--seconds 3] [--runs 5]

Prints the median over the runs (the machine is noisy) and every run's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@contextmanager
def running_server():
    process = subprocess.Popen(
        [sys.executable, "-m", "flou_grpc", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        match, seen = None, []
        for line in process.stderr:  # start-up lines, then the one that gives the port
            seen.append(line)
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                break
        if not match:
            raise RuntimeError(f"the server did not start: {''.join(seen[-5:])}")
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


async def _measure(port: int, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """Returns (RPCs per second, p50 ms, p99 ms)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(200):  # warm up the connection and the server
            await stub.Check(request)
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await stub.Check(request)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return len(latencies) / elapsed, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with running_server() as port:
        for concurrency in (1, 32):
            runs = [
                asyncio.run(_measure(port, concurrency, args.seconds)) for _ in range(args.runs)
            ]
            rates = [r[0] for r in runs]
            print(
                f"health Check, {concurrency:>2} concurrent: "
                f"median {statistics.median(rates):8.0f} RPC/s, "
                f"p50 {statistics.median(r[1] for r in runs):.3f} ms, "
                f"p99 {statistics.median(r[2] for r in runs):.3f} ms "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
            )


if __name__ == "__main__":
    main()
