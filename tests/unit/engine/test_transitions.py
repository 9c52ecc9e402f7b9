"""The transition algorithm and the lifecycle, driven through the in-memory `Driver`.

Scenarios mirror the original engine's (semantics sections 5, 7, 8 and 9),
with this engine's decided differences: self-loops end `queued`, completing a
machine completes its active or queued descendants, recursion only enters
`active` machines, `join: "all"`, deterministic order.
"""

from __future__ import annotations

from typing import Any

import pytest

from flou_grpc.engine import LTM, Execute, Fired, Machine, Transition, UpdateState
from flou_grpc.engine.requests import fqn_of, payload_of, transition_item
from flou_grpc.engine.work import from_json, to_json
from flou_grpc.errors import (
    InvalidFieldError,
    MissingParamError,
    NodeNotFoundError,
    TransitionNotAllowedError,
)
from tests import ltms
from tests.engine_driver import Driver
from tests.ltms import runs

# --- start and execute --------------------------------------------------------------------


def test_start_creates_every_plain_node_init_and_queues_the_root():
    step = Machine(ltms.Shop).start("i1", {"x": 1})

    assert step.document == {
        "_status": "queued",
        "browse": {"_status": "init"},
        "payment": {
            "_status": "init",
            "charge": {"_status": "init"},
            "receipt": {"_status": "init"},
        },
        "shipped": {"_status": "init"},
    }
    assert step.patch == [{"op": "add", "path": "", "value": step.document}]
    assert step.work == [Execute("shop", {"x": 1})]
    assert step.fired == []


def test_start_leaves_parameterized_nodes_out_until_spawned():
    step = Machine(ltms.HubLanes).start("i1", {})

    assert set(step.document) == {"_status", "hub", "e"}


def test_start_runs_the_root_then_its_init_children_with_the_payload():
    d = Driver(ltms.Channels).start(x=1)

    assert d.statuses() == {
        "channels": "active",
        "channels.a": "active",
        "channels.child1": "active",
        "channels.child1.noop": "active",
        "channels.child1.noop2": "init",
        "channels.child2": "active",
        "channels.child2.noop": "active",
        "channels.child2.noop2": "init",
        "channels.b": "init",
        "channels.c": "init",
    }
    assert list(d.statuses()) == [
        "channels",
        "channels.a",
        "channels.child1",
        "channels.child1.noop",
        "channels.child1.noop2",
        "channels.child2",
        "channels.child2.noop",
        "channels.child2.noop2",
        "channels.b",
        "channels.c",
    ]
    assert [item.fqn for item in d.items if isinstance(item, Execute)] == [
        "channels",
        "channels.a",
        "channels.child1",
        "channels.child2",
        "channels.child1.noop",
        "channels.child2.noop",
    ]
    assert runs(d.node("channels.child2.noop")) == [{"x": 1}]
    assert runs(d.node("channels")) == [{"x": 1}]


def test_statuses_follow_init_queued_active_completed():
    d = Driver(ltms.Linear)
    d._commit(("start", {}), d.machine.start(d.instance_id, {}))

    assert d.statuses() == {"linear": "queued", "linear.a": "init", "linear.b": "init"}
    d.step()
    assert d.statuses() == {"linear": "active", "linear.a": "queued", "linear.b": "init"}
    d.step()
    assert d.statuses() == {"linear": "active", "linear.a": "active", "linear.b": "init"}
    d.send("go", drain=False).step()
    assert d.statuses() == {"linear": "active", "linear.a": "completed", "linear.b": "queued"}
    d.step()
    assert d.statuses() == {"linear": "active", "linear.a": "completed", "linear.b": "active"}


def test_init_children_are_queued_even_when_run_is_overridden():
    d = Driver(ltms.Defaults).start()

    assert d.status("defaults.sub") == "active"
    assert d.status("defaults.sub.caller") == "active"
    assert runs(d.node("defaults")) == [{}]


def test_async_run_is_awaited_and_its_effects_applied():
    d = Driver(ltms.AsyncFlow).start(x=1)

    assert d.status("async_flow.async_step") == "completed"
    assert runs(d.node("async_flow.async_step")) == [{"x": 1}]
    assert runs(d.node("async_flow.b")) == [{"after": "await"}]


class Bumper(LTM):
    """Changes the payload it was given, as careless user code may."""

    name = "bumper"

    def run(self, cfg):
        cfg["n"] += 1
        self.update_state({"saw": cfg["n"]})


class Reader(LTM):
    name = "reader"

    def run(self, cfg):
        self.update_state({"saw": cfg["n"]})


class Split(LTM):
    name = "split_root"
    init = [ltms.A]
    transitions = [{"from": ltms.A, "label": "split", "to": [Bumper, Reader]}]


def test_run_changing_its_payload_does_not_change_what_siblings_or_history_get():
    d = Driver(Split).start()

    d.send("split", payload={"cfg": {"n": 1}})

    assert d.node("split_root.bumper")["saw"] == 2
    assert d.node("split_root.reader")["saw"] == 1
    assert Transition("split", "split_root", (), {"cfg": {"n": 1}}) in d.items
    assert Execute("split_root.reader", {"cfg": {"n": 1}}) in d.items


