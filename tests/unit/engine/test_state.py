"""State: `update_state`, `atomic_state_append`, `state`, `get_initial_state`, payloads,
and the external UpdateState and AtomicAppend steps."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from flou_grpc.engine import LTM, Execute, Machine, StateView, UpdateState
from flou_grpc.engine.requests import update_item
from flou_grpc.errors import (
    InvalidFieldError,
    NodeNotFoundError,
    StateKeyNotFoundError,
    StateKeyNotListError,
)
from tests import ltms
from tests.engine_driver import Driver


class Probe(LTM):
    """Runs the code its machine's `script` holds, with itself and the payload."""

    name = "probe"

    def get_initial_state(self) -> dict[str, Any]:
        return {"cfg": {"deep": {}}, "seen": [], "count": 0}

    def run(self, **payload: Any) -> None:
        type(self.parent).script(self, **payload)


def machine_with(script, **attrs: Any) -> type[LTM]:
    """A root whose init child `probe` runs `script(probe, **payload)`."""
    return type(
        "ProbeRoot",
        (LTM,),
        {
            "__module__": __name__,
            "name": "probe_root",
            "init": [Probe],
            "transitions": [{"from": Probe, "label": "again", "to": Probe}],
            "script": staticmethod(script),
            "get_initial_state": lambda self: {"shared": [], "top": {}},
            **attrs,
        },
    )


def run_probe(script, **payload: Any) -> Driver:
    return Driver(machine_with(script)).start(**payload)


def run_probe_raises(script, error: type[Exception], match: str | None = None) -> Any:
    with pytest.raises(error, match=match) as info:
        run_probe(script)
    return info


# --- update_state inside run ---------------------------------------------------------------------


def test_update_state_sets_keys_relative_to_the_node():
    d = run_probe(lambda s: s.update_state({"x": 1, "cfg": {"new": True}}))

    assert d.node("probe_root.probe")["x"] == 1
    assert d.node("probe_root.probe")["cfg"] == {"new": True}
    assert "x" not in d.doc


def test_update_state_dotted_key_sets_inside_an_existing_object():
    d = run_probe(lambda s: s.update_state({"cfg.deep.leaf": [1], "cfg.flag": "on"}))

    assert d.node("probe_root.probe")["cfg"] == {"deep": {"leaf": [1]}, "flag": "on"}


def test_update_state_replaces_a_whole_value_without_merging():
    d = run_probe(lambda s: s.update_state({"cfg": {"other": 1}}))

    assert d.node("probe_root.probe")["cfg"] == {"other": 1}


def test_update_state_takes_a_list_of_dicts_applied_in_order():
    d = run_probe(lambda s: s.update_state([{"x": 1, "y": 1}, {"x": 2}, {"cfg.deep.z": 3}]))

    node = d.node("probe_root.probe")
    assert (node["x"], node["y"], node["cfg"]["deep"]["z"]) == (2, 1, 3)


def test_root_and_parent_update_state_write_into_their_nodes():
    def script(s):
        s.root.update_state({"global_key": "global_value"})
        s.parent.update_state({"top.from_child": s.fqn})

    d = run_probe(script)

    assert d.doc["global_key"] == "global_value"
    assert d.doc["top"] == {"from_child": "probe_root.probe"}


def test_reads_in_the_same_run_see_the_runs_own_writes():
    seen = {}

    def script(s):
        s.update_state({"x": 1})
        s.update_state({"cfg.deep.y": 2})
        s.root.update_state({"g": 3})
        seen["own"] = (s.state["x"], s.state["cfg"]["deep"]["y"])
        seen["root"] = (s.root.state["g"], s.root.state["probe"]["x"])
        seen["parent"] = s.parent.state["g"]

    run_probe(script)

    assert seen == {"own": (1, 2), "root": (3, 1), "parent": 3}


def test_update_state_is_applied_when_run_returns():
    d = run_probe(lambda s: s.update_state({"x": 1}))

    executes = [i for i, item in enumerate(d.items) if item == Execute("probe_root.probe")]
    assert len(executes) == 1
    patch = d.patches[executes[0]]
    assert {"op": "add", "path": "/probe/x", "value": 1} in patch
    assert patch[-1] == {"op": "replace", "path": "/probe/_status", "value": "active"}


def test_update_state_copies_the_value():
    value = {"inner": [1]}

    def script(s):
        s.update_state({"x": value})
        value["inner"].append(2)

    d = run_probe(script)

    assert d.node("probe_root.probe")["x"] == {"inner": [1]}


