"""Hypothesis strategies: random well-formed LTM declarations, JSON values and events.

A declaration is drawn as a `NodeSpec` (plain data), then turned into LTM
classes by `build`, so the same spec can be built twice into two unrelated
class trees: anything that depends on class identity or hash order then shows.

Generated trees: each machine has plain leaves `s{i}`, parameterized leaves
`w{i}_{k}`, plain sub-machines `m{i}` and parameterized sub-machines
`n{i}_{k}` (all lanes use the one param `k`), random `init` among its plain
children, and random transitions over a small pool of labels, some in the
custom namespace `chan`, some `join: "all"`. Every node starts with
`{"items": [], "count": 0, "runs": 0}` (external requests change the first
two, never `runs`); its `run` counts its runs, keeps its last payload,
and on its first run only may fire one label of its machine, so every run of
events settles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from hypothesis import strategies as st

from flou_grpc.engine import LTM

__all__ = [
    "CHANNEL",
    "EventSpec",
    "NodeSpec",
    "TransitionData",
    "build",
    "events",
    "flat_machines",
    "json_values",
    "labels_of",
    "machines",
    "scenarios",
]

CHANNEL = "chan"
PLAIN_LABELS = ("q0", "q1", "q2")
PARAM_LABELS = ("p0_{k}", "p1_{k}")
LANE_VALUES = ("1", "2", "a", 3)
STATE_KEYS = ("k0", "k1", "k0.x", "items", "count")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text("abc _-", max_size=4),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    ),
    max_leaves=6,
)
payloads = st.dictionaries(st.sampled_from(["p", "q"]), json_scalars, max_size=2)


@dataclass(frozen=True)
class TransitionData:
    sources: tuple[int, ...]
    label: str
    targets: tuple[int, ...]
    namespace: str | None
    join: str


@dataclass(frozen=True)
class NodeSpec:
    name: str
    children: tuple[NodeSpec, ...] = ()
    init: tuple[int, ...] = ()
    transitions: tuple[TransitionData, ...] = ()
    fires: tuple[str, str] | None = None
    """(label, via): fired on the node's first run, through `self` or `self.root`."""

    @property
    def parameterized(self) -> bool:
        return "{" in self.name


@st.composite
def machines(draw: st.DrawFn, name: str = "root", depth: int = 0, max_depth: int = 2) -> NodeSpec:
    """A machine spec with 1..6 children and 1..5 transitions."""
    pool: list[NodeSpec] = [NodeSpec(f"s{i}") for i in range(draw(st.integers(1, 3)))]
    pool += [NodeSpec(f"w{i}_{{k}}") for i in range(draw(st.integers(0, 2)))]
    if depth < max_depth:
        for i in range(draw(st.integers(0, 1))):
            pool.append(draw(machines(f"m{i}", depth + 1, max_depth)))
        for i in range(draw(st.integers(0, 1))):
            pool.append(draw(machines(f"n{i}_{{k}}", depth + 1, max_depth)))
    plain = [i for i, child in enumerate(pool) if not child.parameterized]
    init = tuple(draw(st.lists(st.sampled_from(plain), min_size=1, max_size=2, unique=True)))
    indices = st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=2, unique=True)
    transitions: list[TransitionData] = []
    for _ in range(draw(st.integers(1, 5))):
        sources, targets = tuple(draw(indices)), tuple(draw(indices))
        lanes = any(pool[i].parameterized for i in (*sources, *targets))
        labels = PLAIN_LABELS + (PARAM_LABELS if lanes else ())
        transitions.append(
            TransitionData(
                sources=sources,
                label=draw(st.sampled_from(labels)),
                targets=targets,
                namespace=draw(st.sampled_from([None, None, None, CHANNEL])),
                join=draw(st.sampled_from(["any", "any", "all"])),
            )
        )
    labels = sorted({t.label for t in transitions})
    fired = st.one_of(
        st.none(), st.tuples(st.sampled_from(labels), st.sampled_from(["self", "self", "root"]))
    )
    pool = [replace(child, fires=draw(fired)) for child in pool]
    return NodeSpec(name, tuple(pool), init, tuple(transitions))


