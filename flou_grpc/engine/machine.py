"""`Machine`: a root LTM class and the step functions of its instances.

One step = (instance document, one work item) -> `Step` (new document, the
JSON patch between them, new work items, the transitions that fired). Steps
are pure and deterministic: the same document and item always give the same
step. Running a node's code is the only impure part, and it is split out: the
runtime `prepare`s an `Execution`, runs it (sync or async, outside any
transaction), and hands its recorded effects to `execute`.

Semantics (DESIGN.md section 4; flou-original-semantics.md, bugs fixed):
- Statuses: init -> queued -> active -> completed, plus error.
- A transition fires from `active` sources only. Sources are completed first,
  then targets queued, so a self-loop ends `queued` (the original showed
  `finished`). Completing a node completes its active or queued descendants,
  so the children of a completed machine stop answering transitions.
- Recursion visits child machines that are `active`, in declaration order,
  lanes of a template in key order; forks queue targets in declaration order,
  then params order. Nothing depends on set or hash order.
- A machine's `init` children are queued when it executes, whether or not its
  `run` is overridden; re-entering a node keeps its state and re-queues them.
- Many-to-one fires on any active source; `join: "all"` waits until every
  listed source (every existing lane of a parameterized one) has arrived.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flou_grpc.engine.declaration import (
    Declaration,
    TransitionSpec,
    declaration,
    validate_tree,
)
from flou_grpc.engine.document import DocWriter, JsonObject, Path, json_copy, pointer
from flou_grpc.engine.ltm import (
    LTM,
    AppendHook,
    Effects,
    StepContext,
    child_class,
    child_nodes,
    state_key_path,
)
from flou_grpc.engine.structure import NodeInfo, describe, description
from flou_grpc.engine.work import Execute, Transition, UpdateState, WorkItem
from flou_grpc.errors import (
    InvalidDefinitionError,
    MissingParamError,
    NodeNotFoundError,
    StateKeyNotFoundError,
    StateKeyNotListError,
    TransitionNotAllowedError,
)

__all__ = ["Execution", "Fired", "Machine", "Step"]

INIT, QUEUED, ACTIVE, COMPLETED, ERROR = "init", "queued", "active", "completed", "error"
STATUSES = (INIT, QUEUED, ACTIVE, COMPLETED, ERROR)


@dataclass(frozen=True, slots=True)
class Fired:
    """One transition that fired in a step."""

    machine: str
    """The fqn of the machine node that declares it."""
    label: str
    namespace: str
    sources: tuple[str, ...]
    """fqns of the sources completed."""
    targets: tuple[str, ...]
    """fqns of the targets queued (empty while a `join: "all"` still waits)."""


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one step."""

    document: JsonObject
    """The new instance document (the old one is left untouched)."""
    patch: list[JsonObject]
    """RFC 6902 operations from the old document to the new one."""
    work: list[WorkItem] = field(default_factory=list)
    """New work items, to enqueue in this order behind the mailbox's pending ones."""
    fired: list[Fired] = field(default_factory=list)
    """For a transition: what fired, in order."""


@dataclass(slots=True)
class Execution:
    """A node's code, bound and ready to run; `effects` fills while it runs."""

    node: LTM
    payload: JsonObject
    effects: Effects

    def run(self) -> Awaitable[None] | None:
        """Calls the node's `run(**payload)`; an `async def run` returns an awaitable."""
        return self.node.run(**self.payload)

    @property
    def runs_code(self) -> bool:
        """False when the node's class has no `run` of its own: running it does nothing."""
        return type(self.node).run is not LTM.run


