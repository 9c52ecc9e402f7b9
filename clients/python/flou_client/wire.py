"""The wire forms of the client's values.

JSON values to and from `google.protobuf.Struct`, and flou.v1 messages to the
dataclasses of `flou_client.models`.

Every message the server sends goes through here once, so that the rest of the
client, and its callers, deal in Python values only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from flou_client_gen.flou.v1 import (
    error_reason_pb2,
    flou_service_pb2,
    instance_pb2,
    machine_pb2,
)
from google.protobuf import struct_pb2, timestamp_pb2

from flou_client.models import (
    Event,
    EventKind,
    FiredTransition,
    Heartbeat,
    Instance,
    InstanceStatus,
    JoinMode,
    JsonObject,
    Machine,
    MachineKind,
    MachineTransition,
    Node,
    NodeKind,
    Rejection,
    StepError,
)

__all__ = [
    "event",
    "fired_transition",
    "from_list",
    "from_struct",
    "from_value",
    "heartbeat",
    "instance",
    "machine",
    "to_list",
    "to_struct",
    "to_value",
]

_MAX_EXACT_INT = 2**53
"""Integral doubles up to this magnitude read back as `int`."""


# --- JSON <-> Struct ---------------------------------------------------------------


def to_value(value: object, where: str = "value") -> struct_pb2.Value:
    """A JSON value (None, bool, int, float, str, mappings with str keys, lists, tuples).

    Raises:
        TypeError: Something that is not JSON; the message names where it is.
        ValueError: A float that JSON cannot carry (NaN, infinity).
    """
    message = struct_pb2.Value()
    if value is None:
        message.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{where}: {value!r} is not a JSON number")
        message.number_value = number
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, Mapping):
        message.struct_value.CopyFrom(to_struct(value, where))
    elif isinstance(value, list | tuple):
        message.list_value.CopyFrom(to_list(value, where))
    else:
        raise TypeError(f"{where}: {type(value).__name__} is not a JSON value")
    return message


def to_struct(mapping: Mapping[str, object], where: str = "value") -> struct_pb2.Struct:
    """A JSON object as a Struct (see `to_value`)."""
    message = struct_pb2.Struct()
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: key {key!r} is not a string")
        message.fields[key].CopyFrom(to_value(item, f"{where}.{key}"))
    return message


def to_list(items: Sequence[object], where: str = "value") -> struct_pb2.ListValue:
    """A JSON array as a ListValue (see `to_value`)."""
    message = struct_pb2.ListValue()
    for index, item in enumerate(items):
        message.values.append(to_value(item, f"{where}[{index}]"))
    return message


def from_value(value: struct_pb2.Value) -> Any:
    """A Value as Python: integral numbers (up to 2^53) as int, unset as None."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return from_list(value.list_value)
    return None


def from_struct(struct: struct_pb2.Struct) -> JsonObject:
    """A Struct as a dict (see `from_value`)."""
    return {key: from_value(item) for key, item in struct.fields.items()}


def from_list(items: struct_pb2.ListValue) -> list[Any]:
    """A ListValue as a list (see `from_value`)."""
    return [from_value(item) for item in items.values]


# --- enums ---------------------------------------------------------------------------


S = TypeVar("S", bound=enum.StrEnum)


def enum_name(wrapper: Any, number: int, prefix: str) -> str:
    """The proto name of an enum number without its prefix, lower case; '' if unknown."""
    try:
        name = str(wrapper.Name(number))
    except ValueError:
        return ""
    return name.removeprefix(prefix).lower()


def reason_name(number: int) -> str:
    """The full `ErrorReason` name of a number (`ERROR_REASON_...`); '' if unknown."""
    try:
        return str(error_reason_pb2.ErrorReason.Name(number))  # type: ignore[arg-type]
    except ValueError:
        return ""


def _enum(kind: type[S], wrapper: Any, number: int, prefix: str, default: S) -> S:
    try:
        return kind(enum_name(wrapper, number, prefix))
    except ValueError:
        return default


