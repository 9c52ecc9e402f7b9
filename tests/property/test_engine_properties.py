"""Properties of the engine over random well-formed declarations and random events.

Every step of every run: statuses are one of the five; replaying the patch
chain from `{}` rebuilds the document; the input document of the step is
never mutated; nothing below a completed or init machine is active or queued.
Across runs: the same spec built twice and fed the same events gives
identical documents, patches, work items and fired transitions.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flou_grpc.engine import DocWriter, UpdateState, apply_patch
from flou_grpc.engine.declaration import declaration
from flou_grpc.engine.document import json_copy
from flou_grpc.errors import FlouError
from tests.engine_driver import Driver
from tests.strategies import (
    CHANNEL,
    PLAIN_LABELS,
    EventSpec,
    NodeSpec,
    build,
    flat_machines,
    scenarios,
)

STATUSES = {"init", "queued", "active", "completed", "error"}
PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class CheckedDriver(Driver):
    """A `Driver` that checks, at every step, that the input document is left untouched
    and that the patch chain replays into the document."""

    def __init__(self, root: type) -> None:
        super().__init__(root)
        self.replay: dict[str, Any] = {}
        self.errors: list[str] = []

    def step(self) -> None:
        before = self.doc
        snapshot = copy.deepcopy(before)
        try:
            super().step()
        finally:
            assert before == snapshot, "a step mutated its input document"

    def append(self, key: str, value: Any, fqn: str = "") -> list[Any]:
        before = self.doc
        snapshot = copy.deepcopy(before)
        try:
            return super().append(key, value, fqn)
        finally:
            assert before == snapshot, "an append mutated its input document"

    def _commit(self, item: Any, step: Any) -> None:
        super()._commit(item, step)
        self.replay = apply_patch(self.replay, step.patch)
        assert self.replay == self.doc, f"the patch of {item!r} does not rebuild the document"

    def begin(self, payload: dict[str, Any]) -> None:
        """Starts the instance, then settles it."""
        self._commit(("start", payload), self.machine.start(self.instance_id, payload))
        self.settle()

    def settle(self) -> None:
        """Runs the mailbox dry; an item that fails is dropped, as a dead letter."""
        while self.queue:
            try:
                self.step()
            except FlouError as exc:
                self.errors.append(type(exc).__name__)

    def apply(self, event: EventSpec) -> None:
        """Applies one external request; a refused request changes nothing."""
        nodes = [fqn for fqn, _ in self.machine.nodes(self.doc)]
        before = self.doc
        try:
            if event.kind == "send":
                machines = [
                    f
                    for f in nodes
                    if declaration(self.machine.path_of("", self.doc, f)[1]).is_machine
                ]
                namespaces = [self.machine.name] * 3 + [CHANNEL, *machines]
                namespace = namespaces[event.choice % len(namespaces)]
                self.send(event.label, event.lanes, namespace, event.value, drain=False)
                self.step()
            elif event.kind == "update":
                self.queue.append(_update(nodes[event.choice % len(nodes)], event))
                self.step()
            else:
                self.append(event.key, event.value, nodes[event.choice % len(nodes)])
        except FlouError as exc:
            self.errors.append(type(exc).__name__)
            assert self.doc is before
        self.settle()


def _update(fqn: str, event: EventSpec) -> UpdateState:
    return UpdateState(fqn=fqn, updates={event.key: copy.deepcopy(event.value)})


def check_invariants(d: CheckedDriver) -> None:
    assert d.replayed() == d.doc

    def walk(node: dict[str, Any], blocked: bool) -> None:
        status = node["_status"]
        assert status in STATUSES
        if blocked:
            assert status not in ("active", "queued"), "a child of a finished machine is live"
        for value in node.values():
            if isinstance(value, dict) and "_status" in value:
                walk(value, blocked or status in ("init", "completed"))

    walk(d.doc, False)
    listed = d.machine.nodes(d.doc)
    assert len(listed) == _count_nodes(d.doc)
    assert d.doc["_status"] in ("queued", "active")


def _count_nodes(node: dict[str, Any]) -> int:
    return 1 + sum(
        _count_nodes(v) for v in node.values() if isinstance(v, dict) and "_status" in v
    )


def run(spec: NodeSpec, script: list[EventSpec], payload: dict[str, Any]) -> CheckedDriver:
    d = CheckedDriver(build(spec))
    d.begin(payload)
    check_invariants(d)
    for event in script:
        d.apply(event)
        check_invariants(d)
    return d


@PROPERTY_SETTINGS
@given(scenarios(), st.dictionaries(st.sampled_from(["p"]), st.integers(0, 3)))
def test_every_step_keeps_the_document_consistent(scenario, payload):
    spec, script = scenario
    run(spec, script, payload)


@PROPERTY_SETTINGS
@given(scenarios())
def test_same_spec_and_events_give_identical_histories(scenario):
    spec, script = scenario
    one = run(spec, script, {})
    two = run(spec, script, {})

    assert one.doc == two.doc
    assert one.patches == two.patches
    assert one.items == two.items
    assert one.fired == two.fired
    assert one.errors == two.errors


class FlatModel:
    """A reference model of a flat machine of plain states (semantics section 7.1, with
    `join: "all"`), after every request has settled: what is active, what completed."""

    def __init__(self, spec: NodeSpec) -> None:
        self.transitions = [
            (
                t.label,
                [spec.children[i].name for i in t.sources],
                [spec.children[i].name for i in t.targets],
                t.join,
            )
            for t in spec.transitions
        ]
        named = [spec.children[i].name for i in spec.init]
        for _, sources, targets, _ in self.transitions:
            named += [n for n in (*sources, *targets) if n not in named]
        self.status = dict.fromkeys(named, "init")
        for i in spec.init:
            self.status[spec.children[i].name] = "active"
        self.arrived: dict[str, list[str]] = {}
        self.fired: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def send(self, label: str) -> bool:
        remaining = {name for name, status in self.status.items() if status == "active"}
        queued: list[str] = []
        fired = False
        for index, (declared, sources, targets, join) in enumerate(self.transitions):
            consumed = [s for s in sources if s in remaining]
            if declared != label or not consumed:
                continue
            fired = True
            remaining -= set(consumed)
            for name in consumed:
                self.status[name] = "completed"
            if join == "all":
                arrived = self.arrived.get(str(index), [])
                arrived = [*arrived, *(c for c in consumed if c not in arrived)]
                if set(sources) <= set(arrived):
                    self.arrived.pop(str(index), None)
                else:
                    self.arrived[str(index)] = arrived
                    targets = []
            for name in targets:
                self.status[name] = "queued"
                queued.append(name)
            self.fired.append((tuple(consumed), tuple(targets)))
        for name in queued:  # their executions run in order; completed since: skipped
            if self.status[name] in ("queued", "active"):
                self.status[name] = "active"
        return fired


@PROPERTY_SETTINGS
@given(flat_machines(), st.lists(st.sampled_from((*PLAIN_LABELS, "zz")), max_size=12))
def test_flat_machines_agree_with_a_reference_model(spec, labels):
    d = CheckedDriver(build(spec))
    d.begin({})
    model = FlatModel(spec)
    for label in labels:
        before = len(d.errors)
        d.apply(EventSpec("send", label=label))
        fired = model.send(label)

        assert (len(d.errors) == before) is fired
        assert {f: s for f, s in d.statuses().items() if f != "root"} == {
            f"root.{name}": status for name, status in model.status.items()
        }
        assert d.doc.get("_joins", {}) == model.arrived
    assert [
        (tuple(s.split(".")[1] for s in f.sources), tuple(t.split(".")[1] for t in f.targets))
        for f in d.fired
    ] == model.fired


_keys = st.sampled_from(["a", "b", "c"])
_values = st.recursive(
    st.one_of(st.none(), st.integers(0, 3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(_keys, inner, max_size=3)
    ),
    max_leaves=5,
)
_paths = st.lists(_keys, min_size=1, max_size=3).map(tuple)
_writes = st.lists(st.tuples(st.sampled_from(["set", "append"]), _paths, _values), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=3), _writes)
def test_doc_writer_patch_rebuilds_its_document_and_leaves_the_input(doc, writes):
    before = copy.deepcopy(doc)
    writer = DocWriter(doc)
    for kind, path, value in writes:
        holder = writer.find(path[:-1])
        if not isinstance(holder, dict):
            continue
        if kind == "set":
            writer.set(path, json_copy(value))
        elif isinstance(holder.get(path[-1]), list):
            writer.append(path, json_copy(value))

    assert doc == before
    assert apply_patch(before, writer.ops) == writer.doc