@pytest.mark.parametrize("key", ["_status", "_params", "_joins", "_mine", "_x.y"])
def test_update_state_rejects_reserved_keys(key):
    info = run_probe_raises(lambda s: s.update_state({key: 1}), InvalidFieldError, "reserved")

    assert info.value.violations[0].field == f"update_state[{key!r}]"


def test_update_state_rejects_a_key_naming_a_child_node():
    class Root(LTM):
        name = "clash_root"
        init = [ltms.A]
        transitions: ClassVar = [{"from": ltms.A, "label": "go_{k}", "to": ltms.lanes.Work}]

        def run(self, **payload):
            self.update_state({payload["key"]: 1})

    for key in ("a", "a.x", "work_1", "work_x.y"):
        with pytest.raises(InvalidFieldError, match="names a child node"):
            Driver(Root).start(key=key)


@pytest.mark.parametrize("key", ["", "a..b", ".a", "a.", 5, None])
def test_update_state_rejects_malformed_keys(key):
    run_probe_raises(lambda s: s.update_state({key: 1}), InvalidFieldError, "dotted key")


def test_update_state_rejects_a_list_item_that_is_not_a_dict():
    run_probe_raises(
        lambda s: s.update_state([{"x": 1}, ("y", 2)]), InvalidFieldError, "not a dict"
    )


@pytest.mark.parametrize("key", ["missing.x", "cfg.missing.x", "count.x", "seen.x"])
def test_update_state_through_a_missing_or_non_object_key_raises(key):
    info = run_probe_raises(lambda s: s.update_state({key: 1}), StateKeyNotFoundError)

    assert (info.value.fqn, info.value.key) == ("probe_root.probe", key)


@pytest.mark.parametrize("value", [object(), {1, 2}, float("inf"), {"a": {3: 1}}, b"x"])
def test_update_state_rejects_non_json_values(value):
    run_probe_raises(lambda s: s.update_state({"x": value}), ValueError, r"update_state\['x'\]")


def test_update_state_accepts_every_json_type():
    value = {"s": "x", "i": -1, "f": 1.5, "b": False, "n": None, "l": [1, [2]], "t": (1, 2)}

    d = run_probe(lambda s: s.update_state({"x": value}))

    assert d.node("probe_root.probe")["x"] == {**value, "t": [1, 2]}


# --- atomic_state_append -------------------------------------------------------------------------


def test_atomic_state_append_returns_the_whole_list_after_each_append():
    results = []

    def script(s):
        results.append(s.atomic_state_append("seen", "a"))
        results.append(s.atomic_state_append("seen", {"b": 1}))
        results.append(s.state["seen"])

    d = run_probe(script)

    assert results[:2] == [["a"], ["a", {"b": 1}]]
    assert [dict(x) if isinstance(x, StateView) else x for x in results[2]] == ["a", {"b": 1}]
    assert d.node("probe_root.probe")["seen"] == ["a", {"b": 1}]


def test_atomic_state_append_is_committed_on_its_own_before_run_returns():
    d = run_probe(lambda s: s.atomic_state_append("seen", 1))

    kinds = [item[0] if isinstance(item, tuple) else item.kind for item in d.items]
    at = kinds.index("append")
    assert d.items[at] == ("append", "probe_root.probe", "seen", 1)
    assert d.patches[at] == [{"op": "add", "path": "/probe/seen/-", "value": 1}]
    assert d.items[at + 1] == Execute("probe_root.probe")


def test_atomic_state_append_on_the_parent_and_a_dotted_key():
    def script(s):
        s.parent.atomic_state_append("shared", s.fqn)

    d = run_probe(script)

    assert d.doc["shared"] == ["probe_root.probe"]


def test_atomic_state_append_to_a_missing_key_raises():
    info = run_probe_raises(lambda s: s.atomic_state_append("nope", 1), StateKeyNotFoundError)

    assert info.value.key == "nope"


def test_atomic_state_append_through_a_missing_object_raises():
    run_probe_raises(lambda s: s.atomic_state_append("cfg.nope.x", 1), StateKeyNotFoundError)


@pytest.mark.parametrize(("key", "kind"), [("count", "number"), ("cfg", "object")])
def test_atomic_state_append_to_a_non_list_raises_with_its_type(key, kind):
    info = run_probe_raises(lambda s: s.atomic_state_append(key, 1), StateKeyNotListError)

    assert (info.value.key, info.value.actual_type) == (key, kind)


def test_atomic_state_append_rejects_reserved_keys_and_non_json_values():
    run_probe_raises(lambda s: s.atomic_state_append("_status", 1), InvalidFieldError)
    run_probe_raises(lambda s: s.atomic_state_append("seen", object()), ValueError)


