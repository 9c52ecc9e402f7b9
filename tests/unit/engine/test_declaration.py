"""Declarations: what an LTM class says, read at class creation, and every validation rule.

Each error is an `InvalidDefinitionError` whose message starts with the
module and qualified name of the class at fault.
"""

from __future__ import annotations

from typing import Any

import pytest

from flou_grpc.engine import LTM, Machine
from flou_grpc.engine.declaration import declaration, declare, validate_tree
from flou_grpc.engine.names import template
from flou_grpc.errors import InvalidDefinitionError
from tests.ltms import A, B, C, D, Linear, Shop


def make(class_name: str, name: Any = "x", **attrs: Any) -> type[LTM]:
    """An LTM class created like a `class` statement would create it."""
    namespace = {"__module__": __name__, "__qualname__": class_name, **attrs}
    if name is not None:
        namespace["name"] = name
    return type(class_name, (LTM,), namespace)


def rejects(class_name: str, match: str, name: Any = "x", **attrs: Any) -> InvalidDefinitionError:
    with pytest.raises(InvalidDefinitionError, match=match) as info:
        make(class_name, name, **attrs)
    assert info.value.cls.__qualname__ == class_name
    assert str(info.value).startswith(f"{__name__}.{class_name}: ")
    return info.value


class Abstract(LTM):
    """No name: a base for other LTMs."""


class Worker(LTM):
    name = "worker_{id}"


class TaskDone(LTM):
    name = "task_done"


class TaskAny(LTM):
    name = "task_{x}"


class OtherA(LTM):
    name = "a"


# --- what a declaration holds ---------------------------------------------------------


def test_declaration_holds_name_init_transitions_and_children_in_order():
    cls = make(
        "Ordered",
        "ordered",
        init=[A],
        transitions=[
            {"from": A, "label": "go", "to": B},
            {"from": [B, C], "label": "both", "to": [A, D], "join": "all"},
            {"from": D, "label": "out", "to": A, "namespace": "team.alerts"},
        ],
    )

    found = declaration(cls)

    assert found.cls is cls
    assert found.name == template("ordered")
    assert found.init == (A,)
    assert found.children == (A, B, C, D)
    assert found.is_machine
    first, second, third = found.transitions
    assert (first.index, first.label.text, first.sources, first.targets) == (0, "go", (A,), (B,))
    assert (first.namespace, first.join_all) == (None, False)
    assert (second.index, second.sources, second.targets, second.join_all) == (
        1,
        (B, C),
        (A, D),
        True,
    )
    assert (third.index, third.namespace) == (2, "team.alerts")
    assert [t.text for t in second.templates()] == ["both", "b", "c", "a", "d"]


def test_declaration_of_a_plain_state_is_not_a_machine():
    found = declaration(A)

    assert found.children == ()
    assert found.init == ()
    assert found.transitions == ()
    assert not found.is_machine


def test_class_without_name_is_an_abstract_base_that_cannot_be_used():
    with pytest.raises(InvalidDefinitionError, match="declares no `name`") as info:
        declaration(Abstract)

    assert info.value.cls is Abstract
    assert "Abstract" in str(info.value)


def test_subclass_of_an_abstract_base_is_declared():
    cls = type("Concrete", (Abstract,), {"name": "concrete"})

    assert declaration(cls).name.text == "concrete"


def test_from_and_to_take_one_class_or_any_iterable_of_classes():
    cls = make(
        "Shapes",
        "shapes",
        transitions=[
            {"from": A, "label": "one", "to": B},
            {"from": (A, B), "label": "tuple", "to": [C]},
            {"from": (c for c in [C]), "label": "generator", "to": D},
        ],
    )

    specs = declaration(cls).transitions

    assert [(s.sources, s.targets) for s in specs] == [((A,), (B,)), ((A, B), (C,)), ((C,), (D,))]


def test_repeated_classes_in_a_list_count_once():
    cls = make(
        "Repeats",
        "repeats",
        init=[A, A],
        transitions=[{"from": [A, A], "label": "go", "to": [B, B]}],
    )

    found = declaration(cls)

    assert found.init == (A,)
    assert found.transitions[0].sources == (A,)
    assert found.transitions[0].targets == (B,)
    assert found.children == (A, B)


def test_init_may_be_a_single_class():
    assert declaration(make("SingleInit", "single", init=A)).init == (A,)