def test_run_that_transitions_itself_moves_with_its_payload():
    d = Driver(ltms.AutoLinear).start()

    assert d.statuses() == {
        "auto_linear": "active",
        "auto_linear.kick": "completed",
        "auto_linear.b": "active",
    }
    assert d.node("auto_linear.kick")["kicked"] is True
    assert d.doc["global_key"] == "global_value"
    assert runs(d.node("auto_linear.b")) == [{"by": "auto_linear.kick"}]


@pytest.mark.parametrize("status", ["init", "completed", "error"])
def test_prepare_returns_none_for_a_node_that_must_not_run(status):
    d = Driver(ltms.Linear).start()
    doc = d.machine.set_status("i1", d.doc, "linear.b", status).document

    assert d.machine.prepare("i1", doc, Execute("linear.b")) is None


@pytest.mark.parametrize("status", ["queued", "active"])
def test_prepare_binds_a_queued_or_active_node_for_its_code_to_run(status):
    d = Driver(ltms.Linear).start()
    doc = d.machine.set_status("i1", d.doc, "linear.b", status).document

    execution = d.machine.prepare("i1", doc, Execute("linear.b", {"p": 1}))

    assert execution.node.fqn == "linear.b"
    assert execution.payload == {"p": 1}
    assert type(execution.node) is ltms.B


def test_prepare_of_a_missing_node_raises_node_not_found():
    d = Driver(ltms.Linear).start()

    with pytest.raises(NodeNotFoundError) as info:
        d.machine.prepare("i1", d.doc, Execute("linear.nope"))

    assert (info.value.instance_id, info.value.fqn) == ("i1", "linear.nope")


def test_execute_creates_an_init_child_missing_from_an_older_document():
    machine = Machine(ltms.Linear)
    doc = {"_status": "queued", "b": {"_status": "init"}}
    execution = machine.prepare("i1", doc, Execute("linear", {"p": 1}))
    execution.run()

    step = machine.execute("i1", doc, Execute("linear", {"p": 1}), execution.effects)

    assert step.document["a"] == {"_status": "queued"}
    assert step.work == [Execute("linear.a", {"p": 1})]
    assert doc == {"_status": "queued", "b": {"_status": "init"}}


# --- cardinalities (section 7.1) -----------------------------------------------------------


def test_one_to_one_completes_the_source_and_runs_the_target():
    d = Driver(ltms.Linear).start()

    d.send("go", payload={"k": "v"})

    assert d.status("linear.a") == "completed"
    assert d.status("linear.b") == "active"
    assert runs(d.node("linear.b")) == [{"k": "v"}]
    assert d.fired == [Fired("linear", "go", "linear", ("linear.a",), ("linear.b",))]


def test_fork_queues_every_target_in_declaration_order():
    d = Driver(ltms.Fork).start()

    d.send("split", payload={"n": 1}, drain=False).step()

    assert d.fired == [Fired("fork", "split", "fork", ("fork.a",), ("fork.b", "fork.c", "fork.d"))]
    assert d.queue == [Execute(f"fork.{k}", {"n": 1}) for k in "bcd"]
    d.drain()
    assert [runs(d.node(f"fork.{k}")) for k in "bcd"] == [[{"n": 1}]] * 3


def test_many_to_one_fires_on_any_active_source():
    d = Driver(ltms.AnyOne).start()

    d.send("merge")

    assert d.status("any_one.a") == "completed"
    assert d.status("any_one.b") == "init"
    assert d.status("any_one.c") == "active"


def test_many_to_one_consumes_every_active_source_and_runs_the_target_once():
    d = Driver(ltms.AnySource).start()

    d.send("merge")

    assert d.fired == [
        Fired(
            "any_source",
            "merge",
            "any_source",
            ("any_source.a", "any_source.b"),
            ("any_source.c",),
        )
    ]
    assert d.status("any_source.a") == d.status("any_source.b") == "completed"
    assert runs(d.node("any_source.c")) == [{}]


def test_many_to_many_queues_each_target_once():
    d = Driver(ltms.ManyToMany).start()

    d.send("swap", drain=False).step()

    assert d.fired[0].sources == ("many_to_many.a", "many_to_many.b")
    assert d.fired[0].targets == ("many_to_many.c", "many_to_many.d")
    assert d.queue == [Execute("many_to_many.c"), Execute("many_to_many.d")]
    d.drain()
    assert runs(d.node("many_to_many.c")) == runs(d.node("many_to_many.d")) == [{}]


def test_same_label_in_several_transitions_fires_them_all_in_one_step():
    d = Driver(ltms.SameLabel).start()

    d.send("go")

    assert [(f.sources, f.targets) for f in d.fired] == [
        (("same_label.a",), ("same_label.c",)),
        (("same_label.b",), ("same_label.d",)),
    ]
    assert d.status("same_label.c") == d.status("same_label.d") == "active"


def test_same_source_in_two_transitions_fires_only_the_first_declared():
    d = Driver(ltms.FirstWins).start()

    d.send("go")

    assert d.fired == [
        Fired("first_wins", "go", "first_wins", ("first_wins.a",), ("first_wins.b",))
    ]
    assert d.status("first_wins.b") == "active"
    assert d.status("first_wins.c") == "init"


