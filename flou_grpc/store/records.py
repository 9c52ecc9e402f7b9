"""What the store keeps: instances, their mailboxes, their history, failures, request records.

Plain values shared by every store implementation and the runtime. Times are
timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flou_grpc.engine.document import JsonObject, Path
from flou_grpc.engine.work import WorkItem

__all__ = [
    "AppendRecord",
    "Appended",
    "ErrorRecord",
    "EventRecord",
    "InstanceRecord",
    "RequestRecord",
    "Snapshot",
    "WorkRecord",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance: its document at its current revision."""

    id: str
    machine: str
    revision: int
    document: JsonObject
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class WorkRecord:
    """One entry of an instance's mailbox, processed in `seq` order."""

    id: str
    item: WorkItem
    request_id: str = ""
    expected_revision: int = 0
    """When not 0, the item is rejected unless the instance is at this revision."""
    seq: int = 0
    """Assigned by the store when enqueued; increases within one instance."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One committed step: the history row of `revision`."""

    instance_id: str
    revision: int
    kind: str
    """started, executed, transitioned, state_updated, appended, failed, retried, rejected."""
    item: JsonObject
    patch: list[JsonObject]
    fired: list[JsonObject] = field(default_factory=list)
    error: JsonObject | None = None
    rejection: JsonObject | None = None
    request_id: str = ""
    create_time: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class AppendRecord:
    """One append of `Store.append_many`: `value` onto the list at `path` of an instance."""

    instance_id: str
    path: Path
    """Document keys down to the list."""
    value: Any
    event: EventRecord
    """The append's event (its revision and patch are set by the store)."""
    with_values: bool = True
    """Whether the outcome carries the list (else only its length: no read of it)."""


class Appended(NamedTuple):
    """What `Store.append_many` answers for one append that was made."""

    values: list[Any] | None
    """The whole list right after the append; None unless `with_values`."""
    length: int
    """How many values the list holds right after the append."""
    revision: int
    """The revision the append created."""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """The failures of one work item whose code raised."""

    work_item_id: str
    fqn: str
    type: str
    message: str
    traceback: str
    attempts: int
    retrying: bool
    item: WorkItem | None = None
    """The failing work item, to schedule again on retry."""
    update_time: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The first answer to a mutation that carried a request_id."""

    request_id: str
    fingerprint: str
    """A digest of the request's body: the same id with another body is an error."""
    response: JsonObject
    """The first answer, as JSON (the runtime decides its shape)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An instance as one transaction saw it: what a worker and a reader need next.

    Returned by `Store.head` and by `Store.commit` (as the commit left the
    instance), so that a worker learns its next item, and a caller its
    answer, without another transaction.
    """

    instance: InstanceRecord
    next: WorkRecord | None
    """The first item of the mailbox, None if it is empty."""
    pending: int
    """How many items the mailbox holds."""
    errors: tuple[ErrorRecord, ...]
    """The failures kept for the instance's work items, first recorded first."""
