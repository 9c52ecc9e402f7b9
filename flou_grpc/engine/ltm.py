"""`LTM`: the one class users subclass for both states and machines (seed 000's API).

A subclass declares `name`, and optionally `init`, `transitions`,
`get_initial_state()` and `run(**payload)`. The engine creates bound
instances of these classes for a step only: a bound LTM sees the instance
document as it was when its step began, plus its own changes (`state`), and
records what its code asks for (`update_state`, `transition`) as the step's
effects, which the engine applies when `run` returns. Outside a step, only
`start` does anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from flou_grpc.engine.declaration import Declaration, declaration, declare
from flou_grpc.engine.document import (
    DocWriter,
    JsonObject,
    Path,
    StateView,
    json_copy,
)
from flou_grpc.engine.requests import transition_item
from flou_grpc.engine.work import Transition
from flou_grpc.errors import (
    InvalidFieldError,
    StateKeyNotFoundError,
    StateKeyNotListError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = [
    "LTM",
    "AppendHook",
    "Effects",
    "StepContext",
    "child_class",
    "child_nodes",
    "state_key_path",
]

AppendHook = Callable[[str, str, Any], list[Any]]
"""(node fqn, dotted key, value) -> the whole list after an immediate, atomic append."""

_default_starter: Callable[[type[LTM], JsonObject], Any] | None = None
"""Set by the runtime: starts a root LTM on the default Runtime (`LTM.start`)."""


def set_default_starter(starter: Callable[[type[LTM], JsonObject], Any]) -> None:
    """Installs what `LTM.start` uses; the runtime calls this when it is imported."""
    global _default_starter
    _default_starter = starter


@dataclass(slots=True)
class Effects:
    """What a node's code asked for while it ran, applied by the engine when it returns."""

    writes: list[tuple[str, Path, Any]] = field(default_factory=list)
    """("set" or "append", absolute path, owned JSON value), in call order. Appends are
    here only when no append hook commits them at once (the engine used on its own)."""

    transitions: list[Transition] = field(default_factory=list)
    """Transitions to enqueue, in call order, namespaces resolved."""


@dataclass(slots=True)
class StepContext:
    """The view of one instance document that the bound LTMs of a step share."""

    instance_id: str
    root: type[LTM]
    writer: DocWriter
    append_hook: AppendHook | None = None
    effects: Effects | None = None
    """None while effects are not allowed (during `get_initial_state`)."""
    nodes: dict[Path, LTM] = field(default_factory=dict)

    def bind(self, path: Path) -> LTM:
        """The bound LTM of the node at `path` (keys below the root document)."""
        node = self.nodes.get(path)
        if node is not None:
            return node
        if not path:
            node = self.root()
            node._bind(self, (), self.root.name, {}, None)
        else:
            parent = self.bind(path[:-1])
            key = path[-1]
            value = self.writer.find(path)
            cls = child_class(declaration(type(parent)), key, value)
            if cls is None:
                raise KeyError(key)
            params = dict(value.get("_params", {})) if isinstance(value, dict) else {}
            node = cls()
            node._bind(self, path, f"{parent.fqn}.{key}", params, parent)
        self.nodes[path] = node
        return node


def child_class(parent: Declaration, key: str, value: object) -> type[LTM] | None:
    """The child class of `parent` whose template names the node `key`, if any."""
    params = value.get("_params") if isinstance(value, dict) else None
    for child in parent.children:
        name = declaration(child).name
        if not name.is_parameterized:
            if name.text == key:
                return child
        elif (
            isinstance(params, dict)
            and name.missing(params) is None
            and name.format(params) == key
        ):
            return child
    return None


def child_nodes(parent: Declaration, node: Mapping[str, Any]) -> Iterator[tuple[type[LTM], str]]:
    """The child nodes present in `node`: declaration order, then key order within a template."""
    for child in parent.children:
        name = declaration(child).name
        if not name.is_parameterized:
            value = node.get(name.text)
            if isinstance(value, dict) and "_status" in value:
                yield child, name.text
            continue
        keys = []
        for key, value in node.items():
            params = value.get("_params") if isinstance(value, dict) else None
            if (
                isinstance(params, dict)
                and name.missing(params) is None
                and name.format(params) == key
            ):
                keys.append(key)
        for key in sorted(keys):
            yield child, key


def state_key_path(cls: type[LTM], path: Path, key: object, where: str) -> Path:
    """The absolute path of a dotted state key of the node of class `cls` at `path`.

    Raises:
        InvalidFieldError: The key is malformed, starts with `_` (reserved), or
            its first part names a child node (`where` is the field named).
    """
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise InvalidFieldError.of(where, f"{key!r} is not a dotted key of non-empty parts")
    parts = tuple(key.split("."))
    if parts[0].startswith("_"):
        raise InvalidFieldError.of(where, f"{key!r}: keys starting with _ are reserved")
    if any(declaration(c).name.matches(parts[0]) for c in declaration(cls).children):
        raise InvalidFieldError.of(where, f"{key!r}: {parts[0]!r} names a child node")
    return (*path, *parts)


