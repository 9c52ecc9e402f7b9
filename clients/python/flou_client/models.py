"""What the client returns: plain, typed Python values for the messages of flou.v1.

JSON travels as Python values: objects as `dict`, arrays as `list`, numbers as
`int` when they are integral (JSON numbers are IEEE doubles on the wire) and
`float` otherwise. Enums are `StrEnum`s whose values are the lower-case names of
the proto values without their prefix (`InstanceStatus.WAITING == "waiting"`),
the names the server also uses in instance documents; a value this client does
not know reads as `UNSPECIFIED` (the contract's enums are open).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

__all__ = [
    "AppendResult",
    "Event",
    "EventKind",
    "FiredTransition",
    "Heartbeat",
    "HistoryPage",
    "Instance",
    "InstancePage",
    "InstanceStatus",
    "InstanceView",
    "JoinMode",
    "JsonObject",
    "Machine",
    "MachineKind",
    "MachinePage",
    "MachineTransition",
    "Node",
    "NodeKind",
    "Rejection",
    "RetryResult",
    "StepError",
    "TransitionResult",
    "UpdateResult",
    "WaitMode",
    "WatchItem",
    "as_json",
]

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object as Python values."""


class WaitMode(enum.StrEnum):
    """When a mutation answers (`flou.v1.WaitMode`)."""

    ENQUEUED = "enqueued"
    """As soon as the work is durably enqueued (fire and forget)."""

    PROCESSED = "processed"
    """Once the request's own step is processed and committed (the server's default)."""

    SETTLED = "settled"
    """Once the instance has no pending work left."""


class InstanceStatus(enum.StrEnum):
    """The lifecycle of an instance (`flou.v1.InstanceStatus`)."""

    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"


class InstanceView(enum.StrEnum):
    """How much of an instance a read returns (`flou.v1.InstanceView`)."""

    BASIC = "basic"
    """Everything but `state` and `errors`."""

    FULL = "full"
    """Every field."""


class EventKind(enum.StrEnum):
    """The kind of step an event records (`flou.v1.EventKind`)."""

    UNSPECIFIED = "unspecified"
    STARTED = "started"
    EXECUTED = "executed"
    TRANSITIONED = "transitioned"
    STATE_UPDATED = "state_updated"
    APPENDED = "appended"
    FAILED = "failed"
    RETRIED = "retried"
    REJECTED = "rejected"


class MachineKind(enum.StrEnum):
    """The style a machine is written in (`flou.v1.MachineKind`)."""

    UNSPECIFIED = "unspecified"
    LTM = "ltm"
    ORCHESTRATOR = "orchestrator"


class NodeKind(enum.StrEnum):
    """What a node of a machine's structure is (`flou.v1.NodeKind`)."""

    UNSPECIFIED = "unspecified"
    STATE = "state"
    MACHINE = "machine"
    PARALLEL = "parallel"
    ORCHESTRATOR = "orchestrator"


class JoinMode(enum.StrEnum):
    """How a transition with several sources fires (`flou.v1.JoinMode`; unset reads ANY)."""

    ANY = "any"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class StepError:
    """The failure of a step: the machine's code raised (`flou.v1.StepError`)."""

    work_item_id: str
    fqn: str
    type: str
    message: str
    traceback: str
    attempts: int
    retrying: bool
    update_time: datetime | None


@dataclass(frozen=True, slots=True)
class Instance:
    """One hosted machine instance at one revision (`flou.v1.Instance`).

    `state` is None when the read asked for `InstanceView.BASIC`.
    """

    id: str
    machine: str
    revision: int
    status: InstanceStatus
    state: JsonObject | None
    active_states: tuple[str, ...]
    pending_work_count: int
    errors: tuple[StepError, ...]
    create_time: datetime | None
    update_time: datetime | None


@dataclass(frozen=True, slots=True)
class FiredTransition:
    """One transition that fired: in `machine`, `sources` completed, `targets` queued."""

    machine: str
    label: str
    namespace: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a work item was rejected when its turn came (`flou.v1.Rejection`)."""

    reason: str
    """The `ErrorReason` name, e.g. `ERROR_REASON_TRANSITION_NOT_ALLOWED`."""

    message: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change of an instance (`flou.v1.Event`).

    `patch` is the RFC 6902 JSON Patch from the state at `revision - 1`.
    """

    instance_id: str
    revision: int
    kind: EventKind
    item: JsonObject
    patch: list[JsonObject]
    fired: tuple[FiredTransition, ...]
    error: StepError | None
    rejection: Rejection | None
    request_id: str
    create_time: datetime | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing happened on a watched instance: every event up to `revision` was sent."""

    revision: int
    time: datetime | None


WatchItem: TypeAlias = Instance | Event | Heartbeat
"""What `watch` yields: the snapshot (`Instance`, once), then `Event`s and `Heartbeat`s."""


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """The answer of `transition`: the instance, the transitions that fired, the work item."""

    instance: Instance
    fired: tuple[FiredTransition, ...]
    work_item_id: str


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The answer of `update_state`."""

    instance: Instance
    work_item_id: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The answer of `atomic_append`: the whole list after the append, and its revision."""

    values: list[Any]
    """Empty when asked for without values (`values=False`)."""
    revision: int
    length: int
    """How many values the list holds right after the append."""


@dataclass(frozen=True, slots=True)
class RetryResult:
    """The answer of `retry_errors`."""

    instance: Instance
    retried_work_item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of `list_instances`; `next_page_token` is empty on the last page."""

    instances: tuple[Instance, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of `get_history`, events in revision order."""

    events: tuple[Event, ...]
    next_page_token: str
    oldest_revision: int
    current_revision: int


@dataclass(frozen=True, slots=True)
class MachineTransition:
    """A transition declared by a machine between its children (by their names)."""

    label: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    namespace: str
    custom_namespace: bool
    join: JoinMode
    params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a machine's structure: a state, or a machine of child nodes."""

    name: str
    fqn: str
    kind: NodeKind
    params: tuple[str, ...] = ()
    init: tuple[str, ...] = ()
    final: bool = False
    children: tuple[Node, ...] = ()
    transitions: tuple[MachineTransition, ...] = ()


@dataclass(frozen=True, slots=True)
class Machine:
    """A registered machine; `root` is None in `list_machines` answers."""

    name: str
    kind: MachineKind
    description: str = ""
    root: Node | None = None


@dataclass(frozen=True, slots=True)
class MachinePage:
    """One page of `list_machines`."""

    machines: tuple[Machine, ...]
    next_page_token: str


_Leaf = str | int | float | bool | None


def as_json(value: object) -> Any:
    """Any value of this module as JSON values, e.g. to print it.

    Dataclasses become objects, enums their values, datetimes RFC 3339 strings
    and tuples lists.

    Raises:
        TypeError: A value that has no JSON form.
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, _Leaf):
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    raise TypeError(f"{type(value).__name__} has no JSON form")