@pytest.mark.parametrize("root", [ltms.Chain, ltms.ChainReversed])
def test_one_request_moves_one_step_without_chaining(root):
    d = Driver(root).start()
    name = d.machine.name

    d.send("go")

    assert d.status(f"{name}.b") == "active"
    assert d.status(f"{name}.c") == "init"
    d.send("go")
    assert d.status(f"{name}.b") == "completed"
    assert d.status(f"{name}.c") == "active"


def test_transition_from_a_completed_or_init_state_is_not_allowed():
    d = Driver(ltms.Chain).start()
    d.send("go")
    d.send("go")

    with pytest.raises(TransitionNotAllowedError):
        d.send("go")


def test_transition_from_a_queued_state_is_not_allowed():
    d = Driver(ltms.Chain).start()
    d.send("go", drain=False).step()
    assert d.status("chain.b") == "queued"

    with pytest.raises(TransitionNotAllowedError):
        d.machine.transition("i1", d.doc, Transition("go", "chain"))


def test_unknown_label_is_not_allowed_and_names_the_active_states():
    d = Driver(ltms.Shop).start()
    d.send("checkout")
    doc = d.doc

    with pytest.raises(TransitionNotAllowedError) as info:
        d.send("nope")

    error = info.value
    assert (error.instance_id, error.label, error.namespace) == ("i1", "nope", "shop")
    assert error.active_states == ("shop", "shop.payment", "shop.payment.charge")
    assert error.metadata["activeStates"] == "shop,shop.payment,shop.payment.charge"
    assert d.doc is doc


def test_not_allowed_transition_leaves_the_document_untouched():
    d = Driver(ltms.Linear).start()
    before = d.machine.nodes(d.doc)

    with pytest.raises(TransitionNotAllowedError):
        d.machine.transition("i1", d.doc, Transition("go", "elsewhere"))

    assert d.machine.nodes(d.doc) == before


# --- joins (section 9) ------------------------------------------------------------------------


def test_join_all_waits_until_every_fixed_source_arrived():
    d = Driver(ltms.JoinLater).start()

    d.send("sync")

    assert d.status("join_later.a") == "completed"
    assert d.status("join_later.c") == "init"
    assert d.fired[-1] == Fired("join_later", "sync", "join_later", ("join_later.a",), ())
    assert d.doc["_joins"] == {"0": ["a"]}

    d.send("ready")
    d.send("sync")

    assert d.status("join_later.c") == "active"
    assert d.fired[-1].sources == ("join_later.b",)
    assert d.fired[-1].targets == ("join_later.c",)
    assert d.doc["_joins"] == {}
    assert runs(d.node("join_later.c")) == [{}]


def test_join_all_fires_at_once_when_every_source_is_active():
    d = Driver(ltms.JoinAll).start()

    d.send("sync")

    assert d.fired == [
        Fired("join_all", "sync", "join_all", ("join_all.a", "join_all.b"), ("join_all.c",))
    ]
    assert "_joins" not in d.doc
    assert runs(d.node("join_all.c")) == [{}]


def test_join_all_over_spawned_lanes_waits_for_every_lane():
    d = Driver(ltms.HubJoinAll).start()
    d.send("spawn_{k}", params=[{"k": 1}])
    d.send("spawn_{k}", params=[{"k": 2}])

    d.send("done_{k}", params=[{"k": 1}])

    assert d.status("hub_join_all.work_1") == "completed"
    assert d.status("hub_join_all.gather") == "init"
    assert d.fired[-1].targets == ()

    d.send("done_{k}", params=[{"k": 2}], payload={"last": "2"})

    assert d.status("hub_join_all.gather") == "active"
    assert runs(d.node("hub_join_all.gather")) == [{"last": "2"}]


def test_join_all_over_lanes_arriving_in_one_request_runs_the_target_once():
    d = Driver(ltms.HubJoinAll).start()
    d.send("spawn_{k}", params=[{"k": "x"}])
    d.send("spawn_{k}", params=[{"k": "y"}])

    d.send("done_{k}", params=[{"k": "x"}, {"k": "y"}])

    assert d.fired[-1].sources == ("hub_join_all.work_x", "hub_join_all.work_y")
    assert d.fired[-1].targets == ("hub_join_all.gather",)
    assert runs(d.node("hub_join_all.gather")) == [{}]


def test_join_all_over_lanes_spawned_in_one_request():
    d = Driver(ltms.SpawnJoinAll).start()

    assert d.statuses() == {
        "spawn_join_all": "active",
        "spawn_join_all.launch": "completed",
        "spawn_join_all.work_1": "completed",
        "spawn_join_all.work_2": "completed",
        "spawn_join_all.work_3": "completed",
        "spawn_join_all.gather": "active",
    }
    assert len(runs(d.node("spawn_join_all.gather"))) == 1


class Spawner(LTM):
    name = "spawner_{k}"


class SpawnAndJoin(LTM):
    """One label both spawns a lane (`spawner_{k} -> work_{k}`) and joins the lanes."""

    name = "spawn_and_join"
    init = [ltms.lanes.Hub]
    transitions = [
        {"from": Spawner, "label": "go_{k}", "to": ltms.lanes.Work},
        {"from": ltms.lanes.Work, "label": "go_{k}", "to": ltms.lanes.Gather, "join": "all"},
        {"from": ltms.lanes.Hub, "label": "mk_{k}", "to": [ltms.lanes.Hub, Spawner]},
        {"from": ltms.lanes.Hub, "label": "direct_{k}", "to": [ltms.lanes.Hub, ltms.lanes.Work]},
    ]