def test_empty_init_and_transitions_declare_a_plain_state():
    assert not declaration(make("Empty", "empty", init=[], transitions=[])).is_machine


def test_join_defaults_to_any_and_accepts_any_explicitly():
    cls = make(
        "Joins",
        "joins",
        transitions=[
            {"from": A, "label": "one", "to": B},
            {"from": A, "label": "two", "to": B, "join": "any"},
        ],
    )

    assert [t.join_all for t in declaration(cls).transitions] == [False, False]


def test_one_class_may_be_a_child_of_several_machines():
    one = make("ParentOne", "one", init=[A])
    two = make("ParentTwo", "two", init=[A], transitions=[{"from": A, "label": "go", "to": B}])

    assert declaration(one).children == (A,)
    assert declaration(two).children == (A, B)


def test_label_param_taken_by_a_source_or_a_target_only_is_allowed():
    cls = make(
        "Takers",
        "takers",
        transitions=[
            {"from": A, "label": "spawn_{id}", "to": Worker},
            {"from": Worker, "label": "done_{id}", "to": B},
        ],
    )

    assert [t.label.params for t in declaration(cls).transitions] == [("id",), ("id",)]


def test_self_loop_on_a_state_first_named_by_that_transition_is_accepted():
    cls = make(
        "LoopFirst",
        "loop_first",
        init=[B],
        transitions=[
            {"from": A, "label": "again", "to": A},
            {"from": B, "label": "go", "to": A},
        ],
    )

    assert declaration(cls).children == (B, A)


def test_spawned_lane_that_retries_itself_is_accepted():
    cls = make(
        "RetryLane",
        "retry_lane",
        init=[A],
        transitions=[
            {"from": Worker, "label": "retry_{id}", "to": Worker},
            {"from": A, "label": "spawn_{id}", "to": Worker},
        ],
    )

    assert declaration(cls).children == (A, Worker)


def test_declare_returns_none_for_a_class_without_name():
    assert declare(Abstract, LTM) is None


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["Bad", "a.b", "_x", "a-b", "a b", "1a", "", "a{b}{c}", "a{B}", 5, ["a"]]
)
def test_bad_name_is_rejected_at_class_creation(bad):
    rejects("BadName", "name: ", name=bad)


# --- init ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "match"),
    [
        ([int], "init: <class 'int'> is not an LTM class"),
        ([A()], "init: .* is not an LTM class"),
        (["a"], "init: 'a' is not an LTM class"),
        ([Abstract], "init: Abstract declares no `name`"),
        ([Worker], "init: Worker has a parameterized name"),
    ],
)
def test_bad_init_is_rejected_at_class_creation(init, match):
    rejects("BadInit", match, init=init)


# --- transitions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transitions", "match"),
    [
        ({"from": A, "label": "go", "to": B}, "transitions must be a list of dicts"),
        ("go", "transitions must be a list of dicts"),
        (5, "transitions must be a list of dicts"),
        ([A], r"transitions\[0\] must be a dict"),
        (
            [{"from": A, "label": "go", "to": B}, {"from": A, "label": "go", "to": B, "src": A}],
            r"transitions\[1\] has unknown keys \['src'\]",
        ),
        ([{"label": "go", "to": B}], r"transitions\[0\] lacks 'from'"),
        ([{"from": A, "label": "go"}], r"transitions\[0\] lacks 'to'"),
        ([{"from": A, "to": B}], r"transitions\[0\] lacks 'label'"),
        ([{"from": A, "label": "Go", "to": B}], r"transitions\[0\] label: 'Go' must match"),
        ([{"from": A, "label": 3, "to": B}], r"transitions\[0\] label: .*must be a string"),
        (
            [{"from": A, "label": "go_{a}{b}", "to": B}],
            r"transitions\[0\] label: .*separated by literal text",
        ),
        (
            [{"from": A, "label": "done_{id}", "to": B}],
            r"label 'done_\{id\}' has param \{id\} that no source or target name takes",
        ),
        (
            [{"from": Worker, "label": "done_{id}_{other}", "to": B}],
            r"has param \{other\} that no source",
        ),
        ([{"from": [], "label": "go", "to": B}], r"transitions\[0\] from: names no class"),
        ([{"from": A, "label": "go", "to": ()}], r"transitions\[0\] to: names no class"),
        ([{"from": int, "label": "go", "to": B}], r"transitions\[0\] from: .*not an LTM class"),
        ([{"from": A, "label": "go", "to": "b"}], r"transitions\[0\] to: 'b' is not an LTM"),
        ([{"from": A, "label": "go", "to": {"b": B}}], r"to: \{'b': .*\} is not an LTM class"),
        ([{"from": Abstract, "label": "go", "to": B}], "from: Abstract declares no `name`"),
        ([{"from": A, "label": "go", "to": B, "join": "some"}], "join must be 'any' or 'all'"),
        ([{"from": A, "label": "go", "to": B, "join": True}], "join must be 'any' or 'all'"),
    ],
)
def test_bad_transition_is_rejected_at_class_creation(transitions, match):
    rejects("BadTransition", match, transitions=transitions)


@pytest.mark.parametrize("namespace", ["Global", "a..b", ".a", "a.", "", "a-b", "a.B", 5, ["a"]])
def test_bad_namespace_is_rejected_at_class_creation(namespace):
    rejects(
        "BadNamespace",
        r"transitions\[0\] namespace .* must be dot-joined names",
        transitions=[{"from": A, "label": "go", "to": B, "namespace": namespace}],
    )


@pytest.mark.parametrize("namespace", ["global", "team.alerts", "a1.b_2.c"])
def test_custom_namespace_of_dot_joined_names_is_accepted(namespace):
    cls = make(
        "GoodNamespace",
        "good",
        transitions=[{"from": A, "label": "go", "to": B, "namespace": namespace}],
    )

    assert declaration(cls).transitions[0].namespace == namespace


# --- children ------------------------------------------------------------------------------


def test_two_children_with_the_same_name_are_rejected():
    error = rejects(
        "Twins",
        "children A and OtherA share the name 'a'",
        init=[A],
        transitions=[{"from": A, "label": "go", "to": OtherA}],
    )

    assert "OtherA" in error.problem


def test_two_children_with_the_same_template_are_rejected():
    other = make("OtherWorker", "worker_{id}")

    rejects(
        "TwinTemplates",
        "share the name 'worker_{id}'",
        transitions=[{"from": A, "label": "go_{id}", "to": [Worker, other]}],
    )


def test_overlapping_child_templates_are_rejected():
    rejects(
        "Overlap",
        r"child names 'task_done' \(TaskDone\) and 'task_\{x\}' \(TaskAny\) overlap",
        init=[TaskDone],
        transitions=[{"from": TaskDone, "label": "go_{x}", "to": TaskAny}],
    )


def test_overlapping_templates_under_different_machines_are_allowed():
    one = make("HoldsDone", "holds_done", init=[TaskDone])
    two = make(
        "HoldsAny", "holds_any", transitions=[{"from": A, "label": "go_{x}", "to": TaskAny}]
    )

    assert declaration(one).children == (TaskDone,)
    assert declaration(two).children == (A, TaskAny)


# --- the whole tree, at registration ------------------------------------------------------


def test_machine_accepts_a_valid_root():
    machine = Machine(Linear)

    assert machine.root is Linear
    assert machine.name == "linear"
    assert machine.declaration is declaration(Linear)
    assert repr(machine) == "Machine(Linear)"


def test_machine_rejects_a_root_with_params():
    with pytest.raises(InvalidDefinitionError, match="a root's name cannot have") as info:
        Machine(Worker)

    assert info.value.cls is Worker
    assert str(info.value).startswith(f"{__name__}.Worker: ")


def test_machine_rejects_a_root_without_name():
    with pytest.raises(InvalidDefinitionError, match="declares no `name`"):
        Machine(Abstract)


def test_machine_describes_its_structure_and_its_docstring():
    machine = Machine(Shop)
    info = machine.describe()

    assert machine.description == "Section 8's example: a shop with a nested payment machine."
    assert (info.name, info.fqn, info.kind, info.init) == ("shop", "shop", "machine", ("browse",))
    assert [c.fqn for c in info.children] == ["shop.browse", "shop.payment", "shop.shipped"]
    payment = info.children[1]
    assert [c.fqn for c in payment.children] == ["shop.payment.charge", "shop.payment.receipt"]
    assert [(t.label, t.namespace, t.custom_namespace) for t in payment.transitions] == [
        ("ok", "shop.payment", False)
    ]
    assert Machine(Linear).describe().children[0].kind == "state"


