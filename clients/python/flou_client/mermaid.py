"""A machine's structure as a Mermaid `stateDiagram-v2`.

Every node is a state named by its declared name (templates included,
`worker_{id}`) under an id derived from its structure fqn; a node with children
is a composite state holding them, `[*] --> child` for each of its `init`
children; its transitions are labelled edges between its children (`label`,
then the custom namespace in brackets and `(join all)` where they apply).
Parallel and orchestrator nodes draw their children as concurrent regions
(`--`). A python-statemachine final state gets an edge to `[*]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from flou_client.models import JoinMode, Machine, MachineTransition, Node, NodeKind

__all__ = ["to_mermaid"]

_NOT_ID = re.compile(r"[^A-Za-z0-9_]")
_INDENT = "    "


class _Ids:
    """Mermaid ids for structure fqns: letters, digits and `_`, unique in the diagram."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, fqn: str) -> str:
        found = self._ids.get(fqn)
        if found is not None:
            return found
        base = "s_" + _NOT_ID.sub("_", fqn)
        candidate, n = base, 1
        while candidate in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._ids[fqn] = candidate
        self._taken.add(candidate)
        return candidate


def _text(text: str) -> str:
    """Text safe inside a Mermaid state description or edge label (no quotes, no colons)."""
    return text.replace('"', "'").replace(":", "\u2236").replace("\n", " ")


def _label(transition: MachineTransition) -> str:
    label = transition.label
    if transition.custom_namespace:
        label += f" [{transition.namespace}]"
    if transition.join is JoinMode.ALL and len(transition.sources) > 1:
        label += " (join all)"
    return _text(label)


def _node(node: Node, ids: _Ids, depth: int) -> Iterator[str]:
    pad = _INDENT * depth
    me = ids(node.fqn)
    yield f'{pad}state "{_text(node.name)}" as {me}'
    if not node.children:
        return
    yield f"{pad}state {me} {{"
    inner = _INDENT * (depth + 1)
    by_name = {child.name: child for child in node.children}
    regions = node.kind in (NodeKind.PARALLEL, NodeKind.ORCHESTRATOR)
    for index, child in enumerate(node.children):
        if regions and index:
            yield f"{inner}--"
        yield from _node(child, ids, depth + 1)
        if regions and child.name in node.init:
            yield f"{inner}[*] --> {ids(child.fqn)}"
    if not regions:
        for name in node.init:
            if name in by_name:
                yield f"{inner}[*] --> {ids(by_name[name].fqn)}"
    for child in node.children:
        if child.final:
            yield f"{inner}{ids(child.fqn)} --> [*]"
    for transition in node.transitions:
        label = _label(transition)
        for source in transition.sources:
            for target in transition.targets:
                if source in by_name and target in by_name:
                    src, dst = ids(by_name[source].fqn), ids(by_name[target].fqn)
                    yield f"{inner}{src} --> {dst} : {label}"
    yield f"{pad}}}"


def to_mermaid(machine: Machine) -> str:
    """The Mermaid `stateDiagram-v2` source of a described machine (ends with a newline).

    Raises:
        ValueError: The machine carries no structure (a `list_machines` answer).
    """
    if machine.root is None:
        raise ValueError(f"machine {machine.name!r} has no structure: describe it first")
    ids = _Ids()
    lines = ["stateDiagram-v2"]
    if machine.description:
        lines.append(f"{_INDENT}%% {machine.name}: {machine.description.splitlines()[0]}")
    lines += list(_node(machine.root, ids, 1))
    lines.append(f"{_INDENT}[*] --> {ids(machine.root.fqn)}")
    return "\n".join(lines) + "\n"