@st.composite
def flat_machines(draw: st.DrawFn) -> NodeSpec:
    """A root of 2..5 plain leaves, 1..6 transitions over plain labels, no channels,
    no lanes and no `run` that fires: simple enough for a reference model."""
    pool = [NodeSpec(f"s{i}") for i in range(draw(st.integers(2, 5)))]
    init = tuple(
        draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=3, unique=True))
    )
    mentioned = set(init)
    transitions = []
    for _ in range(draw(st.integers(1, 6))):
        sources = tuple(
            draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=3, unique=True))
        )
        targets = tuple(
            draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=2, unique=True))
        )
        first_seen = (set(sources) & set(targets)) - mentioned  # see `machines`
        targets = tuple(t for t in targets if t not in first_seen) or (min(mentioned),)
        mentioned |= {*sources, *targets}
        transitions.append(
            TransitionData(
                sources,
                draw(st.sampled_from(PLAIN_LABELS)),
                targets,
                None,
                draw(st.sampled_from(["any", "all"])),
            )
        )
    return NodeSpec("root", tuple(pool), init, tuple(transitions))


class Generated(LTM):
    """No name: the base of generated classes (see the module docstring)."""

    fires: ClassVar[tuple[str, str] | None] = None

    def get_initial_state(self) -> dict[str, Any]:
        return {"items": [], "count": 0, "runs": 0}

    def run(self, **payload: Any) -> None:
        count = self.state["runs"] + 1
        self.update_state({"runs": count, "last": payload})
        if count != 1 or self.fires is None:
            return
        label, via = self.fires
        params = None
        if "{" in label:
            params = [self.params] if self.params else [{"k": "1"}]
        caller = self.root if via == "root" else self
        caller.transition(label, params=params, payload={"from": self.fqn})


def build(spec: NodeSpec) -> type[LTM]:
    """New LTM classes for a spec (fresh classes on every call)."""
    children = [build(child) for child in spec.children]
    namespace: dict[str, Any] = {
        "name": spec.name,
        "fires": spec.fires,
        "init": [children[i] for i in spec.init],
        "transitions": [
            {
                "from": [children[i] for i in t.sources],
                "label": t.label,
                "to": [children[i] for i in t.targets],
                **({"namespace": t.namespace} if t.namespace else {}),
                "join": t.join,
            }
            for t in spec.transitions
        ],
    }
    cls_name = "Gen_" + spec.name.replace("{", "").replace("}", "")
    return type(cls_name, (Generated,), namespace)


@dataclass(frozen=True)
class EventSpec:
    """One external request; `choice` picks a namespace or node among those present."""

    kind: str
    label: str = ""
    lanes: tuple[dict[str, Any], ...] | None = None
    choice: int = 0
    key: str = ""
    value: Any = None


_lanes = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries({"k": st.sampled_from(LANE_VALUES)}), min_size=1, max_size=2
    ).map(tuple),
)


def labels_of(spec: NodeSpec) -> set[str]:
    """Every label declared anywhere in the tree."""
    found = {t.label for t in spec.transitions}
    for child in spec.children:
        found |= labels_of(child)
    return found


def events(labels: tuple[str, ...] = PLAIN_LABELS + PARAM_LABELS) -> st.SearchStrategy:
    """3 to 15 external requests; sends use `labels` mostly, and an unknown one."""
    return st.lists(
        st.one_of(
            st.sampled_from((*labels, *labels, "zz")).flatmap(
                lambda label: st.builds(
                    EventSpec,
                    kind=st.just("send"),
                    label=st.just(label),
                    lanes=_lanes.filter(bool) if "{" in label else _lanes,
                    choice=st.integers(0, 20),
                    value=payloads,
                )
            ),
            st.builds(
                EventSpec,
                kind=st.just("update"),
                choice=st.integers(0, 20),
                key=st.sampled_from(STATE_KEYS),
                value=json_values,
            ),
            st.builds(
                EventSpec,
                kind=st.just("append"),
                choice=st.integers(0, 20),
                key=st.sampled_from(("items", "count")),
                value=json_values,
            ),
        ),
        min_size=3,
        max_size=15,
    )


def scenarios() -> st.SearchStrategy[tuple[NodeSpec, list[EventSpec]]]:
    """A machine spec and events whose labels are mostly the spec's own."""
    return machines().flatmap(
        lambda spec: st.tuples(st.just(spec), events(tuple(sorted(labels_of(spec)))))
    )
