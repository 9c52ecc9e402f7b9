"""The instance document: one JSON object per instance, changed only through a `DocWriter`.

A `DocWriter` never mutates the document it is given: the first write below a
dict or list copies it (and only it, and its ancestors), so a step costs what
it changes, not what the document holds, and the old document stays valid for
whoever still reads it. Every write is recorded as an RFC 6902 operation, so
the JSON patch of a step is exact by construction, with no diff.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "DocWriter",
    "JsonObject",
    "Path",
    "StateView",
    "apply_patch",
    "json_copy",
    "json_type",
    "pointer",
]

JsonObject = dict[str, Any]
Path = tuple[str, ...]
"""Keys from the root object down to a value."""


def json_copy(value: object, where: str = "value") -> Any:
    """Returns a deep copy of a JSON value, checking that it is one.

    Raises:
        ValueError: `value` holds something JSON cannot: a non-string key, a
            NaN or infinite number, or an object of another type. The message
            names where, from `where` down.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        copied = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            copied[key] = json_copy(item, f"{where}.{key}")
        return copied
    if isinstance(value, list | tuple):
        return [json_copy(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def json_type(value: object) -> str:
    """The JSON type name of a value: object, array, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def pointer(path: Sequence[str | int]) -> str:
    """The RFC 6901 JSON pointer of a path."""
    return "".join("/" + str(key).replace("~", "~0").replace("/", "~1") for key in path)


def json_size(value: Any) -> int:
    """The length in bytes of `value` as compact JSON: what the size limits measure."""
    return len(json.dumps(value, separators=(",", ":")).encode())


def append_op(path: Path, value: Any) -> JsonObject:
    """The RFC 6902 operation that appends `value` to the list at `path`."""
    return {"op": "add", "path": pointer(path) + "/-", "value": value}


def _unpointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise ValueError(f"JSON pointer {text!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


class DocWriter:
    """Writes into a copy-on-write version of a document and records the patch.

    Attributes:
        doc: The current document: the original until the first write, then
            the new version (which shares every untouched subtree with it).
        ops: The RFC 6902 operations of the writes so far, in order.
    """

    def __init__(self, doc: JsonObject) -> None:
        self.doc = doc
        self.ops: list[JsonObject] = []
        # The containers this writer copied, by id. The objects are kept too: an id
        # is only unique while its object lives, and a copied container that was
        # replaced since must not let a new value with its id pass for ours.
        self._owned: dict[int, Any] = {}

    def get(self, path: Path) -> Any:
        """The value at `path`; raises KeyError (or TypeError) if there is none."""
        value: Any = self.doc
        for key in path:
            value = value[key]
        return value

    def find(self, path: Path) -> Any:
        """The value at `path`, or None when a key on the way is missing."""
        value: Any = self.doc
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    def list_at(self, path: Path) -> list[Any]:
        """The list at `path`, for an append.

        Raises:
            KeyError: Nothing is at `path` (the message is its JSON pointer).
            TypeError: What is at `path` is not a list (the message is its JSON type).
        """
        holder = self.find(path[:-1])
        if not isinstance(holder, dict) or path[-1] not in holder:
            raise KeyError(pointer(path))
        value = holder[path[-1]]
        if not isinstance(value, list):
            raise TypeError(json_type(value))
        return value

    def _own(self, container: Any) -> Any:
        if self._owned.get(id(container)) is container:
            return container
        copied = dict(container) if isinstance(container, dict) else list(container)
        self._owned[id(copied)] = copied
        return copied

    def _parent(self, path: Path) -> JsonObject:
        """The dict holding `path[-1]`, owned (copied) along the way."""
        node: JsonObject = self._own(self.doc)
        self.doc = node
        for key in path[:-1]:
            child = node[key]
            if not isinstance(child, dict):
                raise KeyError(key)
            node[key] = child = self._own(child)
            node = child
        return node

    def set(self, path: Path, value: Any) -> None:
        """Sets `path` to `value` (not copied: pass owned values); its parent must exist."""
        parent = self._parent(path)
        key = path[-1]
        self.ops.append(
            {"op": "replace" if key in parent else "add", "path": pointer(path), "value": value}
        )
        parent[key] = value

    def append(self, path: Path, value: Any) -> None:
        """Appends `value` to the list at `path`."""
        parent = self._parent(path)
        items = parent[path[-1]] = self._own(parent[path[-1]])
        self.ops.append(append_op(path, value))
        items.append(value)


def apply_patch(doc: JsonObject, patch: Sequence[Mapping[str, Any]]) -> JsonObject:
    """Applies the RFC 6902 operations `add`, `replace`, `remove` to a copy of `doc`.

    These are the operations the engine writes; replaying every event's patch
    from `{}` rebuilds an instance's document at any revision.

    Raises:
        ValueError: An operation is unknown or its path does not exist.
    """
    result: JsonObject = json_copy(doc)
    for op in patch:
        keys = _unpointer(str(op["path"]))
        if not keys:
            if op["op"] not in ("add", "replace") or not isinstance(op["value"], dict):
                raise ValueError(f"cannot {op['op']} the whole document")
            result = json_copy(op["value"])
            continue
        parent: Any = result
        try:
            for key in keys[:-1]:
                parent = parent[int(key)] if isinstance(parent, list) else parent[key]
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{op['path']}: no such path") from exc
        try:
            _apply_op(parent, keys[-1], str(op["op"]), op)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"{op['op']} {op['path']}: no such key or index {exc}") from None
    return result


def _apply_op(parent: Any, last: str, kind: str, op: Mapping[str, Any]) -> None:
    if isinstance(parent, list):
        index = len(parent) if kind == "add" and last == "-" else int(last)
        if index < 0 or index > len(parent) or (kind != "add" and index == len(parent)):
            raise IndexError(f"index {last} is out of range")
        if kind == "add":
            parent.insert(index, json_copy(op["value"]))
        elif kind == "replace":
            parent[index] = json_copy(op["value"])
        elif kind == "remove":
            del parent[index]
        else:
            raise ValueError(f"unsupported patch operation {kind!r}")
    elif not isinstance(parent, dict):
        raise KeyError(last)
    elif kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise ValueError(f"{op['path']}: replace of a missing key")
        parent[last] = json_copy(op["value"])
    elif kind == "remove":
        del parent[last]
    else:
        raise ValueError(f"unsupported patch operation {kind!r}")


class StateView(Mapping[str, Any]):
    """A read-only view of a node's state: nested objects are views, lists tuples."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return _view(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"StateView({self._data!r})"

    def to_dict(self) -> JsonObject:
        """A deep, mutable copy of the viewed state."""
        copied: JsonObject = json_copy(self._data)
        return copied


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return StateView(value)
    if isinstance(value, list):
        return tuple(_view(item) for item in value)
    return value