def _status(number: int) -> InstanceStatus:
    return _enum(
        InstanceStatus,
        instance_pb2.InstanceStatus,
        number,
        "INSTANCE_STATUS_",
        InstanceStatus.UNSPECIFIED,
    )


def _event_kind(number: int) -> EventKind:
    return _enum(EventKind, instance_pb2.EventKind, number, "EVENT_KIND_", EventKind.UNSPECIFIED)


def _machine_kind(number: int) -> MachineKind:
    return _enum(
        MachineKind, machine_pb2.MachineKind, number, "MACHINE_KIND_", MachineKind.UNSPECIFIED
    )


def _node_kind(number: int) -> NodeKind:
    return _enum(NodeKind, machine_pb2.NodeKind, number, "NODE_KIND_", NodeKind.UNSPECIFIED)


def _join(number: int) -> JoinMode:
    return JoinMode.ALL if number == machine_pb2.JOIN_MODE_ALL else JoinMode.ANY


# --- messages --------------------------------------------------------------------------


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def step_error(message: instance_pb2.StepError) -> StepError:
    """A StepError message as a dataclass."""
    return StepError(
        work_item_id=message.work_item_id,
        fqn=message.fqn,
        type=message.type,
        message=message.message,
        traceback=message.traceback,
        attempts=message.attempts,
        retrying=message.retrying,
        update_time=_time(message, "update_time"),
    )


def instance(message: instance_pb2.Instance) -> Instance:
    """An Instance message as a dataclass (`state` None when the view left it out)."""
    return Instance(
        id=message.id,
        machine=message.machine,
        revision=message.revision,
        status=_status(message.status),
        state=from_struct(message.state) if message.HasField("state") else None,
        active_states=tuple(message.active_states),
        pending_work_count=message.pending_work_count,
        errors=tuple(step_error(e) for e in message.errors),
        create_time=_time(message, "create_time"),
        update_time=_time(message, "update_time"),
    )


def fired_transition(message: instance_pb2.FiredTransition) -> FiredTransition:
    """A FiredTransition message as a dataclass."""
    return FiredTransition(
        machine=message.machine,
        label=message.label,
        namespace=message.namespace,
        sources=tuple(message.sources),
        targets=tuple(message.targets),
    )


def event(message: instance_pb2.Event) -> Event:
    """An Event message as a dataclass."""
    return Event(
        instance_id=message.instance_id,
        revision=message.revision,
        kind=_event_kind(message.kind),
        item=from_struct(message.item),
        patch=[op if isinstance(op, dict) else {"value": op} for op in from_list(message.patch)],
        fired=tuple(fired_transition(f) for f in message.fired),
        error=step_error(message.error) if message.HasField("error") else None,
        rejection=(
            Rejection(
                reason=reason_name(message.rejection.reason),
                message=message.rejection.message,
                metadata=dict(message.rejection.metadata),
            )
            if message.HasField("rejection")
            else None
        ),
        request_id=message.request_id,
        create_time=_time(message, "create_time"),
    )


def heartbeat(message: flou_service_pb2.Heartbeat) -> Heartbeat:
    """A Heartbeat message as a dataclass."""
    return Heartbeat(revision=message.revision, time=_time(message, "time"))


def node(message: machine_pb2.Node) -> Node:
    """A Node message, with its children, as a dataclass."""
    return Node(
        name=message.name,
        fqn=message.fqn,
        kind=_node_kind(message.kind),
        params=tuple(message.params),
        init=tuple(message.init),
        final=message.final,
        children=tuple(node(child) for child in message.children),
        transitions=tuple(
            MachineTransition(
                label=t.label,
                sources=tuple(t.sources),
                targets=tuple(t.targets),
                namespace=t.namespace,
                custom_namespace=t.custom_namespace,
                join=_join(t.join),
                params=tuple(t.params),
            )
            for t in message.transitions
        ),
    )


def machine(message: machine_pb2.Machine) -> Machine:
    """A Machine message as a dataclass (`root` None when the answer left it out)."""
    return Machine(
        name=message.name,
        kind=_machine_kind(message.kind),
        description=message.description,
        root=node(message.root) if message.HasField("root") else None,
    )
