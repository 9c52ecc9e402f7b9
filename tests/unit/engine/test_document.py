"""The instance document: `DocWriter` copy-on-write and its patch, `apply_patch`,
`json_copy`, `json_type`, `pointer`, `StateView`."""

from __future__ import annotations

import copy
import math

import pytest

from flou_grpc.engine.document import (
    DocWriter,
    StateView,
    apply_patch,
    json_copy,
    json_type,
    pointer,
)


def sample() -> dict:
    return {
        "_status": "active",
        "a": {"_status": "active", "x": 1, "list": [1, {"deep": True}]},
        "b": {"_status": "init", "nested": {"y": {"z": "s"}}},
        "c": [],
    }


# --- json_copy, json_type, pointer -------------------------------------------------------------


def test_json_copy_copies_containers_deeply_and_returns_scalars():
    value = {"a": [1, {"b": (2, 3)}], "s": "x", "n": None, "f": 1.5, "t": True}

    copied = json_copy(value)

    assert copied == {"a": [1, {"b": [2, 3]}], "s": "x", "n": None, "f": 1.5, "t": True}
    assert copied["a"] is not value["a"]
    assert copied["a"][1] is not value["a"][1]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "where: nan is not a JSON number"),
        ({"a": [1, math.inf]}, r"where.a\[1\]: inf is not a JSON number"),
        ({"a": {2: 1}}, "where.a: key 2 is not a string"),
        ({"a": {1, 2}}, "where.a: set is not a JSON value"),
        ([object()], r"where\[0\]: object is not a JSON value"),
        (b"x", "where: bytes is not a JSON value"),
    ],
)
def test_json_copy_rejects_what_json_cannot_hold_naming_where(value, message):
    with pytest.raises(ValueError, match=message):
        json_copy(value, "where")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "boolean"),
        (0, "number"),
        (1.5, "number"),
        ("s", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_json_type_names_the_json_type(value, kind):
    assert json_type(value) == kind


def test_pointer_escapes_tilde_and_slash():
    assert pointer(()) == ""
    assert pointer(("a", "b~c", "d/e", 3)) == "/a/b~0c/d~1e/3"


# --- DocWriter ---------------------------------------------------------------------------------


def test_writer_reads_values_and_finds_missing_ones_as_none():
    writer = DocWriter(sample())

    assert writer.get(("a", "x")) == 1
    assert writer.find(("b", "nested", "y")) == {"z": "s"}
    assert writer.find(("a", "nope")) is None
    assert writer.find(("a", "x", "deeper")) is None
    with pytest.raises(KeyError):
        writer.get(("a", "nope"))


def test_writer_never_mutates_the_input_document():
    doc = sample()
    before = copy.deepcopy(doc)
    writer = DocWriter(doc)

    writer.set(("a", "x"), 2)
    writer.set(("a", "new"), {"k": []})
    writer.append(("a", "list"), 3)
    writer.append(("c",), "c")
    writer.set(("b", "nested", "y", "z"), "t")
    writer.set(("_status",), "completed")

    assert doc == before
    assert writer.doc is not doc


def test_writer_shares_untouched_subtrees_with_the_input():
    doc = sample()
    writer = DocWriter(doc)

    writer.set(("a", "x"), 2)

    assert writer.doc["b"] is doc["b"]
    assert writer.doc["c"] is doc["c"]
    assert writer.doc["a"]["list"] is doc["a"]["list"]
    assert writer.doc["a"] is not doc["a"]


def test_writer_copies_a_container_once_per_writer():
    writer = DocWriter(sample())

    writer.set(("a", "x"), 2)
    first = writer.doc, writer.doc["a"]
    writer.set(("a", "y"), 3)

    assert (writer.doc, writer.doc["a"]) == first
    assert writer.doc is first[0]
    assert writer.doc["a"] is first[1]


def test_writer_does_not_change_the_doc_until_the_first_write():
    doc = sample()
    writer = DocWriter(doc)

    assert writer.doc is doc
    assert writer.ops == []


def test_writer_records_add_replace_and_append_operations():
    writer = DocWriter(sample())

    writer.set(("a", "x"), 2)
    writer.set(("a", "new/key"), {"k": 1})
    writer.append(("a", "list"), "v")

    assert writer.ops == [
        {"op": "replace", "path": "/a/x", "value": 2},
        {"op": "add", "path": "/a/new~1key", "value": {"k": 1}},
        {"op": "add", "path": "/a/list/-", "value": "v"},
    ]


def test_writer_set_needs_an_existing_parent_object():
    writer = DocWriter(sample())

    with pytest.raises(KeyError):
        writer.set(("nope", "x"), 1)
    with pytest.raises(KeyError):
        writer.set(("a", "x", "y"), 1)


def test_writer_patch_rebuilds_its_document_from_the_input():
    doc = sample()
    writer = DocWriter(doc)

    writer.set(("a", "x"), 2)
    writer.append(("a", "list"), {"n": 1})
    writer.set(("b", "nested"), {"fresh": []})
    writer.append(("b", "nested", "fresh"), 1)
    writer.set(("d",), {"e": {}})
    writer.set(("d", "e", "f"), [])
    writer.append(("d", "e", "f"), 2)

    assert apply_patch(doc, writer.ops) == writer.doc


def test_writer_patch_rebuilds_its_document_after_a_copied_object_is_replaced():
    # A container copied by the writer, then replaced, must not let a later
    # value be taken for one the writer owns: the `add` of that value in the
    # patch would then show the writes made below it afterwards.
    for _ in range(20):
        doc = {"a": {"b": 0}}
        writer = DocWriter(doc)
        writer.set(("a", "b"), 1)
        writer.set(("a",), {"x": 1})
        value = {"l": []}
        writer.set(("c",), value)
        writer.append(("c", "l"), 1)

        assert apply_patch(doc, writer.ops) == writer.doc
        assert writer.ops[2] == {"op": "add", "path": "/c", "value": {"l": []}}


def test_writer_set_values_later_written_below_are_not_mutated():
    writer = DocWriter(sample())
    value = {"inner": {"k": 1}}

    writer.set(("v",), value)
    writer.set(("v", "inner", "k"), 2)

    assert value == {"inner": {"k": 1}}
    assert writer.doc["v"] == {"inner": {"k": 2}}
    assert apply_patch(sample(), writer.ops) == writer.doc


# --- apply_patch -------------------------------------------------------------------------------


def test_apply_patch_adds_replaces_and_removes_object_members():
    doc = sample()

    result = apply_patch(
        doc,
        [
            {"op": "add", "path": "/a/y", "value": 2},
            {"op": "replace", "path": "/a/x", "value": 3},
            {"op": "remove", "path": "/b/nested"},
            {"op": "add", "path": "/a~1b", "value": "slash"},
            {"op": "add", "path": "/t~0", "value": "tilde"},
        ],
    )

    assert result["a"]["y"] == 2
    assert result["a"]["x"] == 3
    assert "nested" not in result["b"]
    assert result["a/b"] == "slash"
    assert result["t~"] == "tilde"


def test_apply_patch_edits_lists_by_index_and_appends_with_dash():
    result = apply_patch(
        sample(),
        [
            {"op": "add", "path": "/c/-", "value": "end"},
            {"op": "add", "path": "/c/0", "value": "start"},
            {"op": "replace", "path": "/a/list/0", "value": 9},
            {"op": "remove", "path": "/a/list/1"},
            {"op": "add", "path": "/a/list/1", "value": {"n": 1}},
            {"op": "replace", "path": "/a/list/1/n", "value": 2},
        ],
    )

    assert result["c"] == ["start", "end"]
    assert result["a"]["list"] == [9, {"n": 2}]


@pytest.mark.parametrize("op", ["add", "replace"])
def test_apply_patch_replaces_the_whole_document_at_the_root_path(op):
    result = apply_patch(sample(), [{"op": op, "path": "", "value": {"new": 1}}])

    assert result == {"new": 1}


def test_apply_patch_never_mutates_its_input_nor_aliases_patch_values():
    doc = sample()
    before = copy.deepcopy(doc)
    value = {"k": [1]}
    patch = [
        {"op": "add", "path": "/v", "value": value},
        {"op": "add", "path": "/a/list/-", "value": 5},
        {"op": "remove", "path": "/b"},
    ]

    result = apply_patch(doc, patch)
    value["k"].append(2)

    assert doc == before
    assert result["v"] == {"k": [1]}


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ({"op": "remove", "path": ""}, "cannot remove the whole document"),
        ({"op": "add", "path": "", "value": [1]}, "cannot add the whole document"),
        ({"op": "add", "path": "/nope/x", "value": 1}, "/nope/x: no such path"),
        ({"op": "add", "path": "/a/list/7/x", "value": 1}, "no such path"),
        ({"op": "add", "path": "/a/list/x/y", "value": 1}, "no such path"),
        ({"op": "replace", "path": "/a/nope", "value": 1}, "replace of a missing key"),
        ({"op": "move", "path": "/a/x", "from": "/b"}, "unsupported patch operation 'move'"),
        ({"op": "copy", "path": "/a/list/0"}, "unsupported patch operation 'copy'"),
        ({"op": "add", "path": "a/x", "value": 1}, "must start with /"),
        ({"op": "remove", "path": "/nope"}, "/nope"),
        ({"op": "remove", "path": "/c/0"}, "/c/0"),
        ({"op": "replace", "path": "/a/list/5", "value": 1}, "/a/list/5"),
        ({"op": "add", "path": "/a/list/5", "value": 1}, "/a/list/5"),
        ({"op": "add", "path": "/a/list/-1", "value": 1}, "/a/list/-1"),
        ({"op": "replace", "path": "/a/list/x", "value": 1}, "'x'"),
    ],
)
def test_apply_patch_rejects_bad_operations_with_value_error(op, message):
    with pytest.raises(ValueError, match=message):
        apply_patch(sample(), [op])


# --- StateView ---------------------------------------------------------------------------------


def test_state_view_reads_like_a_mapping_with_nested_views():
    data = {"a": {"b": [1, {"c": 2}]}, "n": 1}
    view = StateView(data)

    assert len(view) == 2
    assert list(view) == ["a", "n"]
    assert view["n"] == 1
    assert isinstance(view["a"], StateView)
    assert view["a"]["b"][0] == 1
    assert isinstance(view["a"]["b"], tuple)
    assert isinstance(view["a"]["b"][1], StateView)
    assert view["a"]["b"][1]["c"] == 2
    assert view.to_dict() == data
    assert StateView({"n": 1, "o": {"p": None}}) == {"n": 1, "o": {"p": None}}
    assert view.get("missing") is None


def test_state_view_to_dict_is_a_deep_mutable_copy():
    data = {"a": {"b": [1]}}

    copied = StateView(data).to_dict()
    copied["a"]["b"].append(2)

    assert data == {"a": {"b": [1]}}
