"""The structure of a machine, as `DescribeMachine` shows it: enough to draw it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from flou_grpc.engine.declaration import declaration
from flou_grpc.engine.ltm import LTM

__all__ = ["NodeInfo", "TransitionInfo", "describe", "description"]


@dataclass(frozen=True, slots=True)
class TransitionInfo:
    """A declared transition, with names instead of classes."""

    label: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    namespace: str
    """The effective namespace: the machine's structure fqn unless `custom_namespace`."""
    custom_namespace: bool
    join: str
    """"any" or "all"."""
    params: tuple[str, ...]
    """The `{param}` fields of the label."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of the structure: a state, or a machine and its children."""

    name: str
    fqn: str
    """The structure fqn, made of templates (`jobs.worker_{id}.step`)."""
    kind: str
    """"state" (no children) or "machine"; for orchestrators also "parallel" (a
    python-statemachine parallel state) and "orchestrator" (the root)."""
    params: tuple[str, ...]
    init: tuple[str, ...]
    children: tuple[NodeInfo, ...]
    transitions: tuple[TransitionInfo, ...]
    final: bool = False


def description(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line; empty without one."""
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    return " ".join(doc.split("\n\n", 1)[0].split()) if doc else ""


def describe(cls: type[LTM], parent_fqn: str = "") -> NodeInfo:
    """The structure of an LTM class and everything below it."""
    decl = declaration(cls)
    fqn = f"{parent_fqn}.{decl.name.text}" if parent_fqn else decl.name.text
    return NodeInfo(
        name=decl.name.text,
        fqn=fqn,
        kind="machine" if decl.is_machine else "state",
        params=decl.name.params,
        init=tuple(declaration(c).name.text for c in decl.init),
        children=tuple(describe(child, fqn) for child in decl.children),
        transitions=tuple(
            TransitionInfo(
                label=t.label.text,
                sources=tuple(declaration(c).name.text for c in t.sources),
                targets=tuple(declaration(c).name.text for c in t.targets),
                namespace=t.namespace or fqn,
                custom_namespace=t.namespace is not None,
                join="all" if t.join_all else "any",
                params=t.label.params,
            )
            for t in decl.transitions
        ),
    )