def test_join_all_counts_lanes_spawned_earlier_in_the_same_step():
    d = Driver(SpawnAndJoin).start()
    d.send("direct_{k}", params=[{"k": 1}])
    d.send("mk_{k}", params=[{"k": 2}])

    d.send("go_{k}", params=[{"k": 1}, {"k": 2}])

    # work_2 exists (spawned by the first transition) and has not arrived.
    assert d.status("spawn_and_join.work_1") == "completed"
    assert d.status("spawn_and_join.work_2") == "active"
    assert d.status("spawn_and_join.gather") == "init"
    assert d.fired[-1].targets == ()


def test_join_via_atomic_append_runs_the_join_state_once_per_arrival():
    d = Driver(ltms.AppendJoin).start()

    assert runs(d.node("append_join.wait")) == [{"lane": "left"}, {"lane": "right"}]
    assert d.node("append_join.wait")["seen"] == [{"lane": "left"}, {"lane": "right"}]
    assert d.status("append_join.e") == "active"


def test_join_via_atomic_append_over_spawned_lanes():
    d = Driver(ltms.SpawnAppendJoin).start()

    assert sorted(s["k"] for s in d.node("spawn_append_join.wait")["seen"]) == ["1", "2"]
    assert d.status("spawn_append_join.work_1") == "completed"
    assert d.status("spawn_append_join.work_2") == "completed"
    assert d.status("spawn_append_join.e") == "active"


# --- lanes and params ---------------------------------------------------------------------------


def _two_lanes(first: Any = 1, second: Any = 2) -> Driver:
    d = Driver(ltms.HubLanes).start()
    d.send("spawn_{k}", params=[{"k": first}])
    d.send("spawn_{k}", params=[{"k": second}])
    return d


def test_spawn_creates_a_node_with_its_params_stored_as_strings():
    d = _two_lanes(7, "x")

    assert d.node("hub_lanes.first_7") == {
        "_status": "active",
        "_params": {"k": "7"},
        "runs": [{}],
    }
    assert d.node("hub_lanes.first_x")["_params"] == {"k": "x"}
    assert d.status("hub_lanes.hub") == "active"
    assert runs(d.node("hub_lanes.hub")) == [{}, {}, {}]


def test_lane_params_reach_run_as_strings():
    class Echo(LTM):
        name = "echo_{n}"

        def run(self, **payload):
            self.update_state({"seen": {"params": self.params, "parent": self.parent.fqn}})

    class Root(LTM):
        name = "echo_root"
        init = [ltms.A]
        transitions = [{"from": ltms.A, "label": "go_{n}", "to": Echo}]

    d = Driver(Root).start()
    d.send("go_{n}", params=[{"n": 42, "extra": "dropped"}])

    assert d.node("echo_root.echo_42")["seen"] == {"params": {"n": "42"}, "parent": "echo_root"}
    assert d.node("echo_root.echo_42")["_params"] == {"n": "42"}


def test_one_lane_moves_only_its_own_instances():
    d = _two_lanes()

    d.send("next_{k}", params=[{"k": 2}])

    assert d.status("hub_lanes.first_1") == "active"
    assert d.status("hub_lanes.first_2") == "completed"
    assert d.status("hub_lanes.second_2") == "active"
    assert "second_1" not in d.doc


def test_several_lanes_move_together_in_params_order():
    d = _two_lanes()

    d.send("next_{k}", params=[{"k": 2}, {"k": 1}], drain=False).step()

    assert d.fired[-1] == Fired(
        "hub_lanes",
        "next_{k}",
        "hub_lanes",
        ("hub_lanes.first_2", "hub_lanes.first_1"),
        ("hub_lanes.second_2", "hub_lanes.second_1"),
    )
    assert d.queue == [Execute("hub_lanes.second_2"), Execute("hub_lanes.second_1")]


def test_plain_target_reached_from_several_lanes_is_queued_once():
    d = _two_lanes()

    d.send("skip", params=[{"k": 1}, {"k": 2}])

    assert d.fired[-1].targets == ("hub_lanes.e",)
    assert runs(d.node("hub_lanes.e")) == [{}]


def test_label_matches_the_declared_template_not_its_formatted_text():
    d = _two_lanes()

    with pytest.raises(TransitionNotAllowedError):
        d.send("next_1", params=[{"k": 1}])
    d.send("next_{k}", params=[{"k": 1}])
    assert d.status("hub_lanes.second_1") == "active"


def test_params_matching_no_active_instance_are_not_allowed():
    d = _two_lanes()

    with pytest.raises(TransitionNotAllowedError) as info:
        d.send("next_{k}", params=[{"k": 9}])

    assert info.value.active_states == (
        "hub_lanes",
        "hub_lanes.hub",
        "hub_lanes.first_1",
        "hub_lanes.first_2",
    )


def test_label_needing_params_sent_without_them_raises_missing_param():
    d = _two_lanes()

    with pytest.raises(MissingParamError) as info:
        d.send("next_{k}")

    assert (info.value.field, info.value.param, info.value.template) == (
        "params[0]",
        "k",
        "next_{k}",
    )


