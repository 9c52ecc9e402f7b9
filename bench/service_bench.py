"""The service over loopback: RPC/s, latency, Watch delivery and memory of a real server process.

Runs `flou-grpc serve` as its own process (as in production: `python -m
flou_grpc serve --port 0`, with FLOU_DATABASE_URL, and FLOU_APP naming
bench/pingpong.py, which defines the machine) and drives it from this process over one
grpc.aio channel: N concurrent callers are N asyncio tasks on that one channel,
as in bench/baseline_bench.py. Every figure is taken in the same run as the
grpc echo baseline it is compared with: the standard health `Check`, an almost
empty unary RPC served by the same grpc.aio server process.

The machine is a 2-state ping-pong LTM (`a --go--> b`, `b --back--> a`) whose
root holds a list `log` for AtomicAppend. Every server runs on the stores'
durable defaults, in throwaway databases: a temporary SQLite file, a uniquely
named PostgreSQL database (created and dropped through --pg-admin). Servers,
databases, temporary files and the watchers' process are cleaned up at the
end, on errors and on Ctrl-C; what a server logged beyond INFO is printed.

Measured, per backend:
1. closed loop, interleaved run by run (each run: echo, Start, Transition,
   AtomicAppend), so that the ratios compare figures taken moments apart on
   this noisy machine; each figure / the echo with as many callers, same run:
   - echo: health Check RPC/s with 1 and 32 callers;
   - Start/s (default wait, PROCESSED: the instance exists, its root is
     queued) with 1 and 32 callers. The started instances' own work
     (executing the root and `a`) runs on behind the answers; after the window
     it is drained (GetInstance until none has pending work) before the next
     figure, and "incl. drain" also counts that time;
   - Transition/s (wait PROCESSED, the default) with 1 caller on 1 instance
     and 32 callers on 32 instances (one each: an instance processes its
     mailbox in order, so a transition waits behind that instance's earlier
     work). Each answered Transition is 2 steps, the transition and its
     target's execute, committed in one transaction (the execute is chained:
     the target has no `run`);
   - AtomicAppend/s with 1 caller on 1 instance, 32 callers on 32 instances
     and 32 callers on ONE instance (target: >= 60% of the echo). Each append
     adds a value to the list and every answer carries the whole list, so
     fresh instances are used each run (the output gives the longest list).
     Appends that arrive while others commit are group-committed (README,
     "Waits and deadlines"): with 32 callers, several share a transaction.
     The same three again with `view` APPEND_VIEW_BASIC ("AtomicAppend
     BASIC"): the answer carries the list's length, not the list, so its
     cost does not grow with the list.
2. (PostgreSQL) Transition latency at a fixed offered rate (--latency-rate,
   200/s), open loop over --latency-instances instances: send n is due at
   n / rate and its latency counts from then; it goes to an instance with no
   transition in flight (one queued behind an unprocessed one would overtake
   the target's execute step and be rejected), so when all are busy sends
   wait, and the wait counts (target: p99 < 10 ms).
3. Watch delivery: --watchers streams over --watch-instances instances, opened
   by a separate process (spawned, one channel), while this process commits
   AtomicAppends (APPEND_VIEW_BASIC: the appender needs no list back) open
   loop at each of --watch-rates in turn (1000/s, then
   100/s in total; at most 64 in flight: further sends are skipped and
   counted). For every event every watcher receives, the latency from the
   moment the appending client SENT the append (an upper bound of commit ->
   client: the commit comes after it), from the moment it got the ANSWER (a
   lower bound: a watcher may be told first), and from the event's
   `create_time` (server wall clock, taken just before the commit). Both
   processes read CLOCK_MONOTONIC (`time.perf_counter`), one clock on Linux.
   Also the event rate achieved, and whether every watcher got every event
   (target: p99 < 10 ms at ~1,000 events/s). The messages/s the watchers
   received are compared with the grpc fan-out baseline of the same run
   (bench/stream_baseline.py: the same number of streams of Watch-sized
   messages from a server that does nothing else).
4. Memory, once, on a fresh server (PostgreSQL if selected): VmRSS / VmHWM of
   the server process (/proc/<pid>/status) idle, after up to --rss-instances
   Starts (wait ENQUEUED, 32 callers, time-boxed by --rss-seconds; the output
   says how many were created), then with --rss-watches Watch streams open
   (one per instance, from this process over 10 channels).

    .venv/bin/python bench/service_bench.py [--runs 3] [--seconds 2] [--quick]
        [--backends postgresql,sqlite] [--phases throughput,latency,watch,memory]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]

Default total: about 5 minutes on this 2-core machine; --quick (1 short run of
everything, 1,000 instances at most): under a minute. The client, the server,
the database (and the watchers' process) share the 2 cores: every figure is
what the whole loopback setup achieves, not the server alone. Prints the
median over the runs (the machine is noisy) and every run's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import Server, database, running_server  # bench/: the script's directory
from stream_baseline import fanout_ceiling

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc, instance_pb2

APP = Path(__file__).resolve().with_name("pingpong.py")  # the machine the server serves
MACHINE = "pingpong"
LABELS = ("go", "back")
CLIENTS = (1, 32)
CALL_TIMEOUT = 30.0  # every RPC's deadline: a stuck server shows as errors, not a hang
BASIC = instance_pb2.INSTANCE_VIEW_BASIC


# --- measuring -------------------------------------------------------------------------------


def _error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class Window:
    """One timed window: answered RPCs per second, latency in ms, errors."""

    rate: float
    p50: float
    p99: float
    count: int
    errors: Counter[str]
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        latencies: Sequence[float],
        elapsed: float,
        errors: Counter[str],
        extra: dict[str, float] | None = None,
    ) -> Window:
        """The window of calls answered in `latencies` (seconds) over `elapsed` seconds."""
        return cls(
            len(latencies) / elapsed,
            _quantile(latencies, 0.5) * 1000,
            _quantile(latencies, 0.99) * 1000,
            len(latencies),
            errors,
            extra or {},
        )


async def closed_loop(
    clients: int, seconds: float, call: Callable[[int], Awaitable[object]]
) -> Window:
    """`clients` asyncio tasks calling `call(client)` back to back for `seconds`."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                await call(index)
            except grpc.aio.AioRpcError as exc:
                errors[_error(exc)] += 1
                continue
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return Window.of(latencies, time.perf_counter() - began, errors)


