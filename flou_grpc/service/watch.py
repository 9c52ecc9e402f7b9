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
from typing import Final

from google.protobuf import timestamp_pb2

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc.config import Settings
from flou_grpc.errors import (
    InstanceNotFoundError,
    ShuttingDownError,
    TooManyWatchersError,
    WatcherTooSlowError,
)
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.runtime.model import Event, Instance
from flou_grpc.service import convert

__all__ = ["InstancesFeed", "Watchers"]


_SHARED_MESSAGES: Final = 4096
"""Event messages kept for the other watchers of their instance to send as they are."""


class _Overflow(Exception):
    """The producer found a live stream's buffer full."""


class Watchers:
    """The open Watch streams of one server, counted per instance."""

    def __init__(self, runtime: AsyncRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.limits = settings.limits
        self.open: Counter[str] = Counter()
        self._messages: dict[tuple[str, int], pb.WatchResponse] = {}
        self.closing = asyncio.Event()
        """Set once the server shuts down: every stream ends UNAVAILABLE."""

    def _message(self, event: Event) -> pb.WatchResponse:
        """The stream message of an event, built once for all the instance's watchers."""
        key = (event.instance_id, event.revision)
        message = self._messages.get(key)
        if message is None:
            if len(self._messages) >= _SHARED_MESSAGES:
                self._messages.clear()  # a bound, not a policy: the next ones refill it
            message = self._messages[key] = pb.WatchResponse(event=convert.event_message(event))
        return message

    @property
    def count(self) -> int:
        """Streams open now."""
        return sum(self.open.values())

    async def close(self) -> None:
        """Ends every stream with UNAVAILABLE, and refuses new ones."""
        self.closing.set()
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
        if self.closing.is_set():
            raise ShuttingDownError()
        if self.open[instance_id] >= self.limits.max_watchers_per_instance:
            raise TooManyWatchersError(instance_id, self.limits.max_watchers_per_instance)
        self.open[instance_id] += 1
        queue: asyncio.Queue[pb.WatchResponse] = asyncio.Queue(self.limits.watch_buffer)
        producer = asyncio.create_task(self._produce(instance_id, from_revision, queue))
        closing = asyncio.create_task(self.closing.wait())
        last, sent = from_revision, False
        getting: asyncio.Task[pb.WatchResponse] | None = None
        try:
            while True:
                if not queue.empty() and not self.closing.is_set():  # no task, no wait
                    message = queue.get_nowait()
                    last, sent = _revision(message, last), True
                    yield message
                    continue
                getting = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getting, producer, closing},
                    timeout=heartbeat if sent else None,  # the snapshot comes first
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getting in done:
                    message = getting.result()
                    last, sent = _revision(message, last), True
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
            for task in (producer, closing, getting):
                if task is not None:
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
                if not queue.full():
                    queue.put_nowait(self._message(event))
                elif live:
                    raise _Overflow()
                else:  # reading history: at the client's pace
                    await queue.put(self._message(event))


def _revision(message: pb.WatchResponse, last: int) -> int:
    """The revision a stream has sent once `message` is sent (`last` before it)."""
    kind = message.WhichOneof("kind")
    if kind == "event":
        return int(message.event.revision)
    if kind == "snapshot":
        return int(message.snapshot.revision)
    return last


_FIRST_LOOK: Final = 64
"""Events read back from an instance's current revision the first time a feed sees it."""


class InstancesFeed:
    """One `WatchInstances` stream: events of every instance (of one machine) as committed.

    The runtime says which instances changed (`AsyncRuntime.on_change`); the
    feed reads each one's new events from the history, after the last
    revision it sent of it. The first time it sees an instance, it sends that
    instance's events committed since the feed started (looked for among the
    last `_FIRST_LOOK` revisions). More than `watch_buffer` instances waiting
    to be read means the client is too slow: the stream ends.
    """

    def __init__(self, watchers: Watchers, machine: str, heartbeat: float) -> None:
        self.runtime, self.limits = watchers.runtime, watchers.limits
        self.machine, self.heartbeat = machine, heartbeat
        self._closing = watchers.closing
        self._dirty: dict[str, None] = {}  # insertion-ordered: about commit order
        self._wake = asyncio.Event()
        self._sent: dict[str, int] = {}
        self._started = datetime.now(UTC)

    def _changed(self, instance_id: str) -> None:
        self._dirty[instance_id] = None
        self._wake.set()

    async def stream(self) -> AsyncIterator[pb.WatchInstancesResponse]:
        """The stream's messages, until the client goes or an error ends it."""
        if self._closing.is_set():
            raise ShuttingDownError()
        if self.machine:
            self.runtime.registry.get(self.machine)  # MachineNotFoundError
        stop_listening = self.runtime.on_change(self._changed)
        try:
            while True:
                if not self._dirty:
                    await self._idle()
                    if not self._dirty:
                        yield pb.WatchInstancesResponse(heartbeat=pb.Heartbeat(time=_now()))
                        continue
                if len(self._dirty) > self.limits.watch_buffer:
                    raise WatcherTooSlowError("*", 0, self.limits.watch_buffer)
                instance_id = next(iter(self._dirty))
                del self._dirty[instance_id]
                for event in await self._new_events(instance_id):
                    yield pb.WatchInstancesResponse(event=convert.event_message(event))
        finally:
            stop_listening()

    async def _idle(self) -> None:
        self._wake.clear()
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(self._closing.wait())]
        try:
            await asyncio.wait(waits, timeout=self.heartbeat, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if self._closing.is_set():
            raise ShuttingDownError()

    async def _new_events(self, instance_id: str) -> list[Event]:
        try:
            if self.machine and await self.runtime.machine_of(instance_id) != self.machine:
                return []
            sent = self._sent.get(instance_id)
            if sent is None:
                _, current = await self.runtime.revisions(instance_id)
                first = max(1, current - _FIRST_LOOK + 1)
                events = await self.runtime.history(instance_id, first)
                events = [e for e in events if e.create_time >= self._started]
            else:
                events = await self.runtime.history(instance_id, sent + 1)
        except InstanceNotFoundError:
            return []
        if events:
            self._sent[instance_id] = events[-1].revision
        return events


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp
