"""Declarations: what an LTM class says about itself, read once and validated.

`declare(cls)` turns a class's `name`, `init` and `transitions` into a frozen
`Declaration` when the class is created, and raises `InvalidDefinitionError`
(naming the class and the problem) for anything that would make the machine
ambiguous or impossible: a bad name or label, a child that is not an LTM,
duplicate or overlapping child names, a label whose params no source or target
takes, an unknown transition key. `validate_tree` adds, at registration, what
needs the whole tree: a root without params, and no child that contains itself
without a param to stop the recursion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from flou_grpc.engine.names import Template, template, templates_overlap
from flou_grpc.errors import InvalidDefinitionError

if TYPE_CHECKING:
    from flou_grpc.engine.ltm import LTM

__all__ = ["Declaration", "TransitionSpec", "declaration", "declare", "validate_tree"]

_TRANSITION_KEYS: Final = frozenset({"from", "to", "label", "namespace", "join"})
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_ATTRIBUTE: Final = "_flou_declaration"


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """One declared transition of a machine, between its children."""

    index: int
    """Its position in the machine's `transitions` list."""

    label: Template
    """The label that fires it."""

    sources: tuple[type[LTM], ...]
    """The classes it leaves from (any of them, or all with `join_all`)."""

    targets: tuple[type[LTM], ...]
    """The classes it queues."""

    namespace: str | None
    """The custom namespace it declares; None means the machine's own fqn."""

    join_all: bool
    """True for `join: "all"`: fire only once every source (every lane) arrived."""

    def templates(self) -> Iterable[Template]:
        """The label's template, then every source's and target's name template."""
        yield self.label
        for cls in (*self.sources, *self.targets):
            yield declaration(cls).name


@dataclass(frozen=True, slots=True)
class Declaration:
    """The structure an LTM class declares."""

    cls: type[LTM]
    """The class."""

    name: Template
    """Its name template."""

    init: tuple[type[LTM], ...]
    """Children queued when the node executes, in order."""

    transitions: tuple[TransitionSpec, ...]
    """Transitions between its children, in declaration order."""

    children: tuple[type[LTM], ...]
    """Every child class: `init`, then each transition's sources and targets, in order."""

    @property
    def is_machine(self) -> bool:
        """True if the LTM has children (it is a machine, not a plain state)."""
        return bool(self.children)


def declaration(cls: type[LTM]) -> Declaration:
    """The declaration of an LTM class (made when the class was created)."""
    found: Declaration | None = cls.__dict__.get(_ATTRIBUTE)
    if found is None:
        raise InvalidDefinitionError(cls, "declares no `name`: it cannot be used as a state")
    return found


def _classes(cls: type[LTM], what: str, value: object, base: type) -> tuple[type[LTM], ...]:
    items: list[object] = (
        list(value) if _iterable(value) else [value]  # type: ignore[call-overload]
    )
    found: list[type[LTM]] = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, base)):
            raise InvalidDefinitionError(cls, f"{what}: {item!r} is not an LTM class")
        if _ATTRIBUTE not in item.__dict__:
            raise InvalidDefinitionError(cls, f"{what}: {item.__name__} declares no `name`")
        if item not in found:
            found.append(item)  # type: ignore[arg-type]
    if not found:
        raise InvalidDefinitionError(cls, f"{what}: names no class")
    return tuple(found)


def _iterable(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping)