def test_atomic_state_append_without_append_hook_reaches_the_committed_document():
    machine = Machine(machine_with(lambda s: s.atomic_state_append("seen", 1)))
    doc = machine.start("i1", {}).document
    for fqn in ("probe_root", "probe_root.probe"):
        execution = machine.prepare("i1", doc, Execute(fqn))
        assert execution.run() is None
        doc = machine.execute("i1", doc, Execute(fqn), execution.effects).document

    assert doc["probe"]["seen"] == [1]


def test_atomic_state_append_without_hook_onto_a_key_changed_meanwhile_raises_not_list():
    machine = Machine(machine_with(lambda s: s.atomic_state_append("seen", 1)))
    doc = machine.start("i1", {}).document
    execution = machine.prepare("i1", doc, Execute("probe_root"))
    execution.run()
    doc = machine.execute("i1", doc, Execute("probe_root"), execution.effects).document
    execution = machine.prepare("i1", doc, Execute("probe_root.probe"))
    execution.run()
    newer = machine.update_state("i1", doc, UpdateState("probe_root.probe", {"seen": 5}))

    with pytest.raises(StateKeyNotListError):
        machine.execute("i1", newer.document, Execute("probe_root.probe"), execution.effects)


def test_run_updates_are_not_changed_by_earlier_unrelated_writes():
    def script(s):
        s.update_state({"cfg.deep.k": 1})
        s.update_state({"cfg": {"z": 1}})
        s.update_state({"mine": {"l": ["mine"]}})
        s.update_state({"mine.l": ["mine", "again"]})

    d = run_probe(script)

    assert d.node("probe_root.probe")["mine"] == {"l": ["mine", "again"]}
    assert d.node("probe_root.probe")["cfg"] == {"z": 1}


# --- state is read-only --------------------------------------------------------------------------


def test_state_is_a_read_only_view_with_nested_views_and_tuples():
    seen = {}

    def script(s):
        state = s.state
        seen["type"] = (type(state), type(state["cfg"]), type(state["seen"]))

        def set_top():
            state["x"] = 1

        def set_nested():
            state["cfg"]["x"] = 1

        def delete_top():
            del state["cfg"]

        for attempt in (set_top, set_nested, delete_top, lambda: state["seen"].append(1)):
            try:
                attempt()
            except (TypeError, AttributeError) as exc:
                seen.setdefault("errors", []).append(type(exc).__name__)
        seen["copy"] = state.to_dict()
        seen["copy"]["cfg"]["mutated"] = True
        seen["len"] = (len(state), sorted(state), "cfg" in state)

    d = run_probe(script)

    assert seen["type"] == (StateView, StateView, tuple)
    assert seen["errors"] == ["TypeError", "TypeError", "TypeError", "AttributeError"]
    assert seen["len"] == (4, ["_status", "cfg", "count", "seen"], True)
    assert "mutated" not in d.node("probe_root.probe")["cfg"]


def test_state_view_repr_shows_its_data():
    assert repr(StateView({"a": 1})) == "StateView({'a': 1})"


@pytest.mark.parametrize(
    "use",
    [
        lambda n: n.state,
        lambda n: n.update_state({"x": 1}),
        lambda n: n.atomic_state_append("x", 1),
        lambda n: n.transition("go"),
    ],
)
def test_unbound_ltm_refuses_state_and_effects(use):
    with pytest.raises(RuntimeError, match="only a running step"):
        use(ltms.A())


def test_unbound_ltm_has_its_name_as_fqn_and_no_parent():
    node = ltms.Linear()

    assert node.fqn == "linear"
    assert node.params == {}
    assert node.parent is None
    assert node.root is node
    assert repr(node) == "<Linear linear>"


# --- get_initial_state ---------------------------------------------------------------------------


def test_get_initial_state_defaults_to_empty():
    assert ltms.A().get_initial_state() == {}
    assert Driver(ltms.Linear).start().node("linear.b") == {"_status": "init"}


def test_initial_state_is_in_place_at_start_for_plain_nodes():
    step = Machine(machine_with(lambda s: None)).start("i1", {})

    assert step.document == {
        "_status": "queued",
        "shared": [],
        "top": {},
        "probe": {"_status": "init", "cfg": {"deep": {}}, "seen": [], "count": 0},
    }


