"""Conversions between the runtime's values and the messages of `protos/flou/v1`.

JSON travels as `google.protobuf.Struct` / `Value`, whose numbers are IEEE
doubles: a number with no fractional part comes back as a Python int, so that
`{"total": 42}` stays `42` in the state (integers beyond 2^53 should be sent
as strings, as the contract says).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2

from flou_grpc._proto.flou.v1 import error_reason_pb2, instance_pb2, machine_pb2
from flou_grpc.engine.structure import NodeInfo, TransitionInfo
from flou_grpc.runtime.model import (
    Event,
    EventKind,
    Instance,
    InstanceStatus,
    StepError,
    WaitMode,
)

__all__ = [
    "event_message",
    "fired_messages",
    "instance_message",
    "json_value",
    "list_value",
    "machine_message",
    "struct",
    "to_json",
    "wait_mode",
]

_MAX_EXACT: Final = 2**53

_STATUS: Final = {
    InstanceStatus.RUNNING: instance_pb2.INSTANCE_STATUS_RUNNING,
    InstanceStatus.WAITING: instance_pb2.INSTANCE_STATUS_WAITING,
    InstanceStatus.COMPLETED: instance_pb2.INSTANCE_STATUS_COMPLETED,
    InstanceStatus.FAILED: instance_pb2.INSTANCE_STATUS_FAILED,
}
STATUS_OF_MESSAGE: Final = {value: key for key, value in _STATUS.items()}
"""`InstanceStatus` of each proto enum value (UNSPECIFIED is not in it)."""

_KIND: Final = {
    kind: instance_pb2.EventKind.Value(f"EVENT_KIND_{kind.name}") for kind in EventKind
}

_WAIT: Final = {
    0: WaitMode.PROCESSED,  # unspecified
    1: WaitMode.ENQUEUED,
    2: WaitMode.PROCESSED,
    3: WaitMode.SETTLED,
}


def wait_mode(value: int) -> WaitMode:
    """The `WaitMode` of a request's `wait` field (unspecified: processed)."""
    return _WAIT.get(value, WaitMode.PROCESSED)


# --- JSON -------------------------------------------------------------------------------


def to_json(message: struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue) -> Any:
    """The plain JSON value of a Struct, Value or ListValue (whole doubles as ints)."""
    if isinstance(message, struct_pb2.Struct):
        return {key: to_json(item) for key, item in message.fields.items()}
    if isinstance(message, struct_pb2.ListValue):
        return [to_json(item) for item in message.values]
    kind = message.WhichOneof("kind")
    if kind == "struct_value":
        return to_json(message.struct_value)
    if kind == "list_value":
        return to_json(message.list_value)
    if kind == "number_value":
        number = message.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _MAX_EXACT:
            return int(number)
        return number
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    return None  # null_value, or unset


