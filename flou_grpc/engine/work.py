"""Work items: the entries of an instance's mailbox, and their JSON form.

Every step of an instance processes exactly one work item, in mailbox order:
run a node's code (`Execute`), fire a labelled transition (`Transition`), or
set keys of a node's state (`UpdateState`). Items are plain values, stored as
JSON by the store and shown in history events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flou_grpc.engine.document import JsonObject

__all__ = ["Execute", "Transition", "UpdateState", "WorkItem", "from_json", "to_json"]


@dataclass(frozen=True, slots=True)
class Execute:
    """Run the code of the node at `fqn` with `payload`, then apply what it queued."""

    fqn: str
    payload: JsonObject = field(default_factory=dict)
    kind: Literal["execute"] = "execute"


@dataclass(frozen=True, slots=True)
class Transition:
    """Fire `label` in `namespace`, one lane per params map, passing `payload` to the targets."""

    label: str
    namespace: str
    params: tuple[Mapping[str, str], ...] = ()
    payload: JsonObject = field(default_factory=dict)
    kind: Literal["transition"] = "transition"


@dataclass(frozen=True, slots=True)
class UpdateState:
    """Set dotted keys, relative to the node at `fqn`, to JSON values."""

    fqn: str
    updates: JsonObject
    kind: Literal["update_state"] = "update_state"


WorkItem = Execute | Transition | UpdateState


def to_json(item: WorkItem) -> JsonObject:
    """The JSON form of a work item (as stored, and as shown in events)."""
    match item:
        case Execute():
            return {"kind": item.kind, "fqn": item.fqn, "payload": item.payload}
        case Transition():
            return {
                "kind": item.kind,
                "label": item.label,
                "namespace": item.namespace,
                "params": [dict(p) for p in item.params],
                "payload": item.payload,
            }
        case UpdateState():
            return {"kind": item.kind, "fqn": item.fqn, "updates": item.updates}


def from_json(data: Mapping[str, Any]) -> WorkItem:
    """Reads a work item back from its JSON form.

    Raises:
        ValueError: `data` is not the JSON form of a work item.
    """
    kind = data.get("kind")
    if kind == "execute":
        return Execute(fqn=data["fqn"], payload=dict(data["payload"]))
    if kind == "transition":
        return Transition(
            label=data["label"],
            namespace=data["namespace"],
            params=tuple(dict(p) for p in data["params"]),
            payload=dict(data["payload"]),
        )
    if kind == "update_state":
        return UpdateState(fqn=data["fqn"], updates=dict(data["updates"]))
    raise ValueError(f"unknown work item kind {kind!r}")