class Machine:
    """A registered root LTM class, validated whole, with its instances' step functions."""

    def __init__(self, root: type[LTM]) -> None:
        """Validates the class as a root.

        Raises:
            InvalidDefinitionError: The class or its tree is declared wrong.
        """
        candidate: object = root
        if not isinstance(candidate, type) or not issubclass(candidate, LTM):
            raise TypeError(f"{root!r} is not an LTM class")
        validate_tree(root)
        self.root = root
        self.user_code_in_steps = False  # its steps are pure: only `run` is user code
        self.declaration = declaration(root)
        self.name: str = self.declaration.name.text

    def __repr__(self) -> str:
        return f"Machine({self.root.__qualname__})"

    @property
    def description(self) -> str:
        """The first paragraph of the root class's docstring."""
        return description(self.root)

    def describe(self) -> NodeInfo:
        """The whole structure: nodes, init children, transitions, namespaces, params."""
        return describe(self.root)

    # --- paths and nodes --------------------------------------------------------------

    def path_of(self, instance_id: str, doc: JsonObject, fqn: str) -> tuple[Path, type[LTM]]:
        """The document path and class of the node at `fqn` (empty: the root).

        Raises:
            NodeNotFoundError: No such node exists in the document.
        """
        if fqn in ("", self.name):
            return (), self.root
        head, _, rest = fqn.partition(".")
        if head != self.name or not rest:
            raise NodeNotFoundError(instance_id, fqn)
        cls: type[LTM] = self.root
        node: object = doc
        path: Path = ()
        for key in rest.split("."):
            value = node.get(key) if isinstance(node, dict) else None
            child = child_class(declaration(cls), key, value)
            if child is None or not isinstance(value, dict) or "_status" not in value:
                raise NodeNotFoundError(instance_id, fqn)
            cls, node, path = child, value, (*path, key)
        return path, cls

    def _fqn(self, path: Path) -> str:
        return ".".join((self.name, *path))

    def _build(
        self,
        context: StepContext,
        cls: type[LTM],
        path: Path,
        params: dict[str, str],
        parent: LTM | None,
    ) -> JsonObject:
        """A new node of class `cls` with its non-parameterized subtree, all `init`."""
        node = cls()
        node._bind(context, path, self._fqn(path), params, parent)
        initial = node.get_initial_state()
        if not isinstance(initial, Mapping):
            raise InvalidDefinitionError(cls, "get_initial_state() must return a dict")
        try:
            value: JsonObject = json_copy(initial, f"{cls.__name__}.get_initial_state()")
        except ValueError as exc:
            raise InvalidDefinitionError(cls, str(exc)) from None
        decl = declaration(cls)
        for key in value:
            if key.startswith("_"):
                raise InvalidDefinitionError(
                    cls, f"get_initial_state() key {key!r}: keys starting with _ are reserved"
                )
            if any(declaration(c).name.matches(key) for c in decl.children):
                raise InvalidDefinitionError(
                    cls, f"get_initial_state() key {key!r} collides with a child's name"
                )
        value["_status"] = INIT
        if params:
            value["_params"] = dict(params)
        for child in decl.children:
            name = declaration(child).name
            if not name.is_parameterized:
                value[name.text] = self._build(context, child, (*path, name.text), {}, node)
        return value

    # --- steps ------------------------------------------------------------------------

    def start(self, instance_id: str, payload: JsonObject) -> Step:
        """The first step of a new instance: the whole tree, root queued with `payload`."""
        writer = DocWriter({})
        context = StepContext(instance_id, self.root, writer)
        document = self._build(context, self.root, (), {}, None)
        document["_status"] = QUEUED
        return Step(
            document,
            [{"op": "add", "path": "", "value": document}],
            [Execute(self.name, payload)],
        )

    def prepare(
        self,
        instance_id: str,
        doc: JsonObject,
        item: Execute,
        append_hook: AppendHook | None = None,
    ) -> Execution | None:
        """Binds the node of an `Execute` item for its code to run; None if it must not run.

        Every queueing of a node runs its code once, even when the node was
        queued again before its first run (a join that re-runs per arrival).
        A node that was completed since (a transition completed one of its
        ancestors), or that errored, does not run.
        """
        path, _ = self.path_of(instance_id, doc, item.fqn)
        writer = DocWriter(doc)
        if writer.get((*path, "_status")) not in (QUEUED, ACTIVE):
            return None
        effects = Effects()
        context = StepContext(instance_id, self.root, writer, append_hook, effects)
        # The code gets its own copy: what it does to its payload stays its own.
        return Execution(context.bind(path), json_copy(item.payload), effects)

    def execute(self, instance_id: str, doc: JsonObject, item: Execute, effects: Effects) -> Step:
        """Applies what a node's code queued, to the latest document, and activates the node.

        Args:
            instance_id: For error messages.
            doc: The instance's latest document (it may hold atomic appends
                committed while the code ran).
            item: The `Execute` item that was run.
            effects: What the code recorded.
        """
        path, cls = self.path_of(instance_id, doc, item.fqn)
        writer = DocWriter(doc)
        for op, target, value in effects.writes:
            try:
                if op == "append":
                    writer.list_at(target)
                    writer.append(target, value)
                elif isinstance(writer.find(target[:-1]), dict):
                    writer.set(target, value)
                else:
                    raise KeyError(pointer(target))
            except KeyError:
                raise StateKeyNotFoundError(instance_id, item.fqn, pointer(target)) from None
            except TypeError as exc:
                raise StateKeyNotListError(
                    instance_id, item.fqn, pointer(target), str(exc)
                ) from None
        writer.set((*path, "_status"), ACTIVE)
        work: list[WorkItem] = list(effects.transitions)
        context = StepContext(instance_id, self.root, writer)
        for child in declaration(cls).init:
            child_path = (*path, declaration(child).name.text)
            if writer.find(child_path) is None:
                parent = context.bind(path)
                writer.set(child_path, self._build(context, child, child_path, {}, parent))
            writer.set((*child_path, "_status"), QUEUED)
            work.append(Execute(self._fqn(child_path), item.payload))
        return Step(writer.doc, writer.ops, work)

    def transition(self, instance_id: str, doc: JsonObject, item: Transition) -> Step:
        """Fires `item.label` in `item.namespace` over the whole tree.

        Raises:
            MissingParamError: A lane lacks a param that a matching transition needs.
            TransitionNotAllowedError: Nothing could fire.
        """
        writer = DocWriter(doc)
        firing = _Firing(self, instance_id, writer, item)
        firing.fire(self.root, ())
        if not firing.fired:
            raise TransitionNotAllowedError(
                instance_id, item.label, item.namespace, self.active_states(doc)
            )
        return Step(writer.doc, writer.ops, list(firing.work), list(firing.fired))

    def update_state(self, instance_id: str, doc: JsonObject, item: UpdateState) -> Step:
        """Sets dotted keys of a node's state, in key order (parents before their keys).

        Raises:
            NodeNotFoundError: No node at `item.fqn`.
            InvalidFieldError: A key is reserved or names a child node.
            StateKeyNotFoundError: An intermediate key does not exist.
        """
        path, cls = self.path_of(instance_id, doc, item.fqn)
        writer = DocWriter(doc)
        fqn = self._fqn(path)
        for key in sorted(item.updates):
            target = state_key_path(cls, path, key, f"updates[{key!r}]")
            if not isinstance(writer.find(target[:-1]), dict):
                raise StateKeyNotFoundError(instance_id, fqn, key)
            writer.set(target, json_copy(item.updates[key]))
        return Step(writer.doc, writer.ops)

    def append(
        self, instance_id: str, doc: JsonObject, fqn: str, key: str, value: Any
    ) -> tuple[Step, list[Any]]:
        """Appends `value` to the list at `key` of a node; returns the step and the new list.

        Raises:
            NodeNotFoundError, InvalidFieldError, StateKeyNotFoundError,
            StateKeyNotListError: as their names say.
        """
        path, cls = self.path_of(instance_id, doc, fqn)
        target = state_key_path(cls, path, key, "key")
        writer = DocWriter(doc)
        try:
            writer.list_at(target)
        except KeyError:
            raise StateKeyNotFoundError(instance_id, self._fqn(path), key) from None
        except TypeError as exc:
            raise StateKeyNotListError(instance_id, self._fqn(path), key, str(exc)) from None
        writer.append(target, json_copy(value, "value"))
        return Step(writer.doc, writer.ops), list(json_copy(writer.get(target)))

    def set_status(self, instance_id: str, doc: JsonObject, fqn: str, status: str) -> Step:
        """Sets one node's status: `error` when its code failed for good, `queued` to retry."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        path, _ = self.path_of(instance_id, doc, fqn)
        writer = DocWriter(doc)
        writer.set((*path, "_status"), status)
        return Step(writer.doc, writer.ops)

    # --- reading ------------------------------------------------------------------------

    def nodes(self, doc: JsonObject) -> list[tuple[str, str]]:
        """(fqn, status) of every node, parents before children, in declaration order."""
        found: list[tuple[str, str]] = []

        def walk(cls: type[LTM], node: JsonObject, fqn: str) -> None:
            found.append((fqn, str(node.get("_status"))))
            for child, key in child_nodes(declaration(cls), node):
                walk(child, node[key], f"{fqn}.{key}")

        walk(self.root, doc, self.name)
        return found

    def active_states(self, doc: JsonObject) -> list[str]:
        """The fqns of the active nodes, parents before children."""
        return [fqn for fqn, status in self.nodes(doc) if status == ACTIVE]


class _Firing:
    """The state of one transition step: the transition algorithm, over one document."""

    def __init__(
        self, machine: Machine, instance_id: str, writer: DocWriter, item: Transition
    ) -> None:
        self.machine, self.instance_id, self.writer, self.item = (
            machine,
            instance_id,
            writer,
            item,
        )
        self.lanes: tuple[Mapping[str, str], ...] = item.params or ({},)
        self.context = StepContext(instance_id, machine.root, writer)
        self.fired: list[Fired] = []
        self.work: list[WorkItem] = []

    def fire(self, cls: type[LTM], path: Path) -> None:
        decl = declaration(cls)
        if not decl.is_machine:
            return
        fqn = self.machine._fqn(path)
        node = self.writer.get(path)
        # Listing the children costs a look at every key of the node: do it once.
        children = list(child_nodes(decl, node))
        remaining = {key for _, key in children if node[key]["_status"] == ACTIVE}
        for transition in decl.transitions:
            if transition.label.text != self.item.label:
                continue
            if (transition.namespace or fqn) != self.item.namespace:
                continue
            self._check_params(transition)
            consumed: list[str] = []
            targets: list[tuple[type[LTM], dict[str, str]]] = []
            for lane in self.lanes:
                for source in transition.sources:
                    key = declaration(source).name.format(lane)
                    if key in remaining:  # one source may feed several lanes (a spawn)
                        if key not in consumed:
                            consumed.append(key)
                        for target in transition.targets:
                            entry = (target, _bind_params(target, lane))
                            if entry not in targets:
                                targets.append(entry)
            if not consumed:
                continue
            remaining.difference_update(consumed)
            for key in consumed:
                self._complete(child_class(decl, key, node[key]), (*path, key))
            if transition.join_all and not self._joined(decl, transition, path, consumed):
                targets = []
            queued = [self._queue(cls, path, target, params) for target, params in targets]
            self.fired.append(
                Fired(
                    machine=fqn,
                    label=transition.label.text,
                    namespace=self.item.namespace,
                    sources=tuple(f"{fqn}.{key}" for key in consumed),
                    targets=tuple(queued),
                )
            )
            node = self.writer.get(path)
        for child, key in children:  # targets queued above are not active: not visited
            status = self.writer.get((*path, key, "_status"))
            if declaration(child).is_machine and status == ACTIVE:
                self.fire(child, (*path, key))

    def _check_params(self, transition: TransitionSpec) -> None:
        for i, lane in enumerate(self.lanes):
            for name in transition.templates():
                missing = name.missing(lane)
                if missing is not None:
                    raise MissingParamError(f"params[{i}]", missing, name.text)

    def _complete(self, cls: type[LTM] | None, path: Path) -> None:
        """Completes a node and, below it, every active or queued node."""
        self.writer.set((*path, "_status"), COMPLETED)
        if cls is None:
            return
        node = self.writer.get(path)
        for child, key in child_nodes(declaration(cls), node):
            if node[key]["_status"] in (ACTIVE, QUEUED):
                self._complete(child, (*path, key))

    def _joined(
        self,
        decl: Declaration,
        transition: TransitionSpec,
        path: Path,
        consumed: list[str],
    ) -> bool:
        """Records the arrivals of a `join: "all"`; True once every source has arrived."""
        node = self.writer.get(path)
        children = list(child_nodes(decl, node))  # lanes spawned earlier in this step count
        joins = dict(node.get("_joins", {}))
        slot = str(transition.index)
        arrived = [*joins.get(slot, []), *(k for k in consumed if k not in joins.get(slot, []))]
        required: set[str] = set()
        for source in transition.sources:
            name = declaration(source).name
            if name.is_parameterized:
                required |= {key for child, key in children if child is source}
            else:
                required.add(name.text)
        if required <= set(arrived):
            joins.pop(slot, None)
            done = True
        else:
            joins[slot] = arrived
            done = False
        if joins or "_joins" in node:
            self.writer.set((*path, "_joins"), joins)
        return done

    def _queue(
        self, parent_cls: type[LTM], path: Path, cls: type[LTM], params: dict[str, str]
    ) -> str:
        """Queues a target (created with its subtree if absent) and enqueues its execution."""
        key = declaration(cls).name.format(params)
        target = (*path, key)
        if self.writer.find(target) is None:
            parent = self.context.bind(path)
            self.writer.set(target, self.machine._build(self.context, cls, target, params, parent))
        self.writer.set((*target, "_status"), QUEUED)
        fqn = self.machine._fqn(target)
        self.work.append(Execute(fqn, self.item.payload))
        return fqn


def _bind_params(cls: type[LTM], lane: Mapping[str, str]) -> dict[str, str]:
    """The values of a lane that the class's name takes."""
    return {name: lane[name] for name in declaration(cls).name.params}