def test_lane_missing_a_param_that_a_target_needs_raises_missing_param():
    d = Driver(ltms.HubLanes).start()

    with pytest.raises(MissingParamError) as info:
        d.send("spawn_{k}", params=[{"k": 1}, {"j": 2}])

    assert info.value.field == "params[1]"
    assert info.value.param == "k"


def test_spawning_several_instances_in_one_request_consumes_the_source_once():
    d = Driver(ltms.Spawn).start()

    d.send("start_{n}", params=[{"n": 3}, {"n": 1}, {"n": 2}], payload={"p": 1}, drain=False)
    d.step()

    assert d.fired == [
        Fired(
            "spawn",
            "start_{n}",
            "spawn",
            ("spawn.noop",),
            ("spawn.sub_3", "spawn.sub_1", "spawn.sub_2"),
        )
    ]
    d.drain()
    assert d.status("spawn.noop") == "completed"
    for n in "123":
        assert d.status(f"spawn.sub_{n}") == "active"
        assert d.status(f"spawn.sub_{n}.a") == "active"
        assert runs(d.node(f"spawn.sub_{n}.a")) == [{"p": 1}]


def test_spawned_sub_machines_run_their_own_nested_lanes():
    d = Driver(ltms.Fleet).start()

    assert d.statuses() == {
        "fleet": "active",
        "fleet.launch": "completed",
        "fleet.nested_1": "completed",
        "fleet.nested_1.spawner": "completed",
        "fleet.nested_1.leg_1a": "completed",
        "fleet.nested_1.leg_1b": "completed",
        "fleet.nested_1.wrap": "completed",
        "fleet.nested_2": "completed",
        "fleet.nested_2.spawner": "completed",
        "fleet.nested_2.leg_2a": "completed",
        "fleet.nested_2.leg_2b": "completed",
        "fleet.nested_2.wrap": "completed",
        "fleet.e": "active",
    }
    assert [f.namespace for f in d.fired if f.label == "finish_{sub}"] == [
        "fleet.nested_1",
        "fleet.nested_1",
        "fleet.nested_2",
        "fleet.nested_2",
    ]


def test_transition_inside_a_spawned_machine_uses_its_instance_namespace():
    d = Driver(ltms.Spawn).start()
    d.send("start_{n}", params=[{"n": "q"}])

    assert d.status("spawn.sub_q.a") == "active"
    with pytest.raises(TransitionNotAllowedError):
        d.send("start_{n}", params=[{"n": "r"}], namespace="spawn.sub_q")


# --- namespaces (section 8) -----------------------------------------------------------------


def test_external_request_defaults_to_the_root_namespace():
    d = Driver(ltms.Shop).start()
    d.send("checkout")

    with pytest.raises(TransitionNotAllowedError) as info:
        d.send("ok")

    assert info.value.namespace == "shop"
    d.send("ok", namespace="shop.payment")
    assert d.status("shop.shipped") == "active"


def test_parent_transition_from_a_nested_leaf_fires_in_the_machine_above():
    d = Driver(ltms.Shop).start()
    d.send("checkout")

    d.send("ok", namespace="shop.payment")

    assert [(f.machine, f.label, f.namespace) for f in d.fired] == [
        ("shop", "checkout", "shop"),
        ("shop.payment", "ok", "shop.payment"),
        ("shop", "paid", "shop"),
    ]
    assert runs(d.node("shop.shipped")) == [{"receipt": "shop.payment.receipt"}]


@pytest.mark.parametrize(
    ("via", "namespace", "moved"),
    [
        ("self", "defaults.sub", "defaults.sub.b"),
        ("parent", "defaults", "defaults.e"),
        ("root", "defaults", "defaults.e"),
    ],
)
def test_in_run_transition_namespace_defaults_to_the_enclosing_machine(via, namespace, moved):
    d = Driver(ltms.Defaults).start(via=via)

    sent = [item for item in d.items if isinstance(item, Transition)]
    assert [(t.label, t.namespace) for t in sent] == [("ping", namespace)]
    assert d.status(moved) == "active"


def test_in_run_transition_takes_an_explicit_namespace():
    d = Driver(ltms.Defaults).start(via="explicit", label="pong", namespace="defaults")

    assert d.status("defaults.d") == "active"
    assert d.status("defaults.sub") == "completed"


def test_root_run_transition_defaults_to_its_own_fqn_and_precedes_init_children():
    # The transition a run fires is queued before the init children it starts,
    # so `pong` finds `sub` queued, not yet active.
    with pytest.raises(TransitionNotAllowedError) as info:
        Driver(ltms.Defaults).start(root_label="pong")

    assert (info.value.label, info.value.namespace) == ("pong", "defaults")
    assert info.value.active_states == ("defaults",)


def test_custom_namespace_fires_in_every_machine_that_declares_it():
    d = Driver(ltms.Channels).start()

    d.send("start", namespace="global")

    assert [(f.machine, f.namespace, f.targets) for f in d.fired] == [
        ("channels", "global", ("channels.b",)),
        ("channels.child1", "global", ("channels.child1.noop2",)),
        ("channels.child2", "global", ("channels.child2.noop2",)),
    ]


def test_custom_namespace_transition_ignores_the_machine_namespace():
    d = Driver(ltms.Channels).start()

    with pytest.raises(TransitionNotAllowedError):
        d.send("start")
    with pytest.raises(TransitionNotAllowedError):
        d.send("start", namespace="channels.child1")


def test_default_namespace_transition_ignores_custom_channels():
    d = Driver(ltms.Channels).start()

    with pytest.raises(TransitionNotAllowedError):
        d.send("local", namespace="global")
    d.send("local")
    assert d.status("channels.c") == "active"


def test_dotted_custom_channel_fires_only_for_its_exact_name():
    d = Driver(ltms.Channels).start()
    d.send("start", namespace="global")

    with pytest.raises(TransitionNotAllowedError):
        d.send("alert", namespace="team")
    d.send("alert", namespace="team.alerts")

    assert d.status("channels.child2.noop") == "active"
    assert runs(d.node("channels.child2.noop")) == [{}, {}]


# --- nested machines -------------------------------------------------------------------------


def test_nested_machines_fire_at_any_depth_in_their_own_namespace():
    d = Driver(ltms.Deep).start()

    d.send("go", namespace="deep.outer.inner")
    assert d.status("deep.outer.inner.b") == "active"

    d.send("up", namespace="deep.outer")
    assert d.status("deep.outer.inner") == "completed"
    assert d.status("deep.outer.d") == "active"

    d.send("finish")
    assert d.status("deep.outer") == "completed"
    assert d.status("deep.e") == "active"


class GoThenFinish(LTM):
    """Fires `go` in its own machine, then `finish` in the root: `b` is queued, then
    its machine completes before `b`'s turn comes."""

    name = "both"

    def run(self, **payload):
        self.transition("go")
        self.root.transition("finish")


class Racing(LTM):
    name = "racing"
    init = [GoThenFinish]
    transitions = [{"from": GoThenFinish, "label": "go", "to": ltms.B}]


class RacingRoot(LTM):
    name = "racing_root"
    init = [Racing, ltms.D]
    transitions = [{"from": Racing, "label": "finish", "to": ltms.E}]


def test_completing_a_machine_completes_its_active_and_queued_descendants():
    d = Driver(RacingRoot)
    d._commit(("start", {}), d.machine.start("i1", {}))
    while not (d.queue and d.queue[0] == Transition("finish", "racing_root")):
        d.step()
    assert d.status("racing_root.racing.b") == "queued"

    d.step()

    assert d.statuses() == {
        "racing_root": "active",
        "racing_root.racing": "completed",
        "racing_root.racing.both": "completed",
        "racing_root.racing.b": "completed",
        "racing_root.d": "active",
        "racing_root.e": "queued",
    }


def test_queued_descendant_of_a_completed_machine_never_runs():
    d = Driver(RacingRoot).start()

    assert d.status("racing_root.racing.b") == "completed"
    assert runs(d.node("racing_root.racing.b")) == []
    assert d.status("racing_root.e") == "active"
    assert Execute("racing_root.racing.b") not in d.items


def test_completion_cascade_keeps_error_and_init_descendants():
    d = Driver(ltms.Deep).start()
    d.doc = d.machine.set_status("i1", d.doc, "deep.outer.inner.a", "error").document

    d.send("finish")

    assert d.status("deep.outer.inner.a") == "error"
    assert d.status("deep.outer.inner.b") == "init"
    assert d.status("deep.outer.inner") == "completed"


def test_children_of_a_completed_machine_stop_answering():
    d = Driver(ltms.Deep).start()
    d.send("finish")

    with pytest.raises(TransitionNotAllowedError) as info:
        d.send("go", namespace="deep.outer.inner")

    assert "deep.outer.inner.a" not in info.value.active_states


@pytest.mark.parametrize("status", ["init", "queued", "completed", "error"])
def test_recursion_enters_only_active_machines(status):
    d = Driver(ltms.Deep).start()
    d.doc = d.machine.set_status("i1", d.doc, "deep.outer", status).document
    assert d.status("deep.outer.inner.a") == "active"

    with pytest.raises(TransitionNotAllowedError):
        d.send("go", namespace="deep.outer.inner")


def test_custom_channel_reaches_only_active_machines():
    d = Driver(ltms.Channels).start()
    d.doc = d.machine.set_status("i1", d.doc, "channels.child1", "queued").document

    d.send("start", namespace="global")

    assert [f.machine for f in d.fired] == ["channels", "channels.child2"]
    assert d.status("channels.child1.noop") == "active"


class Pinged(LTM):
    name = "pinged_{n}"
    init = [ltms.A]
    transitions = [{"from": ltms.A, "label": "ping", "to": ltms.B, "namespace": "chan"}]


class PingRoot(LTM):
    name = "ping_root"
    init = [ltms.lanes.Hub]
    transitions = [{"from": ltms.lanes.Hub, "label": "spawn_{n}", "to": [ltms.lanes.Hub, Pinged]}]


def test_recursion_visits_lanes_of_a_template_in_key_order():
    d = Driver(PingRoot).start()
    for n in ("b", "10", "a", "9"):
        d.send("spawn_{n}", params=[{"n": n}])

    d.send("ping", namespace="chan")

    assert [f.machine for f in d.fired[-4:]] == [
        "ping_root.pinged_10",
        "ping_root.pinged_9",
        "ping_root.pinged_a",
        "ping_root.pinged_b",
    ]