class Client:
    """The stubs of one channel to the server."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.flou = flou_service_pb2_grpc.FlouServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def start(self, instance_id: str, wait: int = pb.WAIT_MODE_UNSPECIFIED) -> None:
        await self.flou.Start(
            pb.StartRequest(machine=MACHINE, instance_id=instance_id, wait=wait),
            timeout=CALL_TIMEOUT,
        )

    async def started(self, count: int, prefix: str) -> list[str]:
        """`count` new settled instances (waiting in `a`)."""
        ids = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        await asyncio.gather(*(self.start(i, pb.WAIT_MODE_SETTLED) for i in ids))
        return ids

    async def settle(self, ids: Sequence[str], clients: int = 4, timeout: float = 300) -> float:
        """Polls until none of `ids` has pending work; returns the seconds it took.

        A few pollers, each waiting 10 ms between two reads of one instance:
        more would load the server they measure (32 pollers read up to 3,200
        times a second, which stretched the drain of 600 started instances
        from about 4.8 s to 7 s).
        """
        began = time.perf_counter()
        todo = list(ids)  # popped from the end: the newest first

        async def poller() -> None:
            while todo:
                instance_id = todo.pop()
                while True:
                    answer = await self.flou.GetInstance(
                        pb.GetInstanceRequest(instance_id=instance_id, view=BASIC),
                        timeout=CALL_TIMEOUT,
                    )
                    if answer.instance.pending_work_count == 0:
                        break
                    await asyncio.sleep(0.01)

        async with asyncio.timeout(timeout):
            await asyncio.gather(*(poller() for _ in range(clients)))
        return time.perf_counter() - began


class Pinger:
    """Sends go/back alternately to instances that wait in `a` (resyncs after an error)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sent: dict[str, int] = defaultdict(int)

    async def transition(self, instance_id: str) -> None:
        label = LABELS[self.sent[instance_id] % 2]
        self.sent[instance_id] += 1  # before the answer: another may be sent meanwhile
        try:
            await self.client.flou.Transition(
                pb.TransitionRequest(instance_id=instance_id, label=label), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            await self.resync(instance_id)
            raise

    async def resync(self, instance_id: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
            await self.client.settle([instance_id], 1, timeout=10)
            answer = await self.client.flou.GetInstance(
                pb.GetInstanceRequest(instance_id=instance_id, view=BASIC), timeout=CALL_TIMEOUT
            )
            self.sent[instance_id] = 0 if f"{MACHINE}.a" in answer.instance.active_states else 1


def _value(number: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=number)


async def throughput_run(client: Client, seconds: float, run: int) -> dict[str, Window]:
    """One run of every closed-loop figure, in a fixed order."""
    windows: dict[str, Window] = {}
    health = health_pb2.HealthCheckRequest()
    for clients in CLIENTS:
        windows[f"echo/{clients}"] = await closed_loop(
            clients, seconds, lambda _: client.health.Check(health, timeout=CALL_TIMEOUT)
        )
    for clients in CLIENTS:
        created: list[str] = []

        async def start(index: int, created: list[str] = created) -> None:
            instance_id = f"s{run}-{index}-{uuid.uuid4().hex[:10]}"
            await client.start(instance_id)
            created.append(instance_id)

        window = await closed_loop(clients, seconds, start)
        drain = await client.settle(created)
        window.extra["drain"] = drain
        window.extra["with_drain"] = window.count / (window.count / window.rate + drain)
        windows[f"start/{clients}"] = window
    pinger = Pinger(client)
    for clients in CLIENTS:
        ids = await client.started(clients, f"t{run}")
        windows[f"transition/{clients}"] = await closed_loop(
            clients, seconds, lambda index, ids=ids: pinger.transition(ids[index])
        )
        await client.settle(ids)
    for kind, view in (("append", pb.APPEND_VIEW_FULL), ("count", pb.APPEND_VIEW_BASIC)):
        for name, clients, instances in (("1", 1, 1), ("32x32", 32, 32), ("32x1", 32, 1)):
            ids = await client.started(instances, f"{kind[0]}{run}")
            longest = 0

            async def append(index: int, ids: list[str] = ids, view: int = view) -> None:
                nonlocal longest
                answer = await client.flou.AtomicAppend(
                    pb.AtomicAppendRequest(
                        instance_id=ids[index % len(ids)],
                        key="log",
                        value=_value(index),
                        view=view,
                    ),
                    timeout=CALL_TIMEOUT,
                )
                longest = max(longest, answer.length)

            window = await closed_loop(clients, seconds, append)
            window.extra["longest"] = longest
            windows[f"{kind}/{name}"] = window
    return windows


async def transition_latency(
    client: Client, rate: float, seconds: float, instances: int, run: int
) -> Window:
    """Transitions offered open loop at `rate`/s, each sent to an instance with none in flight.

    Send n is due at `began + n / rate` and its latency counts from then. One
    task per instance takes the next due send when its previous transition was
    answered (a transition sent while the previous one is still queued would be
    processed before the target's execute step and rejected); when every
    instance is busy, sends wait, and the wait is part of their latency. Sends
    still not made one window after the end are given up and counted.
    """
    ids = await client.started(instances, f"l{run}")
    pinger = Pinger(client)
    await asyncio.gather(*(pinger.transition(i) for i in ids))  # warm: one each
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    total = int(rate * seconds)
    began = time.perf_counter() + 0.05
    give_up = began + 2 * seconds + 1
    lateness = 0.0
    taken = 0

    async def sender(instance_id: str) -> None:
        nonlocal taken, lateness
        while taken < total and time.perf_counter() < give_up:
            scheduled = began + taken / rate
            taken += 1
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness = max(lateness, time.perf_counter() - scheduled)
            try:
                await pinger.transition(instance_id)
            except grpc.aio.AioRpcError as exc:
                errors[_error(exc)] += 1
                continue
            latencies.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(sender(i) for i in ids))
    elapsed = time.perf_counter() - began
    await client.settle(ids)
    extra = {"lateness": lateness * 1000, "unsent": total - taken, "offered": total}
    return Window.of(latencies, elapsed, errors, extra)


# --- Watch delivery: the watchers' process ----------------------------------------------------


def watcher_process(port: int, ids: list[str], per_instance: int, conn: Any) -> None:
    """The watchers' process: `per_instance` Watch streams on each of `ids`, on one channel."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watchers(port, ids, per_instance, conn))


async def _watchers(port: int, ids: list[str], per_instance: int, conn: Any) -> None:
    """Opens the streams, says "ready"; then, for each {instance: revision} received, waits
    until every stream got there (10 s at most) and sends back what was received since."""
    records: list[tuple[int, int, float, float, float]] = []  # instance, rev, mono, wall, ct
    errors: Counter[str] = Counter()
    last: dict[tuple[int, int], int] = {}
    total = len(ids) * per_instance
    all_ready = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = flou_service_pb2_grpc.FlouServiceStub(channel)

        async def watch(index: int, watcher: int) -> None:
            try:
                async for message in stub.Watch(pb.WatchRequest(instance_id=ids[index])):
                    now = time.perf_counter()
                    if message.HasField("event"):
                        event = message.event
                        created = event.create_time
                        records.append(
                            (
                                index,
                                event.revision,
                                now,
                                time.time(),
                                created.seconds + created.nanos / 1e9,
                            )
                        )
                        last[index, watcher] = event.revision
                    elif message.HasField("snapshot"):
                        last[index, watcher] = message.snapshot.revision
                        if len(last) == total:
                            all_ready.set()
            except grpc.aio.AioRpcError as exc:
                errors[_error(exc)] += 1

        tasks = [
            asyncio.create_task(watch(i, w)) for i in range(len(ids)) for w in range(per_instance)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    await all_ready.wait()
            conn.send(("ready", len(last), dict(errors)))
            while (final := await asyncio.to_thread(conn.recv)) is not None:
                deadline = time.perf_counter() + 10  # let the last events arrive
                while time.perf_counter() < deadline and any(
                    last.get(key, 0) < final[key[0]] for key in last
                ):
                    await asyncio.sleep(0.02)
                conn.send(("records", list(records), dict(errors)))
                records.clear()
                errors.clear()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def append_open_loop(
    client: Client, ids: Sequence[str], rate: float, seconds: float
) -> tuple[dict[tuple[int, int], tuple[float, float]], float, int, Counter[str]]:
    """AtomicAppends offered at `rate`/s round-robin over `ids`, at most 64 in flight.

    Returns {(instance index, revision): (sent, answered)}, the seconds it took,
    the sends skipped because 64 were in flight, and the errors.
    """
    sent: dict[tuple[int, int], tuple[float, float]] = {}
    errors: Counter[str] = Counter()
    skipped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def append(index: int, n: int) -> None:
        began = time.perf_counter()
        try:
            answer = await client.flou.AtomicAppend(
                pb.AtomicAppendRequest(
                    instance_id=ids[index], key="log", value=_value(n), view=pb.APPEND_VIEW_BASIC
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            errors[_error(exc)] += 1
            return
        sent[index, answer.revision] = (began, time.perf_counter())

    total = int(rate * seconds)
    began = time.perf_counter() + 0.05
    for n in range(total):
        scheduled = began + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= 64:  # the server fell behind: do not pile up more
            skipped += 1
            continue
        task = asyncio.create_task(append(n % len(ids), n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return sent, time.perf_counter() - began, skipped, errors


async def watch_run(
    client: Client,
    port: int,
    instances: int,
    per_instance: int,
    rates: Sequence[float],
    seconds: float,
    run: int,
) -> dict[float, dict[str, Any]]:
    """One run of Watch delivery at each offered rate: the watchers in a child process."""
    ids = await client.started(instances, f"w{run}")
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    child = context.Process(
        target=watcher_process, args=(port, ids, per_instance, theirs), daemon=True
    )
    child.start()
    figures: dict[float, dict[str, Any]] = {}
    try:
        if not await asyncio.to_thread(mine.poll, 120):
            raise RuntimeError("the watcher process did not report")
        _, ready, open_errors = mine.recv()
        if ready < instances * per_instance:
            raise RuntimeError(
                f"only {ready} of {instances * per_instance} watches opened: {open_errors}"
            )
        for rate in rates:
            sent, elapsed, skipped, errors = await append_open_loop(client, ids, rate, seconds)
            final = {i: max((r for (j, r) in sent if j == i), default=0) for i in range(instances)}
            caught_up = time.perf_counter()
            mine.send(final)
            if not await asyncio.to_thread(mine.poll, 120):
                raise RuntimeError("the watcher process did not send its records")
            _, records, watch_errors = mine.recv()
            figures[rate] = _watch_figures(
                sent, records, per_instance, elapsed, skipped, {**errors, **watch_errors}
            )
            figures[rate]["catch_up"] = time.perf_counter() - caught_up
        mine.send(None)
    finally:
        mine.close()  # ends the child's wait for orders, if it still waits
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
    return figures


def _watch_figures(
    sent: Mapping[tuple[int, int], tuple[float, float]],
    records: Sequence[tuple[int, int, float, float, float]],
    per_instance: int,
    elapsed: float,
    skipped: int,
    errors: Mapping[str, int],
) -> dict[str, Any]:
    from_sent, from_response, from_commit = [], [], []
    for index, revision, mono, wall, created in records:
        times = sent.get((index, revision))
        if times is None:
            continue
        from_sent.append((mono - times[0]) * 1000)
        from_response.append((mono - times[1]) * 1000)
        from_commit.append((wall - created) * 1000)
    return {
        "rate": len(sent) / elapsed,
        "skipped": skipped,
        "expected": len(sent) * per_instance,
        "delivered": len(from_sent),
        "messages": len(records) / elapsed,
        "sent_p50": _quantile(from_sent, 0.5),
        "sent_p99": _quantile(from_sent, 0.99),
        "response_p50": _quantile(from_response, 0.5),
        "response_p99": _quantile(from_response, 0.99),
        "commit_p50": _quantile(from_commit, 0.5),
        "commit_p99": _quantile(from_commit, 0.99),
        "errors": "; ".join(f"{k} x{v}" for k, v in errors.items()),
    }


# --- memory --------------------------------------------------------------------------------


async def memory_run(server: Server, args: argparse.Namespace) -> None:
    """RSS idle, after Starts (ENQUEUED), then with open Watch streams; printed as it goes."""
    b = server.backend
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        client = Client(channel)
        for _ in range(200):
            await client.health.Check(health_pb2.HealthCheckRequest())
        idle = server.memory()
        print(f"memory, {b}: idle server VmRSS {idle['VmRSS'] / 1024:.1f} MiB")
        created: list[str] = []
        errors: Counter[str] = Counter()
        began = time.perf_counter()
        stop_at = began + args.rss_seconds
        counter = iter(range(args.rss_instances))

        async def starter() -> None:
            while time.perf_counter() < stop_at:
                n = next(counter, None)
                if n is None:
                    return
                instance_id = f"m-{n}"
                try:
                    await client.start(instance_id, pb.WAIT_MODE_ENQUEUED)
                except grpc.aio.AioRpcError as exc:
                    errors[_error(exc)] += 1
                    continue
                created.append(instance_id)

        await asyncio.gather(*(starter() for _ in range(32)))
        elapsed = time.perf_counter() - began
        after = server.memory()
        sample = created[:: max(1, len(created) // 50)]
        running = 0
        for instance_id in sample:
            answer = await client.flou.GetInstance(
                pb.GetInstanceRequest(instance_id=instance_id, view=BASIC), timeout=CALL_TIMEOUT
            )
            running += answer.instance.pending_work_count > 0
        grown = after["VmRSS"] - idle["VmRSS"]
        capped = "" if len(created) == args.rss_instances else f" (time box {args.rss_seconds} s)"
        print(
            f"memory, {b}: {len(created):,} of {args.rss_instances:,} instances created{capped} "
            f"in {elapsed:.1f} s ({len(created) / elapsed:.0f} Start/s, wait ENQUEUED, "
            f"32 callers), {sum(errors.values())} errors; right after: "
            f"VmRSS {after['VmRSS'] / 1024:.1f} MiB (+{grown / 1024:.1f} MiB, "
            f"{grown * 1024 / max(1, len(created)):.0f} B per "
            f"instance); {running} of {len(sample)} sampled instances still had pending work"
        )
        for text, count in errors.most_common(5):
            print(f"    error x{count}: {text}")
    # The watches: one per instance, from this process, over 10 channels.
    watched = created[: args.rss_watches]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for _ in range(10)]
    opened = 0
    watch_errors: Counter[str] = Counter()
    all_open = asyncio.Event()

    async def watch(n: int, instance_id: str) -> None:
        nonlocal opened
        stub = flou_service_pb2_grpc.FlouServiceStub(channels[n % len(channels)])
        try:
            async for message in stub.Watch(pb.WatchRequest(instance_id=instance_id)):
                if message.HasField("snapshot"):
                    opened += 1
                    if opened == len(watched):
                        all_open.set()
        except grpc.aio.AioRpcError as exc:
            watch_errors[_error(exc)] += 1
            if opened + sum(watch_errors.values()) >= len(watched):
                all_open.set()

    began = time.perf_counter()
    tasks = [asyncio.create_task(watch(n, i)) for n, i in enumerate(watched)]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120):
                await all_open.wait()
        took = time.perf_counter() - began
        await asyncio.sleep(1)  # let the server's buffers settle
        watching = server.memory()
        still = opened - sum(watch_errors.values())
        print(
            f"memory, {b}: {opened:,} of {len(watched):,} Watch streams opened in {took:.1f} s "
            f"(10 channels), {sum(watch_errors.values())} errors; with them open: VmRSS "
            f"{watching['VmRSS'] / 1024:.1f} MiB "
            f"(+{(watching['VmRSS'] - after['VmRSS']) / 1024:.1f} MiB, "
            f"{(watching['VmRSS'] - after['VmRSS']) / max(1, still):.1f} kB per stream); "
            f"peak (VmHWM) {watching['VmHWM'] / 1024:.1f} MiB"
        )
        for text, count in watch_errors.most_common(5):
            print(f"    error x{count}: {text}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


# --- one backend -------------------------------------------------------------------------------


@dataclass
class Results:
    backend: str
    settings: str = ""
    windows: dict[str, list[Window]] = field(default_factory=lambda: defaultdict(list))
    latency: list[Window] = field(default_factory=list)
    watch: list[dict[float, dict[str, Any]]] = field(default_factory=list)
    seconds: float = 0.0
    load: str = ""


async def measure(server: Server, results: Results, args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        client = Client(channel)
        for _ in range(200):  # warm up the connection and the server
            await client.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        ids = await client.started(4, "warm")
        pinger = Pinger(client)
        for _ in range(20):
            await asyncio.gather(*(pinger.transition(i) for i in ids))
        for run in range(args.runs if "throughput" in args.phases else 0):
            for name, window in (await throughput_run(client, args.seconds, run)).items():
                results.windows[name].append(window)
            print(f"  {results.backend}: throughput run {run + 1}/{args.runs} done", flush=True)
        if server.backend == "postgresql" and "latency" in args.phases:
            for run in range(args.runs):
                window = await transition_latency(
                    client, args.latency_rate, args.latency_seconds, args.latency_instances, run
                )
                results.latency.append(window)
        if "watch" in args.phases:
            for run in range(args.runs):
                results.watch.append(
                    await watch_run(
                        client,
                        server.port,
                        args.watch_instances,
                        args.watchers // args.watch_instances,
                        args.watch_rates,
                        args.watch_seconds,
                        run,
                    )
                )


# --- the report ----------------------------------------------------------------------------


def _runs(values: Sequence[float], spec: str = ".0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


TITLES = {
    "echo/1": "echo (health Check),  1 caller          ",
    "echo/32": "echo (health Check), 32 callers         ",
    "start/1": "Start,                1 caller          ",
    "start/32": "Start,               32 callers         ",
    "transition/1": "Transition,           1 caller,  1 inst.",
    "transition/32": "Transition,          32 callers, 32 inst.",
    "append/1": "AtomicAppend,         1 caller,  1 inst.",
    "append/32x32": "AtomicAppend,        32 callers, 32 inst.",
    "append/32x1": "AtomicAppend,        32 callers,  1 inst.",
    "count/1": "AtomicAppend BASIC,   1 caller,  1 inst.",
    "count/32x32": "AtomicAppend BASIC,  32 callers, 32 inst.",
    "count/32x1": "AtomicAppend BASIC,  32 callers,  1 inst.",
}


def report(results: Results, args: argparse.Namespace, ceiling: float | None) -> list[str]:
    """Prints the backend's figures; returns its target lines.

    `ceiling`: the grpc fan-out baseline, stream messages/s (bench/stream_baseline.py).
    """
    b = results.backend
    targets: list[str] = []
    print(
        f"== {b}: {results.settings}; measured in {results.seconds:.0f} s, load average "
        f"before {results.load}"
    )
    print(
        f"{b}: closed loop, {args.runs} runs of {args.seconds:g} s per figure, N callers = N "
        "asyncio tasks on one channel; ratio = figure / echo with as many callers, same run"
    )
    for name, title in TITLES.items():
        windows = results.windows.get(name)
        if not windows:
            continue
        rates = [w.rate for w in windows]
        clients = name.split("/")[1].split("x")[0]
        line = (
            f"{b}, {title}: median {statistics.median(rates):7.0f} RPC/s (runs: {_runs(rates)}); "
            f"p50 {statistics.median(w.p50 for w in windows):.2f} ms, "
            f"p99 {statistics.median(w.p99 for w in windows):.2f} ms"
        )
        if not name.startswith("echo"):
            echo = results.windows[f"echo/{clients}"]
            ratios = [w.rate / e.rate for w, e in zip(windows, echo, strict=True)]
            ratio = statistics.median(ratios)
            line += f"; / echo median {ratio:.3f} (per run: {_runs(ratios, '.3f')})"
            if name.startswith(("append", "count")):
                targets.append(
                    f"target, {b}, {title.strip()}: >= 60% of echo's RPC/s: "
                    f"{_met(statistics.median(ratios) >= 0.6)} ({statistics.median(ratios):.1%})"
                )
        print(line)
        if name.startswith("start"):
            with_drain = [w.extra["with_drain"] for w in windows]
            print(
                f"    incl. draining the started instances' work: median "
                f"{statistics.median(with_drain):.0f} Start/s (runs: {_runs(with_drain)}); "
                f"drain {_runs([w.extra['drain'] for w in windows], '.2f')} s"
            )
        if name.startswith("transition"):
            print(f"    = {2 * statistics.median(rates):.0f} committed steps/s")
        if name.startswith(("append", "count")):
            print(f"    longest list reached: {_runs([w.extra['longest'] for w in windows])}")
        errors = sum((w.errors for w in windows), Counter())
        for text, count in errors.most_common(5):
            print(f"    error x{count}: {text}")
    if results.latency:
        runs = results.latency
        p50 = [w.p50 for w in runs]
        p99 = [w.p99 for w in runs]
        print(
            f"{b}, Transition latency at {args.latency_rate:g}/s offered (open loop, "
            f"{args.latency_instances} instances, {args.latency_seconds:g} s per run, latency "
            f"from each send's scheduled time): p50 median {statistics.median(p50):.2f} ms "
            f"(runs: {_runs(p50, '.2f')}), p99 median {statistics.median(p99):.2f} ms "
            f"(runs: {_runs(p99, '.2f')})"
        )
        unsent = sum(w.extra["unsent"] for w in runs)
        print(
            f"    answered {_runs([w.rate for w in runs])}/s; sends given up (every instance "
            f"busy until one window after the end): {unsent:.0f} of "
            f"{sum(w.extra['offered'] for w in runs):.0f}; client's worst lateness "
            f"{_runs([w.extra['lateness'] for w in runs], '.1f')} ms"
        )
        errors = sum((w.errors for w in runs), Counter())
        for text, count in errors.most_common(5):
            print(f"    error x{count}: {text}")
        sustained = all(w.rate >= 0.95 * args.latency_rate for w in runs) and not unsent
        targets.append(
            f"target, {b}, Transition p99 < 10 ms at {args.latency_rate:g}/s: "
            f"{_met(statistics.median(p99) < 10 and sustained)} ({statistics.median(p99):.2f} "
            f"ms; rate {'sustained' if sustained else 'NOT sustained'})"
        )
    for rate in args.watch_rates if results.watch else ():
        runs = [run[rate] for run in results.watch]
        rates = [r["rate"] for r in runs]
        print(
            f"{b}, Watch: {args.watchers} streams on {args.watch_instances} instances (one "
            f"child process, one channel), AtomicAppend at {rate:g}/s offered (open loop, "
            f"{args.watch_seconds:g} s per run)"
        )
        print(
            f"    events committed: median {statistics.median(rates):.0f}/s (runs: "
            f"{_runs(rates)}); messages received by the watchers "
            f"{_runs([r['messages'] for r in runs])}/s; delivered "
            + ", ".join(f"{r['delivered']:.0f}/{r['expected']:.0f}" for r in runs)
            + " (events x watchers); sends skipped (64 in flight) "
            + _runs([r["skipped"] for r in runs])
            + "; all watchers caught up (and records collected) "
            + _runs([r["catch_up"] for r in runs], ".2f")
            + " s after the last answer"
        )
        for key, what in (
            ("sent", "from the append's send (upper bound)"),
            ("response", "from the append's answer (lower bound)"),
            ("commit", "from the event's create_time (server clock)"),
        ):
            p50 = [r[f"{key}_p50"] for r in runs]
            p99 = [r[f"{key}_p99"] for r in runs]
            print(
                f"    latency {what:44}: p50 median {statistics.median(p50):7.2f} ms "
                f"(runs: {_runs(p50, '.2f')}), p99 median {statistics.median(p99):7.2f} ms "
                f"(runs: {_runs(p99, '.2f')})"
            )
        if ceiling:
            received = statistics.median(r["messages"] for r in runs)
            needed = rate * (args.watchers // args.watch_instances)  # each to its watchers
            print(
                f"    messages received: median {received:,.0f}/s = "
                f"{received / ceiling:.2f} of the grpc fan-out baseline ({ceiling:,.0f}/s); "
                f"{rate:g} events/s to {args.watchers // args.watch_instances} watchers each "
                f"needs {needed:,.0f}/s = {needed / ceiling:.2f} of it"
            )
        for r in runs:
            if r["errors"]:
                print(f"    errors: {r['errors']}")
        sent_p99 = statistics.median(r["sent_p99"] for r in runs)
        response_p99 = statistics.median(r["response_p99"] for r in runs)
        achieved = statistics.median(rates)
        complete = all(r["delivered"] == r["expected"] for r in runs)
        targets.append(
            f"target, {b}, Watch p99 < 10 ms, {rate:g}/s offered ({achieved:.0f}/s "
            f"{'sustained' if achieved >= 0.95 * rate else 'achieved, NOT sustained'}): "
            f"from send {_met(sent_p99 < 10)} ({sent_p99:.2f} ms), from answer "
            f"{_met(response_p99 < 10)} ({response_p99:.2f} ms); every event to every "
            f"watcher: {'yes' if complete else 'NO'}"
        )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput window")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--phases", default="throughput,latency,watch,memory")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--latency-instances", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--watch-instances", type=int, default=10)
    parser.add_argument(
        "--watch-rates", default="1000,100", help="appends/s offered in total, one step each"
    )
    parser.add_argument("--watch-seconds", type=float, default=3.0)
    parser.add_argument("--rss-instances", type=int, default=10_000)
    parser.add_argument("--rss-seconds", type=float, default=40.0, help="time box of the Starts")
    parser.add_argument("--rss-watches", type=int, default=1000)
    parser.add_argument(
        "--quick", action="store_true", help="everything, briefly (a smoke test, < 1 minute)"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 0.5
        args.latency_seconds, args.watch_seconds = 1.0, 1.0
        args.rss_instances, args.rss_seconds = 1000, 5.0
    args.watch_rates = [float(r) for r in args.watch_rates.split(",") if r.strip()]
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if unknown := set(backends) - {"postgresql", "sqlite"}:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if unknown := args.phases - {"throughput", "latency", "watch", "memory"}:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the start {load} ({cpus} CPUs): other work on the machine skews all")
    began = time.perf_counter()
    targets: list[str] = []
    ceiling = None
    if "watch" in args.phases:
        fanout = [fanout_ceiling(args.watchers, 300) for _ in range(args.runs)]
        ceiling = statistics.median(fanout)
        print(
            f"grpc fan-out baseline (bench/stream_baseline.py: {args.watchers} streams of "
            f"Watch-sized messages, one channel, no service): median {ceiling:,.0f} "
            f"messages/s (runs: {_runs(fanout)})"
        )
    with tempfile.TemporaryDirectory(prefix="flou-service-bench-") as directory:
        for backend in backends if args.phases - {"memory"} else ():
            with (
                database(backend, args.pg_admin, Path(directory)) as (url, settings),
                running_server(backend, url, Path(directory), APP) as server,
            ):
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                results = Results(backend, settings, load=load)
                measured = time.perf_counter()
                asyncio.run(measure(server, results, args))
                results.seconds = time.perf_counter() - measured
            targets += report(results, args, ceiling)
        if "memory" in args.phases and backends:
            backend = "postgresql" if "postgresql" in backends else backends[0]
            with (
                database(backend, args.pg_admin, Path(directory)) as (url, settings),
                running_server(backend, url, Path(directory), APP) as server,
            ):
                print(f"== memory: a fresh server on {settings}")
                asyncio.run(memory_run(server, args))
    for line in targets:
        print(line)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"total {time.perf_counter() - began:.0f} s; load average at the end {load} ({cpus} CPUs)"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: servers stopped, databases dropped, temporary files removed")
        sys.exit(130)