def test_initial_state_of_a_spawned_node_may_use_its_params():
    class Lane(LTM):
        name = "lane_{k}"

        def get_initial_state(self):
            return {"label": f"lane-{self.params['k']}", "parent": self.parent.fqn}

    class Root(LTM):
        name = "spawn_root"
        init = [ltms.A]
        transitions: ClassVar = [{"from": ltms.A, "label": "go_{k}", "to": Lane}]

    d = Driver(Root).start()
    d.send("go_{k}", params=[{"k": 5}])

    assert d.node("spawn_root.lane_5") == {
        "_status": "active",
        "_params": {"k": "5"},
        "label": "lane-5",
        "parent": "spawn_root",
    }


def test_initial_state_is_copied_per_node():
    shared = {"items": []}

    class Holder(LTM):
        name = "holder_{k}"

        def get_initial_state(self):
            return shared

    class Root(LTM):
        name = "copy_root"
        init = [ltms.A]
        transitions: ClassVar = [{"from": ltms.A, "label": "go_{k}", "to": Holder}]

    d = Driver(Root).start()
    d.send("go_{k}", params=[{"k": 1}])
    d.update({"items": [1]}, fqn="copy_root.holder_1")

    assert shared == {"items": []}


def test_get_initial_state_may_not_change_state_or_transition():
    class Sneaky(LTM):
        name = "sneaky"

        def get_initial_state(self):
            self.update_state({"x": 1})
            return {}

    class Root(LTM):
        name = "sneaky_root"
        init = [Sneaky]

    with pytest.raises(RuntimeError, match="get_initial_state may not change state"):
        Machine(Root).start("i1", {})


# --- payloads ------------------------------------------------------------------------------------


def test_payload_reaches_run_as_keyword_arguments():
    class Keywords(LTM):
        name = "keywords"

        def run(self, who, times=1):
            self.update_state({"said": [who] * times})

    class Root(LTM):
        name = "keywords_root"
        init = [Keywords]

    d = Driver(Root).start(who="me", times=2)

    assert d.node("keywords_root.keywords")["said"] == ["me", "me"]


def test_transition_payload_reaches_the_targets_run():
    d = run_probe(lambda s, **payload: s.update_state({"last": payload}))
    d.send("again", payload={"n": 1, "nested": {"x": [1]}})

    assert d.node("probe_root.probe")["last"] == {"n": 1, "nested": {"x": [1]}}


# --- execute applies effects to the latest document ----------------------------------------------


def test_execute_applies_the_runs_updates_to_the_latest_document():
    machine = Machine(machine_with(lambda s: s.update_state({"x": 1})))
    doc = machine.start("i1", {}).document
    execution = machine.prepare("i1", doc, Execute("probe_root"))
    execution.run()
    doc = machine.execute("i1", doc, Execute("probe_root"), execution.effects).document
    execution = machine.prepare("i1", doc, Execute("probe_root.probe"))
    execution.run()
    newer = machine.update_state("i1", doc, UpdateState("probe_root.probe", {"count": 7}))

    step = machine.execute("i1", newer.document, Execute("probe_root.probe"), execution.effects)

    assert step.document["probe"]["x"] == 1
    assert step.document["probe"]["count"] == 7
    assert step.patch == [
        {"op": "add", "path": "/probe/x", "value": 1},
        {"op": "replace", "path": "/probe/_status", "value": "active"},
    ]


def test_execute_raises_when_an_updated_key_vanished_meanwhile():
    machine = Machine(machine_with(lambda s: s.update_state({"cfg.x": 1})))
    doc = machine.start("i1", {}).document
    execution = machine.prepare("i1", doc, Execute("probe_root"))
    execution.run()
    doc = machine.execute("i1", doc, Execute("probe_root"), execution.effects).document
    execution = machine.prepare("i1", doc, Execute("probe_root.probe"))
    execution.run()
    newer = machine.update_state("i1", doc, UpdateState("probe_root.probe", {"cfg": 0}))

    with pytest.raises(StateKeyNotFoundError) as info:
        machine.execute("i1", newer.document, Execute("probe_root.probe"), execution.effects)

    assert info.value.key == "/probe/cfg/x"


# --- the external UpdateState step ---------------------------------------------------------------


def test_external_update_applies_keys_in_sorted_order():
    d = Driver(ltms.Linear).start()

    d.update({"z.y.x": 3, "m": 1, "z.y": {}, "z": {}})

    assert d.doc["z"] == {"y": {"x": 3}}
    assert d.patches[-1] == [
        {"op": "add", "path": "/m", "value": 1},
        {"op": "add", "path": "/z", "value": {}},
        {"op": "add", "path": "/z/y", "value": {}},
        {"op": "add", "path": "/z/y/x", "value": 3},
    ]