# --- re-entry and self-loops (section 5) -------------------------------------------------------


def test_self_loop_ends_queued_then_runs_again():
    d = Driver(ltms.SelfLoop).start()

    d.send("again", payload={"a": 1}, drain=False).step()

    assert d.fired[-1] == Fired(
        "self_loop", "again", "self_loop", ("self_loop.loop",), ("self_loop.loop",)
    )
    assert d.status("self_loop.loop") == "queued"
    d.drain()
    assert d.status("self_loop.loop") == "active"


def test_self_loop_keeps_the_state_and_passes_each_payload():
    d = Driver(ltms.SelfLoop).start()

    d.send("again", payload={"a": 1})
    d.send("again", payload={"b": 2})

    node = d.node("self_loop.loop")
    assert node["a"] == 1
    assert node["b"] == 2
    assert runs(node) == [{}, {"a": 1}, {"b": 2}]
    d.send("stop")
    assert d.status("self_loop.loop") == "completed"


def test_reentering_a_machine_keeps_state_and_requeues_only_init_children():
    d = Driver(ltms.Deep).start()
    d.send("go", namespace="deep.outer.inner")

    d.send("again")

    assert d.status("deep.outer") == "active"
    assert d.status("deep.outer.inner") == "active"
    assert d.status("deep.outer.inner.a") == "active"
    assert d.status("deep.outer.inner.b") == "completed"
    assert [len(runs(d.node(f))) for f in ("deep.outer", "deep.outer.inner")] == [2, 2]
    assert len(runs(d.node("deep.outer.inner.a"))) == 2
    assert len(runs(d.node("deep.outer.inner.b"))) == 1


def test_target_that_is_already_active_is_queued_and_runs_again():
    class Root(LTM):
        name = "poke_root"
        init = [ltms.A, ltms.B]
        transitions = [{"from": ltms.A, "label": "poke", "to": ltms.B}]

    d = Driver(Root).start()

    d.send("poke", payload={"n": 1})

    assert runs(d.node("poke_root.b")) == [{}, {"n": 1}]


def test_node_queued_twice_runs_once_per_queueing():
    class Root(LTM):
        name = "twice_root"
        init = [ltms.A, ltms.B]
        transitions = [
            {"from": ltms.A, "label": "one", "to": ltms.C},
            {"from": ltms.B, "label": "two", "to": ltms.C},
        ]

    d = Driver(Root).start()
    d.send("one", payload={"n": 1}, drain=False)
    d.send("two", payload={"n": 2}, drain=False)

    d.drain()

    assert runs(d.node("twice_root.c")) == [{"n": 1}, {"n": 2}]


# --- determinism -------------------------------------------------------------------------------


def _shop_events(d: Driver) -> Driver:
    d.send("checkout")
    d.send("ok", namespace="shop.payment")
    return d


def test_same_events_give_identical_documents_patches_items_and_fired():
    one = _shop_events(Driver(ltms.Shop).start(x=1))
    two = _shop_events(Driver(ltms.Shop).start(x=1))

    assert one.doc == two.doc
    assert one.patches == two.patches
    assert one.items == two.items
    assert one.fired == two.fired


def test_nodes_lists_parents_before_children_in_declaration_then_key_order():
    d = _two_lanes("b", "a")
    d.send("next_{k}", params=[{"k": "b"}])

    assert [fqn for fqn, _ in d.machine.nodes(d.doc)] == [
        "hub_lanes",
        "hub_lanes.hub",
        "hub_lanes.first_a",
        "hub_lanes.first_b",
        "hub_lanes.second_b",
        "hub_lanes.e",
    ]
    assert d.machine.active_states(d.doc) == [
        "hub_lanes",
        "hub_lanes.hub",
        "hub_lanes.first_a",
        "hub_lanes.second_b",
    ]


def test_nodes_skips_children_missing_from_an_older_document():
    machine = Machine(ltms.Linear)

    assert machine.nodes({"_status": "active", "b": {"_status": "init"}}) == [
        ("linear", "active"),
        ("linear.b", "init"),
    ]


def test_root_without_children_runs_and_accepts_no_transition():
    d = Driver(ltms.A).start(x=1)

    assert d.statuses() == {"a": "active"}
    assert runs(d.doc) == [{"x": 1}]
    with pytest.raises(TransitionNotAllowedError) as info:
        d.send("go")
    assert info.value.active_states == ("a",)


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fqn", "path"),
    [
        ("", ()),
        ("shop", ()),
        ("shop.payment", ("payment",)),
        ("shop.payment.charge", ("payment", "charge")),
    ],
)
def test_path_of_resolves_an_fqn_to_its_document_path_and_class(fqn, path):
    d = Driver(ltms.Shop).start()

    found, cls = d.machine.path_of("i1", d.doc, fqn)

    assert found == path
    assert cls.name == (path[-1] if path else "shop")


@pytest.mark.parametrize(
    "fqn", ["other", "other.a", "shop.", "shop.nope", "shop.a.x", "shop.cfg", "shopx"]
)
def test_path_of_an_unknown_node_raises_node_not_found(fqn):
    class Root(LTM):
        name = "shop"
        init = [ltms.A]

        def get_initial_state(self):
            return {"cfg": {"x": 1}}

    d = Driver(Root).start()

    with pytest.raises(NodeNotFoundError) as info:
        d.machine.path_of("i1", d.doc, fqn)

    assert info.value.fqn == fqn