def json_value(value: Any) -> struct_pb2.Value:
    """A JSON value as a `Value`."""
    message = struct_pb2.Value()
    _fill(message, value)
    return message


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a `Struct`."""
    message = struct_pb2.Struct()
    for key, item in value.items():
        _fill(message.fields[key], item)
    return message


def list_value(values: Sequence[Any]) -> struct_pb2.ListValue:
    """A JSON array as a `ListValue`."""
    message = struct_pb2.ListValue()
    _fill_list(message, values)
    return message


def _fill_list(message: struct_pb2.ListValue, values: Iterable[Any]) -> None:
    # Scalars are made by `add(kind=value)`: a third of the time of `_fill(add(), value)`,
    # and answers carry whole lists (AtomicAppend's, a state's).
    add = message.values.add
    for item in values:
        kind = type(item)
        if kind is float or kind is int:
            add(number_value=item)
        elif kind is str:
            add(string_value=item)
        elif kind is bool:
            add(bool_value=item)
        elif item is None:
            add(null_value=struct_pb2.NULL_VALUE)
        else:
            _fill(add(), item)


def _fill(message: struct_pb2.Value, value: Any) -> None:
    if value is None:
        message.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, int | float):
        message.number_value = value
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, Mapping):
        message.struct_value.SetInParent()
        for key, item in value.items():
            _fill(message.struct_value.fields[key], item)
    else:  # a list: the runtime's values are JSON already
        message.list_value.SetInParent()
        _fill_list(message.list_value, value)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


# --- instances and events ---------------------------------------------------------------


def instance_message(instance: Instance, full: bool = True) -> instance_pb2.Instance:
    """An `Instance`; without `state` and `errors` unless `full`."""
    message = instance_pb2.Instance(
        id=instance.id,
        machine=instance.machine,
        revision=instance.revision,
        status=_STATUS[instance.status],
        active_states=instance.active_states,
        pending_work_count=instance.pending_work_count,
        create_time=timestamp(instance.create_time),
        update_time=timestamp(instance.update_time),
    )
    if full:
        message.state.CopyFrom(struct(instance.state))
        message.errors.extend(step_error_message(error) for error in instance.errors)
    return message


def step_error_message(error: StepError) -> instance_pb2.StepError:
    return instance_pb2.StepError(
        work_item_id=error.work_item_id,
        fqn=error.fqn,
        type=error.type,
        message=error.message,
        traceback=error.traceback,
        attempts=error.attempts,
        retrying=error.retrying,
        update_time=timestamp(error.update_time),
    )


def fired_messages(fired: Sequence[Mapping[str, Any]]) -> list[instance_pb2.FiredTransition]:
    """The transitions a step fired (the runtime keeps them as JSON)."""
    return [
        instance_pb2.FiredTransition(
            machine=f["machine"],
            label=f["label"],
            namespace=f["namespace"],
            sources=f["sources"],
            targets=f["targets"],
        )
        for f in fired
    ]


def event_message(event: Event) -> instance_pb2.Event:
    """An `Event` of the history."""
    message = instance_pb2.Event(
        instance_id=event.instance_id,
        revision=event.revision,
        kind=_KIND[event.kind],
        item=struct(event.item),
        patch=list_value(event.patch),
        fired=fired_messages(event.fired),
        request_id=event.request_id,
        create_time=timestamp(event.create_time),
    )
    if event.error is not None:
        error = event.error
        message.error.CopyFrom(
            instance_pb2.StepError(
                work_item_id=str(error.get("work_item_id", "")),
                fqn=str(error.get("fqn", "")),
                type=str(error.get("type", "")),
                message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")),
                attempts=int(error.get("attempts", 0)),
                retrying=bool(error.get("retrying", False)),
            )
        )
    if event.rejection is not None:
        rejection = event.rejection
        reason = str(rejection.get("reason", ""))
        message.rejection.CopyFrom(
            instance_pb2.Rejection(
                reason=error_reason_pb2.ErrorReason.Value(reason)
                if reason in error_reason_pb2.ErrorReason.keys()  # noqa: SIM118 (an EnumTypeWrapper)
                else error_reason_pb2.ERROR_REASON_UNSPECIFIED,
                message=str(rejection.get("message", "")),
                metadata={str(k): str(v) for k, v in dict(rejection.get("metadata", {})).items()},
            )
        )
    return message


# --- machines ---------------------------------------------------------------------------


def machine_message(
    name: str,
    description: str,
    root: NodeInfo | None,
    kind: machine_pb2.MachineKind.ValueType = machine_pb2.MACHINE_KIND_LTM,
) -> machine_pb2.Machine:
    """A `Machine`; with its structure when `root` is given."""
    message = machine_pb2.Machine(name=name, kind=kind, description=description)
    if root is not None:
        if root.kind == "orchestrator":
            message.kind = machine_pb2.MACHINE_KIND_ORCHESTRATOR
        message.root.CopyFrom(node_message(root))
    return message


_NODE_KIND: Final = {
    "state": machine_pb2.NODE_KIND_STATE,
    "machine": machine_pb2.NODE_KIND_MACHINE,
    "parallel": machine_pb2.NODE_KIND_PARALLEL,
    "orchestrator": machine_pb2.NODE_KIND_ORCHESTRATOR,
}


def node_message(node: NodeInfo) -> machine_pb2.Node:
    return machine_pb2.Node(
        name=node.name,
        fqn=node.fqn,
        kind=_NODE_KIND.get(node.kind, machine_pb2.NODE_KIND_STATE),
        params=node.params,
        init=node.init,
        final=node.final,
        children=[node_message(child) for child in node.children],
        transitions=[transition_message(t) for t in node.transitions],
    )


def transition_message(transition: TransitionInfo) -> machine_pb2.MachineTransition:
    return machine_pb2.MachineTransition(
        label=transition.label,
        sources=transition.sources,
        targets=transition.targets,
        namespace=transition.namespace,
        custom_namespace=transition.custom_namespace,
        join=machine_pb2.JOIN_MODE_ALL if transition.join == "all" else machine_pb2.JOIN_MODE_ANY,
        params=transition.params,
    )