def test_external_update_of_a_child_node_by_fqn():
    d = Driver(ltms.Linear).start()

    d.update({"x": [1]}, fqn="linear.a")

    assert d.node("linear.a")["x"] == [1]
    assert d.items[-1] == UpdateState("linear.a", {"x": [1]})


def test_external_update_of_a_spawned_node():
    d = Driver(ltms.HubLanes).start()
    d.send("spawn_{k}", params=[{"k": 1}])

    d.update({"x": 1}, fqn="hub_lanes.first_1")

    assert d.node("hub_lanes.first_1")["x"] == 1


def test_external_update_copies_its_values_and_leaves_the_old_document():
    d = Driver(ltms.Linear).start()
    value = {"l": [1]}
    before = d.doc

    d.update({"v": value})
    value["l"].append(2)

    assert d.doc["v"] == {"l": [1]}
    assert "v" not in before


@pytest.mark.parametrize(
    ("updates", "error", "field"),
    [
        ({"_status": "x"}, InvalidFieldError, "updates['_status']"),
        ({"a": 1}, InvalidFieldError, "updates['a']"),
        ({"b.x": 1}, InvalidFieldError, "updates['b.x']"),
        ({"a..b": 1}, InvalidFieldError, "updates['a..b']"),
    ],
)
def test_external_update_rejects_reserved_malformed_and_child_keys(updates, error, field):
    d = Driver(ltms.Linear).start()

    with pytest.raises(error) as info:
        d.update(updates)

    assert info.value.violations[0].field == field


def test_external_update_through_a_missing_key_raises():
    d = Driver(ltms.Linear).start()

    with pytest.raises(StateKeyNotFoundError) as info:
        d.update({"no.x": 1}, fqn="linear.a")

    assert (info.value.fqn, info.value.key) == ("linear.a", "no.x")


def test_external_update_of_an_unknown_node_raises():
    d = Driver(ltms.Linear).start()

    with pytest.raises(NodeNotFoundError):
        d.update({"x": 1}, fqn="linear.zz")


def test_update_item_owns_its_values_and_checks_the_shape():
    updates = {"a.b": [1]}

    item = update_item("root.a", updates)

    assert item == UpdateState("root.a", {"a.b": [1]})
    assert item.updates["a.b"] is not updates["a.b"]


@pytest.mark.parametrize(
    ("fqn", "updates", "field"),
    [
        ("root", {}, "updates"),
        ("root", [("a", 1)], "updates"),
        ("root", {"": 1}, "updates['']"),
        ("root", {"a..b": 1}, "updates['a..b']"),
        ("root", {1: 1}, "updates[1]"),
        ("root", {"a": object()}, "updates['a']"),
        ("root..a", {"a": 1}, "fqn"),
    ],
)
def test_update_item_rejects_bad_requests(fqn, updates, field):
    with pytest.raises(InvalidFieldError) as info:
        update_item(fqn, updates)

    assert info.value.violations[0].field == field


# --- the external AtomicAppend step --------------------------------------------------------------


def test_external_append_returns_the_list_and_commits_one_add():
    d = Driver(machine_with(lambda s: None)).start()

    assert d.append("shared", "x") == ["x"]
    assert d.append("seen", {"k": 1}, fqn="probe_root.probe") == [{"k": 1}]
    assert d.patches[-1] == [{"op": "add", "path": "/probe/seen/-", "value": {"k": 1}}]
    assert d.doc["shared"] == ["x"]


def test_external_append_copies_the_value_and_leaves_the_old_document():
    d = Driver(machine_with(lambda s: None)).start()
    value = {"l": [1]}
    before = d.doc

    result = d.append("shared", value)
    value["l"].append(2)
    result.append("junk")

    assert d.doc["shared"] == [{"l": [1]}]
    assert before["shared"] == []


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("nope", StateKeyNotFoundError),
        ("top.nope", StateKeyNotFoundError),
        ("nope.x", StateKeyNotFoundError),
        ("top", StateKeyNotListError),
        ("_status", InvalidFieldError),
        ("probe", InvalidFieldError),
    ],
)
def test_external_append_rejects_missing_non_list_and_invalid_keys(key, error):
    d = Driver(machine_with(lambda s: None)).start()

    with pytest.raises(error):
        d.append(key, 1)


def test_external_append_rejects_non_json_values():
    d = Driver(machine_with(lambda s: None)).start()

    with pytest.raises(ValueError, match="value"):
        d.append("shared", object())
