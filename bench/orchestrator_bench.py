"""Events/s of the seed's order + payment orchestrator: through the service vs in memory.

Service: a real `python -m flou_grpc serve --port 0` process (FLOU_APP =
bench/orchestrator_machines.py) on SQLite (a temporary file) and on PostgreSQL
(a throwaway database created and dropped through --pg-admin), driven from this
process over one grpc.aio channel with `Transition` (default wait: PROCESSED,
the answer comes once the step is committed): 1 caller on 1 instance, and 16
callers on 16 instances (one each). Each caller sends the cycle of
bench/orchestrator_machines.py over and over on its own instance (the seed's
machines, made cyclic by a `reorder` event that brings the order back to
`pending` and resets the payment; no instance is restarted): order.process
(after_process -> orc.payment.authorize()), payment.capture, order.ship,
order.deliver, order.reorder (after_reorder -> orc.payment.reset()).

In memory, same run, same event sequence, same classes:
- "psm": plain python-statemachine objects, no Orchestrator, no service; the
  callbacks get `orc` (a namespace holding both machines) from the event's
  keyword arguments, python-statemachine's own dependency injection;
- "orchestrator": the same machines inside a `BenchShop` Orchestrator (extra
  figure: what the orchestration layer alone costs).

The ratio is service / psm (events/s), each run's service window compared with
the psm window measured just before it; medians of --runs runs are printed,
with every run's figure and the load average before and after.

    .venv/bin/python bench/orchestrator_bench.py [--quick] [--runs 5] [--seconds 3]
        [--backends sqlite,postgresql]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]

--quick: 1 run of 1.5 s per figure (under 30 s). Servers, databases and
temporary files are removed at the end, on errors and on Ctrl-C / SIGTERM.
The client, the server and the database share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import grpc
from serving import database, running_server  # bench/: the script's directory

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().with_name("orchestrator_machines.py")
MACHINE = "bench_shop"
CALL_TIMEOUT = 30.0
CALLERS = (1, 16)


def _load_machines() -> ModuleType:
    spec = importlib.util.spec_from_file_location("orchestrator_machines", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


machines = _load_machines()
CYCLE: tuple[tuple[str, str], ...] = machines.CYCLE


# --- servers and databases --------------------------------------------------------------------


def in_memory(seconds: float, kind: str) -> float:
    """Events/s of the cycle on one pair of machines, for `seconds`, in this thread."""
    order = machines.OrderStateMachine()
    payment = machines.PaymentStateMachine()
    if kind == "psm":
        orc: Any = SimpleNamespace(order=order, payment=payment)
        sends = [getattr(orc, field).send for field, _ in CYCLE]

        def one(i: int) -> None:
            sends[i](CYCLE[i][1], orc=orc)
    else:
        orc = machines.BenchShop(order=order, payment=payment)
        sends = [getattr(orc, field).send for field, _ in CYCLE]

        def one(i: int) -> None:
            sends[i](CYCLE[i][1])

    count = 0
    began = time.perf_counter()
    stop_at = began + seconds
    while time.perf_counter() < stop_at:
        for i in range(len(CYCLE)):
            one(i)
        count += len(CYCLE)
    elapsed = time.perf_counter() - began
    assert order.current_state_value == "pending"
    assert payment.current_state_value == "unpaid"
    return count / elapsed


# --- through the service ----------------------------------------------------------------------


async def through_service(
    stub: flou_service_pb2_grpc.FlouServiceStub, callers: int, seconds: float, run: int
) -> tuple[float, float, Counter[str]]:
    """(events/s, median latency ms, errors) of `callers` callers, one instance each."""
    ids = [f"r{run}-{callers}-{i}-{uuid.uuid4().hex[:8]}" for i in range(callers)]
    await asyncio.gather(
        *(
            stub.Start(pb.StartRequest(machine=MACHINE, instance_id=i), timeout=CALL_TIMEOUT)
            for i in ids
        )
    )
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds

    async def caller(instance_id: str) -> None:
        sent = 0
        while time.perf_counter() < stop_at:
            field, event = CYCLE[sent % len(CYCLE)]
            began = time.perf_counter()
            try:
                await stub.Transition(
                    pb.TransitionRequest(instance_id=instance_id, label=event, namespace=field),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                errors[f"{exc.code().name}: {exc.details()}"[:200]] += 1
                return  # the cycle is broken for this instance
            latencies.append(time.perf_counter() - began)
            sent += 1

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in ids))
    elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, statistics.median(latencies or [0.0]) * 1000, errors


async def service_runs(
    port: int, runs: int, seconds: float, results: dict[str, list[float]], backend: str
) -> Counter[str]:
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = flou_service_pb2_grpc.FlouServiceStub(channel)
        for run in range(runs):
            for callers in CALLERS:
                memory = in_memory(seconds, "psm")  # just before: the ratio compares neighbours
                rate, p50, failed = await through_service(stub, callers, seconds, run)
                errors.update(failed)
                results.setdefault(f"{backend}/{callers}", []).append(rate)
                results.setdefault(f"{backend}/{callers}/p50", []).append(p50)
                results.setdefault(f"{backend}/{callers}/ratio", []).append(rate / memory)
                results.setdefault("psm", []).append(memory)
                print(
                    f"  run {run + 1} {backend:10} {callers:2} caller(s): {rate:8.1f} events/s "
                    f"(p50 {p50:.2f} ms), in memory {memory:,.0f} events/s, "
                    f"ratio {rate / memory:.5f}",
                    flush=True,
                )
    return errors


def _fmt(values: list[float], spec: str) -> str:
    return (
        f"{statistics.median(values):{spec}}  (runs: {', '.join(f'{v:{spec}}' for v in values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 run of 1.5 s per figure")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 1.5
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    load_before = os.getloadavg()
    print(
        f"orchestrator bench: {MACHINE} (seed order + payment, cyclic), cycle "
        f"{' '.join(f'{m}.{e}' for m, e in CYCLE)}; {args.runs} run(s) x {args.seconds} s "
        f"per figure; {os.cpu_count()} CPUs; load average {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )
    results: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    for _ in range(args.runs):
        results.setdefault("orchestrator", []).append(in_memory(args.seconds, "orchestrator"))
    try:
        with tempfile.TemporaryDirectory(prefix="flou-orchestrator-bench-") as tmp:
            for backend in backends:
                with (
                    database(backend, args.pg_admin, Path(tmp)) as (url, _),
                    running_server(backend, url, Path(tmp), APP) as server,
                ):
                    errors += asyncio.run(
                        service_runs(server.port, args.runs, args.seconds, results, backend)
                    )
    except KeyboardInterrupt:
        print("interrupted: servers stopped, databases dropped")
        sys.exit(130)
    load_after = os.getloadavg()

    print("\nmedians (events/s; every run in parentheses)")
    print(f"  in memory, python-statemachine alone:   {_fmt(results['psm'], ',.0f')}")
    print(f"  in memory, inside a BenchShop Orchestrator: {_fmt(results['orchestrator'], ',.0f')}")
    for backend in backends:
        for callers in CALLERS:
            key = f"{backend}/{callers}"
            label = (
                "1 caller, 1 instance"
                if callers == 1
                else f"{callers} callers, {callers} instances"
            )
            print(f"  service {backend}, {label}: {_fmt(results[key], ',.1f')}")
            print(f"      p50 latency ms: {_fmt(results[key + '/p50'], '.2f')}")
            print(f"      ratio service / in-memory psm: {_fmt(results[key + '/ratio'], '.5f')}")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    if errors:
        print("errors:")
        for text, count in errors.most_common(5):
            print(f"  x{count}: {text}")
    else:
        print("errors: none")


if __name__ == "__main__":
    main()
