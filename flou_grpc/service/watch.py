"""Watch streams: the history as the truth, a bounded buffer per stream, heartbeats.

Each stream has a producer task that follows the instance through the runtime
(`AsyncRuntime.follow`: the snapshot, then the events in revision order, read
from the store whenever a local commit or another process's notification says
the instance changed) into a queue of at most `watch_buffer` messages, and the
RPC handler that writes the queue to the client, with a heartbeat whenever
nothing came for the heartbeat interval.

A stream reading old history waits for its client; a live one (it had caught
up) whose client falls `watch_buffer` events behind is closed with
RESOURCE_EXHAUSTED `ERROR_REASON_WATCHER_TOO_SLOW`, naming the last revision
sent, instead of buffering more: memory per stream stays bounded. A client that
cancels or disconnects ends its handler, which cancels its producer at once.
On shutdown every stream ends with UNAVAILABLE `ERROR_REASON_SHUTTING_DOWN`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc.config import Settings
from flou_grpc.errors import ShuttingDownError, TooManyWatchersError, WatcherTooSlowError
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.runtime.model import Instance
from flou_grpc.service import convert

__all__ = ["Watchers"]


class _Overflow(Exception):
    """The producer found a live stream's buffer full."""


class Watchers:
    """The open Watch streams of one server, counted per instance."""

    def __init__(self, runtime: AsyncRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.limits = settings.limits
        self.open: Counter[str] = Counter()
        self._closing = asyncio.Event()

    @property
    def count(self) -> int:
        """Streams open now."""
        return sum(self.open.values())

    async def close(self) -> None:
        """Ends every stream with UNAVAILABLE, and refuses new ones."""
        self._closing.set()
        for _ in range(100):  # let the handlers send their status
            if not self.count:
                break
            await asyncio.sleep(0.01)

    async def stream(
        self, instance_id: str, from_revision: int, heartbeat: float
    ) -> AsyncIterator[pb.WatchResponse]:
        """The messages of one Watch stream, until the client goes or an error ends it.

        Raises:
            InstanceNotFoundError, RevisionOutOfRangeError, TooManyWatchersError,
            WatcherTooSlowError, ShuttingDownError.
        """
        if self._closing.is_set():
            raise ShuttingDownError()
        if self.open[instance_id] >= self.limits.max_watchers_per_instance:
            raise TooManyWatchersError(instance_id, self.limits.max_watchers_per_instance)
        self.open[instance_id] += 1
        queue: asyncio.Queue[pb.WatchResponse] = asyncio.Queue(self.limits.watch_buffer)
        producer = asyncio.create_task(self._produce(instance_id, from_revision, queue))
        closing = asyncio.create_task(self._closing.wait())
        last = from_revision
        try:
            while True:
                getting = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getting, producer, closing},
                    timeout=heartbeat,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getting in done:
                    message = getting.result()
                    if message.HasField("event"):
                        last = message.event.revision
                    elif message.HasField("snapshot"):
                        last = message.snapshot.revision
                    yield message
                    continue
                getting.cancel()
                if closing in done:
                    raise ShuttingDownError()
                if producer in done:
                    if isinstance(producer.exception(), _Overflow):
                        raise WatcherTooSlowError(instance_id, last, self.limits.watch_buffer)
                    producer.result()  # its error ends the stream
                    return  # pragma: no cover (follow never ends by itself)
                yield pb.WatchResponse(heartbeat=pb.Heartbeat(revision=last, time=_now()))
        finally:
            for task in (producer, closing):
                task.cancel()
            with contextlib.suppress(BaseException):
                await producer
            self.open[instance_id] -= 1
            if not self.open[instance_id]:
                del self.open[instance_id]

    async def _produce(
        self, instance_id: str, from_revision: int, queue: asyncio.Queue[pb.WatchResponse]
    ) -> None:
        live = False
        async for item in self.runtime.follow(instance_id, from_revision):
            if isinstance(item, Instance):
                await queue.put(pb.WatchResponse(snapshot=convert.instance_message(item)))
                continue
            if not item:  # caught up: from now on, falling behind is the client's
                live = True
            for event in item:
                if live and queue.full():
                    raise _Overflow()
                await queue.put(pb.WatchResponse(event=convert.event_message(event)))


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp
