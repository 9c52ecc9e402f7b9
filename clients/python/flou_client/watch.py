"""Resuming a Watch: what was delivered, where to start again, which breaks to heal.

A `WatchCursor` follows one logical watch across the streams the client opens
for it. It delivers the first snapshot only, then every event once, in
revision order: a new stream (after UNAVAILABLE, a `WATCHER_TOO_SLOW` close or
a stream that just ended) asks for `from_revision` = the last revision
delivered, whose snapshot it drops, and whose events then start at that
revision + 1; anything at or below the last revision is a duplicate and is
dropped, anything beyond the next revision is a gap and an error.
"""

from __future__ import annotations

import grpc
from flou_client_gen.flou.v1 import flou_service_pb2

from flou_client import requests, wire
from flou_client.errors import FlouError, UnavailableError
from flou_client.models import Event, Heartbeat, WatchItem

__all__ = ["WatchCursor", "WatchGapError", "feed_item", "stream_ended"]


class WatchGapError(FlouError):
    """The server skipped revisions on a watch stream (a broken server: never resumed)."""

    default_code = grpc.StatusCode.DATA_LOSS


class WatchCursor:
    """The position of one logical watch; see the module's docstring.

    Attributes:
        last_revision: The revision of the last snapshot or event delivered;
            None until the snapshot arrived.
    """

    def __init__(
        self, instance_id: str, from_revision: int = 0, heartbeat_interval: float | None = None
    ) -> None:
        self.instance_id = instance_id
        self.from_revision = from_revision
        self.heartbeat_interval = heartbeat_interval
        self.last_revision: int | None = None
        self.streams = 0
        """How many streams were opened so far."""

    def request(self) -> flou_service_pb2.WatchRequest:
        """The request of the next stream: from the start, or from the last revision delivered."""
        self.streams += 1
        start = self.from_revision if self.last_revision is None else self.last_revision
        return requests.watch(self.instance_id, start, self.heartbeat_interval)

    def accept(self, response: flou_service_pb2.WatchResponse) -> WatchItem | None:
        """What to deliver of one message, or None to drop it (a repeated snapshot, a duplicate).

        Raises:
            WatchGapError: An event or a resumed snapshot beyond the next revision.
        """
        kind = response.WhichOneof("kind")
        if kind == "snapshot":
            snapshot = wire.instance(response.snapshot)
            if self.last_revision is None:
                self.last_revision = snapshot.revision
                return snapshot
            if snapshot.revision > self.last_revision:
                self._gap(snapshot.revision)
            return None
        if kind == "event":
            if self.last_revision is None:  # pragma: no cover - the server sends a snapshot first
                raise WatchGapError(
                    f"watch of {self.instance_id!r}: an event came before the snapshot"
                )
            revision = response.event.revision
            if revision <= self.last_revision:
                return None
            if revision != self.last_revision + 1:
                self._gap(revision)
            self.last_revision = revision
            return wire.event(response.event)
        if kind == "heartbeat":
            return wire.heartbeat(response.heartbeat)
        return None  # a kind this client does not know (the oneof may grow)

    def _gap(self, revision: int) -> None:
        raise WatchGapError(
            f"watch of {self.instance_id!r} jumped from revision {self.last_revision} "
            f"to {revision}",
            metadata={
                "instanceId": self.instance_id,
                "lastRevision": str(self.last_revision),
                "revision": str(revision),
            },
        )

    @staticmethod
    def resumable(error: FlouError) -> bool:
        """Whether a stream that failed with `error` is resumed.

        It is after UNAVAILABLE, and after the server closed a slow watcher
        (RESOURCE_EXHAUSTED `ERROR_REASON_WATCHER_TOO_SLOW`).
        """
        return error.code is grpc.StatusCode.UNAVAILABLE or (
            error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            and error.reason == "ERROR_REASON_WATCHER_TOO_SLOW"
        )


def feed_item(response: flou_service_pb2.WatchInstancesResponse) -> Event | Heartbeat | None:
    """What `watch_instances` delivers of one message (None: a kind this client does not know)."""
    kind = response.WhichOneof("kind")
    if kind == "event":
        return wire.event(response.event)
    if kind == "heartbeat":
        return wire.heartbeat(response.heartbeat)
    return None


def stream_ended(instance_id: str) -> FlouError:
    """The error of a watch stream that the server ended (it should stay open): resumed."""
    return UnavailableError(f"the watch stream of {instance_id!r} ended")