class LTM:
    """A Labeled Transition Model: a state, or a machine of child LTMs.

    Class attributes (the declaration):
        name: `^[a-z][a-z0-9_]*$`, with optional `{param}` fields.
        init: Child LTMs queued, in order, when this one executes.
        transitions: `{"from": A or [A, ...], "label": "go", "to": B or [...],
            "namespace": "custom" (optional), "join": "all" (optional)}` dicts.
        retries: How often a failing `run` is retried before the node's
            status becomes `error`.
    """

    name: ClassVar[str]
    init: ClassVar[Sequence[type[LTM]]] = ()
    transitions: ClassVar[Sequence[Mapping[str, Any]]] = ()
    retries: ClassVar[int] = 3

    _context: StepContext | None
    _path: Path
    _fqn: str
    _params: dict[str, str]
    _parent: LTM | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = declare(cls, LTM)
        if found is not None:
            type.__setattr__(cls, "_flou_declaration", found)

    def __init__(self) -> None:
        self._context = None
        self._path = ()
        self._fqn = getattr(type(self), "name", "")
        self._params = {}
        self._parent = None

    def _bind(
        self,
        context: StepContext,
        path: Path,
        fqn: str,
        params: dict[str, str],
        parent: LTM | None,
    ) -> None:
        self._context, self._path, self._fqn = context, path, fqn
        self._params, self._parent = params, parent

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._fqn}>"

    # --- what user code overrides --------------------------------------------------

    def get_initial_state(self) -> Mapping[str, Any]:
        """The user keys of a new node (`{}` by default); keys may not start with `_`."""
        return {}

    def run(self, **payload: Any) -> Awaitable[None] | None:
        """The code of this state, run when it executes (sync or `async def`)."""
        return None

    # --- reading ---------------------------------------------------------------------

    @property
    def fqn(self) -> str:
        """The node's path: the names of its ancestors and its own, dot-joined."""
        return self._fqn

    @property
    def params(self) -> dict[str, str]:
        """The values of this node's `{param}` fields (empty if it has none)."""
        return dict(self._params)

    @property
    def parent(self) -> LTM | None:
        """The machine containing this node; None for the root."""
        return self._parent

    @property
    def root(self) -> LTM:
        """The root of the instance."""
        node = self
        while node._parent is not None:
            node = node._parent
        return node

    @property
    def state(self) -> StateView:
        """A read-only view of this node's state, this step's own changes included."""
        return StateView(self._require().writer.get(self._path))

    # --- effects -----------------------------------------------------------------------

    def _require(self, effects: bool = False) -> StepContext:
        context = self._context
        if context is None:
            raise RuntimeError(
                f"{type(self).__name__}: only a running step may read or change an LTM's state"
            )
        if effects and context.effects is None:
            raise RuntimeError(
                f"{type(self).__name__}: get_initial_state may not change state or transition"
            )
        return context

    def _key_path(self, key: object, where: str) -> Path:
        return state_key_path(type(self), self._path, key, where)

    def update_state(self, updates: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Sets dotted keys relative to this node; applied when `run` returns.

        `{"a.b": 1}` sets `b` inside the existing object `a`. Later reads in the
        same step see the change. Use `self.root.update_state` for global state.

        Raises:
            StateKeyNotFoundError: An intermediate key does not exist.
            InvalidFieldError: A key is malformed, reserved, or names a child.
            ValueError: A value is not JSON.
        """
        context = self._require(effects=True)
        assert context.effects is not None
        batches = [updates] if isinstance(updates, Mapping) else list(updates)
        for batch in batches:
            if not isinstance(batch, Mapping):
                raise InvalidFieldError.of("updates", f"{batch!r} is not a dict")
            for key, value in batch.items():
                path = self._key_path(key, f"update_state[{key!r}]")
                if not isinstance(context.writer.find(path[:-1]), dict):
                    raise StateKeyNotFoundError(context.instance_id, self._fqn, key)
                owned = json_copy(value, f"update_state[{key!r}]")
                context.writer.set(path, owned)
                context.effects.writes.append(("set", path, owned))

    def atomic_state_append(self, key: str, value: Any) -> list[Any]:
        """Appends `value` to the list at `key`, immediately and atomically.

        Returns:
            The whole list after the append, appends of others included.

        Raises:
            StateKeyNotFoundError: `key` does not exist.
            StateKeyNotListError: `key` does not hold a list.
        """
        context = self._require(effects=True)
        path = self._key_path(key, f"atomic_state_append({key!r})")
        try:
            context.writer.list_at(path)
        except KeyError:
            raise StateKeyNotFoundError(context.instance_id, self._fqn, key) from None
        except TypeError as exc:
            raise StateKeyNotListError(context.instance_id, self._fqn, key, str(exc)) from None
        owned = json_copy(value, f"atomic_state_append({key!r})")
        if context.append_hook is None:  # no store to commit it at once: apply with the step
            assert context.effects is not None
            context.writer.append(path, owned)
            context.effects.writes.append(("append", path, owned))
            return list(json_copy(context.writer.get(path)))
        result = context.append_hook(self._fqn, key, owned)
        context.writer.set(path, json_copy(result))
        return list(result)

    def transition(
        self,
        label: str,
        payload: Mapping[str, Any] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        namespace: str | None = None,
    ) -> None:
        """Queues a transition, enqueued when `run` returns.

        Args:
            label: The transition's label (a template as declared, e.g. `done_{id}`).
            payload: Passed to `run` of every state the transition queues.
            params: One map per lane, binding the `{param}` fields.
            namespace: Default: the enclosing machine's fqn (this node's own
                for the root).
        """
        context = self._require(effects=True)
        assert context.effects is not None
        default = self._parent.fqn if self._parent is not None else self._fqn
        context.effects.transitions.append(
            transition_item(label, namespace or default, params, payload, field="transition")
        )

    def start(self, **payload: Any) -> Any:
        """Starts an instance of this root LTM on the default Runtime; returns its id.

        The default Runtime is configured from the environment
        (`FLOU_DATABASE_URL`; unset: the embedded default).
        """
        if _default_starter is None:
            raise RuntimeError("no default Runtime: import flou_grpc (not only flou_grpc.engine)")
        return _default_starter(type(self), json_copy(payload, "payload"))
