"""What the Runtime answers with: instances, events, outcomes (plain values)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flou_grpc.engine.document import JsonObject

__all__ = [
    "AppendResult",
    "Event",
    "EventKind",
    "Instance",
    "InstanceStatus",
    "StepError",
    "TransitionResult",
    "WaitMode",
]


class InstanceStatus(enum.StrEnum):
    """Where an instance is in its lifecycle (`flou.v1.InstanceStatus`)."""

    RUNNING = "running"
    """It has pending work."""
    WAITING = "waiting"
    """No pending work: it waits for an external event."""
    COMPLETED = "completed"
    """Its root completed; it accepts no more transitions."""
    FAILED = "failed"
    """At least one node is in status `error`."""


class EventKind(enum.StrEnum):
    """What kind of step an event records (`flou.v1.EventKind`)."""

    STARTED = "started"
    EXECUTED = "executed"
    TRANSITIONED = "transitioned"
    STATE_UPDATED = "state_updated"
    APPENDED = "appended"
    FAILED = "failed"
    RETRIED = "retried"
    REJECTED = "rejected"


class WaitMode(enum.StrEnum):
    """When a mutation answers (`flou.v1.WaitMode`)."""

    ENQUEUED = "enqueued"
    """Once its work item is durably enqueued."""
    PROCESSED = "processed"
    """Once its own step is committed."""
    SETTLED = "settled"
    """Once the instance has no pending work left."""


@dataclass(frozen=True, slots=True)
class StepError:
    """The failures of a step whose code raised."""

    work_item_id: str
    fqn: str
    type: str
    message: str
    traceback: str
    attempts: int
    retrying: bool
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance at one revision."""

    id: str
    machine: str
    revision: int
    status: InstanceStatus
    state: JsonObject
    active_states: tuple[str, ...]
    pending_work_count: int
    errors: tuple[StepError, ...]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """One committed step of an instance."""

    instance_id: str
    revision: int
    kind: EventKind
    item: JsonObject
    patch: list[JsonObject]
    create_time: datetime
    fired: list[JsonObject] = field(default_factory=list)
    """For a transition: {machine, label, namespace, sources, targets} per fired transition."""
    error: JsonObject | None = None
    rejection: JsonObject | None = None
    """For a rejected item: {reason, message, metadata}."""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """The answer to a transition."""

    instance: Instance
    fired: list[JsonObject]
    work_item_id: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The answer to an atomic append."""

    values: list[Any]
    """The whole list right after the append; empty when not asked for (`values=False`)."""
    revision: int
    length: int
    """How many values the list holds right after the append."""