def _transition(cls: type[LTM], index: int, spec: object, base: type) -> TransitionSpec:
    where = f"transitions[{index}]"
    if not isinstance(spec, Mapping):
        raise InvalidDefinitionError(cls, f"{where} must be a dict, not {spec!r}")
    unknown = set(spec) - _TRANSITION_KEYS
    if unknown:
        raise InvalidDefinitionError(
            cls,
            f"{where} has unknown keys {sorted(map(str, unknown))}; "
            f"allowed: {sorted(_TRANSITION_KEYS)}",
        )
    for key in ("from", "to", "label"):
        if key not in spec:
            raise InvalidDefinitionError(cls, f"{where} lacks {key!r}")
    try:
        label = template(spec["label"])
    except ValueError as exc:
        raise InvalidDefinitionError(cls, f"{where} label: {exc}") from None
    namespace = spec.get("namespace")
    if namespace is not None and not (
        isinstance(namespace, str) and _NAMESPACE.fullmatch(namespace)
    ):
        raise InvalidDefinitionError(
            cls,
            f"{where} namespace {namespace!r} must be dot-joined names "
            "([a-z][a-z0-9_]*), like an fqn",
        )
    join = spec.get("join", "any")
    if join not in ("any", "all"):
        raise InvalidDefinitionError(cls, f"{where} join must be 'any' or 'all', not {join!r}")
    transition = TransitionSpec(
        index=index,
        label=label,
        sources=_classes(cls, f"{where} from", spec["from"], base),
        targets=_classes(cls, f"{where} to", spec["to"], base),
        namespace=namespace,
        join_all=join == "all",
    )
    taken = {p for t in transition.templates() if t is not label for p in t.params}
    unused = [p for p in label.params if p not in taken]
    if unused:
        raise InvalidDefinitionError(
            cls,
            f"{where} label {label.text!r} has param {{{unused[0]}}} that no source or "
            "target name takes",
        )
    return transition


def declare(cls: type[LTM], base: type) -> Declaration | None:
    """Reads and checks the declaration of a new LTM class; None if it has no `name`.

    A class without `name` is an abstract base for other LTMs; it cannot be
    used as a state or registered.
    """
    raw_name = getattr(cls, "name", None)
    if raw_name is None:
        return None
    try:
        name = template(raw_name)
    except ValueError as exc:
        raise InvalidDefinitionError(cls, f"name: {exc}") from None
    raw_init = getattr(cls, "init", None) or ()
    init = _classes(cls, "init", raw_init, base) if raw_init else ()
    for child in init:
        if declaration(child).name.is_parameterized:
            raise InvalidDefinitionError(
                cls,
                f"init: {child.__name__} has a parameterized name; spawn it with a "
                "transition carrying params instead",
            )
    raw_transitions = getattr(cls, "transitions", None) or ()
    if not _iterable(raw_transitions):
        raise InvalidDefinitionError(cls, "transitions must be a list of dicts")
    transitions = tuple(_transition(cls, i, spec, base) for i, spec in enumerate(raw_transitions))
    children: list[type[LTM]] = list(init)
    for transition in transitions:
        for child in (*transition.sources, *transition.targets):
            if child not in children:  # a self-loop names its class twice
                children.append(child)
    templates: list[tuple[type[LTM], Template]] = []
    for child in children:
        child_name = declaration(child).name
        for other, other_name in templates:
            if other_name.text == child_name.text:
                raise InvalidDefinitionError(
                    cls,
                    f"children {other.__name__} and {child.__name__} share the name "
                    f"{child_name.text!r}",
                )
            if templates_overlap(other_name, child_name):
                raise InvalidDefinitionError(
                    cls,
                    f"child names {other_name.text!r} ({other.__name__}) and "
                    f"{child_name.text!r} ({child.__name__}) overlap: some key would match both",
                )
        templates.append((child, child_name))
    return Declaration(cls, name, init, transitions, tuple(children))


def validate_tree(root: type[LTM]) -> None:
    """Checks what only the whole tree tells, for a class about to be registered as a root.

    Raises:
        InvalidDefinitionError: The root's name has params, or a child contains
            itself through non-parameterized names only (an infinite tree).
    """
    top = declaration(root)
    if top.name.is_parameterized:
        raise InvalidDefinitionError(root, "a root's name cannot have {param} fields")

    def walk(cls: type[LTM], chain: tuple[type[LTM], ...]) -> None:
        for child in declaration(cls).children:
            if declaration(child).name.is_parameterized:
                continue  # its nodes exist only once spawned: recursion stops there
            if child in chain:
                path = " -> ".join(c.__name__ for c in (*chain, child))
                raise InvalidDefinitionError(
                    root, f"{path}: a machine contains itself with no param to stop it"
                )
            walk(child, (*chain, child))

    walk(root, (root,))
