"""Requests into work items: the checks every caller gets.

Whether the call comes from a machine's own code (`self.transition`), the
embedded Runtime or an RPC, the same checks apply.

Each check raises an `InvalidFieldError` naming the field it rejects, so the
same mistake gives the same error wherever it is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from flou_grpc.engine.document import JsonObject, json_copy
from flou_grpc.engine.names import param_value, template
from flou_grpc.engine.work import Transition, UpdateState
from flou_grpc.errors import FieldViolation, InvalidFieldError

__all__ = ["fqn_of", "payload_of", "transition_item", "update_item"]

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
"""A namespace: an instance fqn (its segments are formatted names) or a custom channel."""


def payload_of(payload: object, field: str = "payload") -> JsonObject:
    """A payload as an owned JSON object; None is `{}`."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise InvalidFieldError.of(field, f"must be a JSON object, not {type(payload).__name__}")
    try:
        copied: JsonObject = json_copy(payload, field)
    except ValueError as exc:
        raise InvalidFieldError.of(field, str(exc)) from None
    return copied


def fqn_of(fqn: object, field: str = "fqn") -> str:
    """A node path as given by a caller (empty: the root), checked for shape only."""
    if not isinstance(fqn, str) or (fqn and not _NAMESPACE.fullmatch(fqn)):
        raise InvalidFieldError.of(field, f"{fqn!r} is not a dot-joined node path")
    return fqn


def transition_item(
    label: object,
    namespace: object,
    params: object,
    payload: object,
    field: str = "",
) -> Transition:
    """Checks a transition request and returns its work item.

    Args:
        label: The label, a template as declared.
        namespace: The namespace, already defaulted by the caller.
        params: One map per lane; values are strings or integers.
        payload: A JSON object, or None.
        field: A prefix for the field names in errors (e.g. "transition").
    """
    prefix = f"{field}." if field else ""
    violations: list[FieldViolation] = []
    try:
        template(label)
    except ValueError as exc:
        violations.append(FieldViolation(f"{prefix}label", str(exc)))
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        violations.append(
            FieldViolation(f"{prefix}namespace", f"{namespace!r} is not a dot-joined name")
        )
    lanes: list[dict[str, str]] = []
    given: Sequence[object] = ()
    if isinstance(params, list | tuple):
        given = params
    elif params is not None:
        violations.append(FieldViolation(f"{prefix}params", "must be a list of maps"))
    for i, lane in enumerate(given):
        if not isinstance(lane, Mapping):
            violations.append(FieldViolation(f"{prefix}params[{i}]", "must be a map"))
            continue
        values: dict[str, str] = {}
        for key, value in lane.items():
            try:
                values[str(key)] = param_value(value)
            except ValueError as exc:
                violations.append(FieldViolation(f"{prefix}params[{i}].{key}", str(exc)))
        lanes.append(values)
    try:
        owned = payload_of(payload, f"{prefix}payload")
    except InvalidFieldError as exc:
        violations += exc.violations
        owned = {}
    if violations:
        raise InvalidFieldError(violations)
    assert isinstance(label, str)
    assert isinstance(namespace, str)
    return Transition(label=label, namespace=namespace, params=tuple(lanes), payload=owned)


def update_item(fqn: object, updates: object) -> UpdateState:
    """Checks an external state update (shape only; keys are checked against the node later)."""
    node = fqn_of(fqn)
    if not isinstance(updates, Mapping) or not updates:
        raise InvalidFieldError.of("updates", "must be a non-empty map of dotted keys to values")
    violations: list[FieldViolation] = []
    owned: JsonObject = {}
    for key, value in updates.items():
        where = f"updates[{key!r}]"
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            violations.append(FieldViolation(where, "must be a dotted key of non-empty parts"))
            continue
        try:
            owned[key] = json_copy(value, where)
        except ValueError as exc:
            violations.append(FieldViolation(where, str(exc)))
    if violations:
        raise InvalidFieldError(violations)
    return UpdateState(fqn=node, updates=owned)