def test_path_of_a_spawned_node_uses_its_stored_params():
    d = _two_lanes()

    path, cls = d.machine.path_of("i1", d.doc, "hub_lanes.first_2")

    assert path == ("first_2",)
    assert cls.name == "first_{k}"


def test_set_status_sets_one_node_and_rejects_unknown_statuses():
    d = Driver(ltms.Linear).start()

    step = d.machine.set_status("i1", d.doc, "linear.a", "error")

    assert step.patch == [{"op": "replace", "path": "/a/_status", "value": "error"}]
    assert d.doc["a"]["_status"] == "active"
    with pytest.raises(ValueError, match="unknown status 'done'"):
        d.machine.set_status("i1", d.doc, "linear.a", "done")


# --- requests into work items ----------------------------------------------------------------


def test_transition_item_converts_lane_values_to_strings():
    item = transition_item("go_{k}", "root", [{"k": 1}, {"k": "x", "j": -2}], {"p": [1]})

    assert item == Transition("go_{k}", "root", ({"k": "1"}, {"k": "x", "j": "-2"}), {"p": [1]})


def test_transition_item_without_params_or_payload_has_no_lanes_and_an_empty_payload():
    assert transition_item("go", "root", None, None) == Transition("go", "root", (), {})


def test_transition_item_reports_every_invalid_field():
    with pytest.raises(InvalidFieldError) as info:
        transition_item(
            "Bad", "a..b", [{"k": "a.b"}, "x", {"j": 1.5}], {"x": {1, 2}}, field="transition"
        )

    assert [v.field for v in info.value.violations] == [
        "transition.label",
        "transition.namespace",
        "transition.params[0].k",
        "transition.params[1]",
        "transition.params[2].j",
        "transition.payload",
    ]
    assert info.value.metadata["field"] == "transition.label"


@pytest.mark.parametrize("params", [{"k": 1}, "k", 5, ({"k": 1} for _ in range(1))])
def test_transition_item_rejects_params_that_are_not_a_list(params):
    with pytest.raises(InvalidFieldError) as info:
        transition_item("go", "root", params, None)

    assert [v.field for v in info.value.violations] == ["params"]


@pytest.mark.parametrize("payload", [[1], "x", 5])
def test_transition_item_rejects_a_payload_that_is_not_an_object(payload):
    with pytest.raises(InvalidFieldError, match="payload: must be a JSON object"):
        transition_item("go", "root", None, payload)


@pytest.mark.parametrize("namespace", ["root.sub_A-1", "global", "a.b.c", "X"])
def test_transition_item_accepts_instance_fqns_and_channels_as_namespace(namespace):
    assert transition_item("go", namespace, None, None).namespace == namespace


@pytest.mark.parametrize("namespace", ["", "a..b", ".a", "a b", None, 5])
def test_transition_item_rejects_a_malformed_namespace(namespace):
    with pytest.raises(InvalidFieldError, match="invalid namespace"):
        transition_item("go", namespace, None, None)


def test_in_run_transition_with_bad_params_raises_invalid_field_in_run():
    class Bad(LTM):
        name = "bad"

        def run(self, **payload):
            self.transition("go", params=[{"k": "a.b"}])

    class Root(LTM):
        name = "bad_root"
        init = [Bad]

    machine = Machine(Root)
    doc = machine.start("i1", {}).document
    doc = machine.execute(
        "i1", doc, Execute("bad_root"), machine.prepare("i1", doc, Execute("bad_root")).effects
    ).document
    execution = machine.prepare("i1", doc, Execute("bad_root.bad"))

    with pytest.raises(InvalidFieldError) as info:
        execution.run()

    assert info.value.violations[0].field == "transition.params[0].k"


def test_payload_of_owns_a_copy_and_maps_none_to_empty():
    payload = {"a": [1, {"b": 2}]}

    owned = payload_of(payload)

    assert owned == payload
    assert owned["a"] is not payload["a"]
    assert payload_of(None) == {}


def test_payload_of_rejects_non_json_values_naming_the_field():
    with pytest.raises(InvalidFieldError, match=r"invalid start.payload: start.payload.a"):
        payload_of({"a": object()}, "start.payload")


@pytest.mark.parametrize("fqn", ["", "root", "root.sub_A-1.leaf"])
def test_fqn_of_accepts_node_paths(fqn):
    assert fqn_of(fqn) == fqn


@pytest.mark.parametrize("fqn", ["root.", "a..b", "a b", None, 1])
def test_fqn_of_rejects_malformed_paths(fqn):
    with pytest.raises(InvalidFieldError, match="invalid fqn"):
        fqn_of(fqn)


@pytest.mark.parametrize(
    "item",
    [
        Execute("root.a", {"p": [1]}),
        Transition("go_{k}", "root", ({"k": "1"}, {"k": "2"}), {"p": 1}),
        Transition("go", "global"),
        UpdateState("root.a", {"x.y": [1]}),
    ],
)
def test_work_items_round_trip_through_json(item):
    data = to_json(item)

    assert data["kind"] == item.kind
    assert from_json(data) == item


def test_work_item_of_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown work item kind 'other'"):
        from_json({"kind": "other"})
