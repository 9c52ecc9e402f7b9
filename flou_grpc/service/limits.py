"""The limits a request must stay within (`flou_grpc.config.Limits`), checked on arrival.

Each check raises `LimitExceededError` naming the field and the limit, so the
caller gets INVALID_ARGUMENT with a `BadRequest` violation; nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flou_grpc.config import Limits
from flou_grpc.engine.document import json_size
from flou_grpc.errors import LimitExceededError

__all__ = ["check_json", "check_params", "json_depth"]


def json_depth(value: Any) -> int:
    """How deeply a JSON value nests: 0 for a scalar, 1 for a flat object or array."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_json(value: Any, field: str, limits: Limits) -> None:
    """A payload, update or appended value: within the depth and size limits.

    Raises:
        LimitExceededError: naming `field` and the limit.
    """
    if _surely_small(value, limits.max_payload_bytes):
        return
    depth = json_depth(value)
    if depth > limits.max_json_depth:
        raise LimitExceededError(field, "max_json_depth", limits.max_json_depth, depth)
    size = json_size(value)
    if size > limits.max_payload_bytes:
        raise LimitExceededError(field, "max_payload_bytes", limits.max_payload_bytes, size)


def _surely_small(value: Any, limit: int) -> bool:
    """A scalar whose JSON is surely within `limit` bytes, told without writing it."""
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return limit >= _LONGEST_NUMBER
    if kind is str:  # at most 12 bytes a character: an astral one is two \uXXXX escapes
        return len(value) * 12 + 2 <= limit
    return False


_LONGEST_NUMBER = len("-2.2250738585072014e-308")
"""The longest JSON of a float (`null`, `false` and `true` are shorter)."""


def check_params(params: Sequence[object], limits: Limits) -> None:
    """A Transition's lanes: at most `max_params` param maps.

    Raises:
        LimitExceededError: naming `params`.
    """
    if len(params) > limits.max_params:
        raise LimitExceededError("params", "max_params", limits.max_params, len(params))
