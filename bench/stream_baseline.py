"""The ceiling of Watch fan-out: stream messages per second grpc.aio alone delivers here.

A baseline for bench/service_bench.py's Watch figures: a grpc.aio server
process that does nothing but write the same pre-serialized message (the size
of a real Watch event) to N server-streaming calls, read by a client process
over one channel, as the watchers' process reads Watch streams. No database, no
runtime, no conversion: what is left is grpc's per-message cost on both ends,
on the same 2 cores. A Watch of E events/s to W watchers needs E x W messages/s.

    .venv/bin/python bench/stream_baseline.py [--streams 100] [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import grpc

METHOD = "/flou.bench.Pump/Stream"


def event_bytes() -> bytes:
    """A serialized Watch message of an AtomicAppend event, as the service sends them."""
    from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
    from flou_grpc.runtime.model import Event, EventKind
    from flou_grpc.service import convert

    event = Event(
        instance_id="w0-0123456789",
        revision=1234,
        kind=EventKind.APPENDED,
        item={"fqn": "pingpong", "key": "log", "value": 42.0},
        patch=[{"op": "add", "path": "/log/-", "value": 42.0}],
        create_time=datetime.now(UTC),
    )
    return bytes(pb.WatchResponse(event=convert.event_message(event)).SerializeToString())


def _serve(conn: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serving(conn))


async def _serving(conn: Any) -> None:
    async def stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        count, payload = int.from_bytes(request[:4], "big"), request[4:]
        for _ in range(count):
            await context.write(payload)

    handler = grpc.method_handlers_generic_handler(
        "flou.bench.Pump", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(port)
    await asyncio.to_thread(conn.recv)  # until told to stop
    await server.stop(0)


def _receive(port: int, streams: int, messages: int, payload: bytes, conn: Any) -> None:
    conn.send(asyncio.run(_receiving(port, streams, messages, payload)))


async def _receiving(port: int, streams: int, messages: int, payload: bytes) -> float:
    received = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(METHOD)
        request = messages.to_bytes(4, "big") + payload

        async def one() -> None:
            nonlocal received
            async for _ in call(request):
                received += 1

        await asyncio.gather(*(one() for _ in range(2)))  # warm the channel up
        received = 0
        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - began
    if received != streams * messages:
        raise RuntimeError(f"received {received} of {streams * messages} messages")
    return received / elapsed


def fanout_ceiling(streams: int, messages: int) -> float:
    """Messages/s: `streams` calls on one channel, `messages` Watch-sized messages each."""
    context = multiprocessing.get_context("spawn")
    to_server, server_end = context.Pipe()
    server = context.Process(target=_serve, args=(server_end,), daemon=True)
    server.start()
    try:
        if not to_server.poll(60):
            raise RuntimeError("the pump server did not start")
        port = to_server.recv()
        from_client, client_end = context.Pipe()
        client = context.Process(
            target=_receive, args=(port, streams, messages, event_bytes(), client_end), daemon=True
        )
        client.start()
        try:
            if not from_client.poll(300):
                raise RuntimeError("the pump client did not report")
            rate: float = from_client.recv()
        finally:
            client.join(timeout=5)
        to_server.send(None)
    finally:
        server.join(timeout=5)
        if server.is_alive():
            server.terminate()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--messages", type=int, default=300, help="per stream")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates = [fanout_ceiling(args.streams, args.messages) for _ in range(args.runs)]
    print(
        f"grpc.aio fan-out ceiling, {args.streams} streams x {args.messages} messages of "
        f"{len(event_bytes())} B, one channel: median {statistics.median(rates):,.0f} messages/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