@pytest.mark.parametrize("root", [int, Linear(), "linear", None])
def test_machine_rejects_what_is_not_an_ltm_class(root):
    with pytest.raises(TypeError, match="is not an LTM class"):
        Machine(root)


def redeclare(cls: type[LTM], **attrs: Any) -> type[LTM]:
    """Sets `attrs` on `cls` and declares it again.

    A class statement can only name classes that exist before it, so a cycle
    needs a class whose declaration is made again after its creation.
    """
    for key, value in attrs.items():
        setattr(cls, key, value)
    type.__setattr__(cls, "_flou_declaration", declare(cls, LTM))
    return cls


def test_machine_rejects_a_machine_that_contains_itself_without_a_param():
    inner = redeclare(make("Cycle", "cycle"), init=[])
    redeclare(inner, init=[inner])
    root = make("CycleRoot", "cycle_root", init=[inner])

    with pytest.raises(
        InvalidDefinitionError, match="CycleRoot -> Cycle -> Cycle: a machine contains itself"
    ) as info:
        Machine(root)

    assert info.value.cls is root
    assert str(info.value).startswith(f"{__name__}.CycleRoot: ")


def test_machine_rejects_a_cycle_through_the_root():
    root = make("CycleTop", "cycle_top")
    middle = make("CycleMiddle", "cycle_middle", init=[root])
    redeclare(root, init=[middle])

    with pytest.raises(InvalidDefinitionError, match="CycleTop -> CycleMiddle -> CycleTop"):
        validate_tree(root)


def test_machine_accepts_a_machine_that_contains_itself_through_a_param():
    rec = make("Recursive", "rec_{n}")
    redeclare(rec, init=[A], transitions=[{"from": A, "label": "deeper_{n}", "to": rec}])
    root = make(
        "RecursiveRoot",
        "recursive_root",
        init=[A],
        transitions=[{"from": A, "label": "deeper_{n}", "to": rec}],
    )

    assert Machine(root).name == "recursive_root"


# --- initial states: checked when a node is created -----------------------------------------


def _with_initial(class_name: str, initial: Any, **attrs: Any) -> type[LTM]:
    return make(class_name, "holder", get_initial_state=lambda self: initial, **attrs)


@pytest.mark.parametrize(
    ("initial", "match"),
    [
        ([("a", 1)], r"get_initial_state\(\) must return a dict"),
        (None, r"get_initial_state\(\) must return a dict"),
        ({"_status": "x"}, r"key '_status': keys starting with _ are reserved"),
        ({"_mine": 1}, r"key '_mine': keys starting with _ are reserved"),
        ({"ok": {1, 2}}, r"get_initial_state\(\).ok: set is not a JSON value"),
        ({"ok": float("nan")}, "is not a JSON number"),
        ({1: "x"}, "key 1 is not a string"),
    ],
)
def test_bad_initial_state_is_rejected_when_the_node_is_created(initial, match):
    root = _with_initial("BadInitial", initial)
    machine = Machine(root)

    with pytest.raises(InvalidDefinitionError, match=match) as info:
        machine.start("i1", {})

    assert info.value.cls is root
    assert str(info.value).startswith(f"{__name__}.BadInitial: ")


def test_initial_state_key_named_like_a_child_is_rejected():
    root = _with_initial("Clash", {"a": 1}, init=[A])

    with pytest.raises(InvalidDefinitionError, match="key 'a' collides with a child's name"):
        Machine(root).start("i1", {})


def test_initial_state_key_matching_a_child_template_is_rejected():
    root = _with_initial(
        "ClashTemplate",
        {"worker_7": 1},
        transitions=[{"from": A, "label": "go_{id}", "to": Worker}],
    )

    with pytest.raises(InvalidDefinitionError, match="key 'worker_7' collides"):
        Machine(root).start("i1", {})


def test_initial_state_of_a_nested_child_is_checked_at_start():
    child = _with_initial("NestedClash", {"_x": 1})
    root = make("NestedClashRoot", "nested_root", init=[child])

    with pytest.raises(InvalidDefinitionError, match="NestedClash: get_initial_state") as info:
        Machine(root).start("i1", {})

    assert info.value.cls is child


def test_initial_state_key_unlike_any_child_is_accepted():
    root = _with_initial("NoClash", {"worker": 1, "b": 2}, init=[A])

    step = Machine(root).start("i1", {})

    assert step.document["worker"] == 1
    assert step.document["b"] == 2
