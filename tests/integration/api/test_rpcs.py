"""Every FlouService RPC over a real server: success paths, and each documented error
with its exact status code, ErrorInfo reason, metadata and BadRequest fields."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from grpc_status import rpc_status

from flou_grpc._proto.flou.v1 import error_reason_pb2, instance_pb2, machine_pb2
from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb

T = 5  # seconds: the deadline of every call that should answer at once

WAIT_ENQUEUED = pb.WAIT_MODE_ENQUEUED
WAIT_PROCESSED = pb.WAIT_MODE_PROCESSED
WAIT_SETTLED = pb.WAIT_MODE_SETTLED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def plain(message: Any) -> Any:
    return json_format.MessageToDict(message)


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nested `depth` deep (`{"a": {"a": ... {}}}` has depth `depth`)."""
    data: dict[str, Any] = {}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


async def start(stub, machine: str, instance_id: str = "", **fields: Any) -> instance_pb2.Instance:
    fields.setdefault("wait", WAIT_SETTLED)
    response = await stub.Start(
        pb.StartRequest(machine=machine, instance_id=instance_id, **fields), timeout=T
    )
    return response.instance


async def history(stub, instance_id: str) -> list[instance_pb2.Event]:
    response = await stub.GetHistory(
        pb.GetHistoryRequest(instance_id=instance_id, page_size=1000), timeout=T
    )
    return list(response.events)


async def settled(stub, instance_id: str, timeout: float = 5.0) -> instance_pb2.Instance:
    """Polls until the instance has no pending work."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await stub.GetInstance(pb.GetInstanceRequest(instance_id=instance_id), timeout=T)
        if got.instance.pending_work_count == 0:
            return got.instance
        assert loop.time() < end, f"{instance_id} never settled: {got.instance}"
        await asyncio.sleep(0.02)


def apply_patch(document: Any, patch: list[dict[str, Any]]) -> Any:
    """A minimal RFC 6902 applier (add, replace, remove), independent of the server's."""
    document = copy.deepcopy(document)
    for op in patch:
        path = op["path"]
        if path == "":
            assert op["op"] in ("add", "replace")
            document = copy.deepcopy(op["value"])
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        holder = document
        for part in parts[:-1]:
            holder = holder[int(part)] if isinstance(holder, list) else holder[part]
        last = parts[-1]
        if op["op"] == "remove":
            del holder[int(last) if isinstance(holder, list) else last]
        elif isinstance(holder, list):
            if last == "-":
                holder.append(copy.deepcopy(op["value"]))
            elif op["op"] == "add":
                holder.insert(int(last), copy.deepcopy(op["value"]))
            else:
                holder[int(last)] = copy.deepcopy(op["value"])
        else:
            assert op["op"] in ("add", "replace"), op
            holder[last] = copy.deepcopy(op["value"])
    return document


# --- Start ------------------------------------------------------------------------------


async def test_start_without_an_id_assigns_a_uuid4_and_answers_once_it_exists(stub):
    response = await stub.Start(pb.StartRequest(machine="linear"), timeout=T)
    instance = response.instance
    assert uuid.UUID(instance.id).version == 4
    assert instance.machine == "linear"
    assert instance.revision >= 1
    assert instance.HasField("state")
    assert instance.create_time.seconds > 0


async def test_start_wait_settled_answers_after_every_queued_state_ran(stub):
    instance = await start(stub, "linear", "settled-1", payload=struct({"n": 1}))
    assert instance.id == "settled-1"
    assert instance.status == instance_pb2.INSTANCE_STATUS_WAITING
    assert instance.pending_work_count == 0
    assert list(instance.active_states) == ["linear", "linear.a"]
    state = plain(instance.state)
    assert state["runs"] == [{"n": 1}]  # the root's run got the payload
    assert state["a"]["_status"] == "active"
    assert state["b"]["_status"] == "init"
    assert instance.revision == 3  # started, root executed, a executed


async def test_start_wait_enqueued_answers_at_revision_one(stub):
    instance = await start(stub, "linear", "enq-1", wait=WAIT_ENQUEUED)
    assert instance.id == "enq-1"
    assert 1 <= instance.revision <= 3  # the worker may already have moved on
    events = await history(stub, "enq-1")
    assert events[0].revision == 1
    assert events[0].kind == instance_pb2.EVENT_KIND_STARTED
    assert (await settled(stub, "enq-1")).revision == 3


async def test_start_unknown_machine_is_not_found(stub, fails):
    error = await fails(stub.Start(pb.StartRequest(machine="no_such_machine"), timeout=T))
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_MACHINE_NOT_FOUND"
    assert error.metadata == {"machine": "no_such_machine"}
    assert "google.rpc.ResourceInfo" in error.detail_types


async def test_start_resource_info_names_the_missing_machine(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Start(pb.StartRequest(machine="ghost"), timeout=T)
    status = rpc_status.from_call(caught.value)
    infos = [d for d in status.details if d.Is(error_details_pb2.ResourceInfo.DESCRIPTOR)]
    resource = error_details_pb2.ResourceInfo()
    infos[0].Unpack(resource)
    assert (resource.resource_type, resource.resource_name) == ("flou.v1.Machine", "ghost")


async def test_start_missing_machine_is_invalid_field_machine(stub, fails):
    error = await fails(stub.Start(pb.StartRequest(), timeout=T))
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.fields == ("machine",)
    assert error.metadata["field"] == "machine"


async def test_start_duplicate_instance_id_already_exists(stub, fails):
    await start(stub, "linear", "dup-1")
    error = await fails(stub.Start(pb.StartRequest(machine="linear", instance_id="dup-1")))
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "ERROR_REASON_INSTANCE_ALREADY_EXISTS"
    assert error.metadata == {"instanceId": "dup-1"}


@pytest.mark.parametrize(
    "instance_id", ["-starts-with-dash", "has space", "x" * 129, "slash/ed", "é", "_under"]
)
async def test_start_invalid_instance_id_names_the_field(stub, fails, instance_id):
    error = await fails(
        stub.Start(pb.StartRequest(machine="linear", instance_id=instance_id), timeout=T)
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.fields == ("instance_id",)
    listed = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert not listed.instances  # nothing was created


async def test_start_accepts_the_longest_and_every_allowed_character(stub):
    longest = "A" + "z9._:-" * 21 + "x"
    assert len(longest) == 128
    instance = await start(stub, "linear", longest, wait=WAIT_PROCESSED)
    assert instance.id == longest


async def test_start_same_request_id_and_body_starts_once(stub):
    first = await start(stub, "linear", request_id="req-start", wait=WAIT_PROCESSED)
    again = await start(stub, "linear", request_id="req-start", wait=WAIT_PROCESSED)
    assert again.id == first.id
    listed = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert [i.id for i in listed.instances] == [first.id]


async def test_start_request_id_reused_with_another_body(stub, fails):
    await start(stub, "linear", request_id="req-start-2", payload=struct({"n": 1}))
    error = await fails(
        stub.Start(
            pb.StartRequest(machine="linear", request_id="req-start-2", payload=struct({"n": 2})),
            timeout=T,
        )
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_REQUEST_ID_REUSED"
    assert error.metadata == {"requestId": "req-start-2"}
    listed = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert len(listed.instances) == 1


async def test_request_id_reused_carries_a_bad_request_naming_request_id(stub, fails):
    await start(stub, "linear", request_id="req-start-3", payload=struct({"n": 1}))
    error = await fails(
        stub.Start(
            pb.StartRequest(machine="linear", request_id="req-start-3", payload=struct({"n": 2})),
            timeout=T,
        )
    )
    assert error.reason == "ERROR_REASON_REQUEST_ID_REUSED"
    assert error.fields == ("request_id",)


# --- Transition -------------------------------------------------------------------------


async def test_transition_processed_answers_the_fired_transitions(stub):
    await start(stub, "linear", "t-proc")
    response = await stub.Transition(
        pb.TransitionRequest(instance_id="t-proc", label="go", payload=struct({"k": "v"})),
        timeout=T,
    )
    assert [
        (f.machine, f.label, f.namespace, list(f.sources), list(f.targets)) for f in response.fired
    ] == [("linear", "go", "linear", ["linear.a"], ["linear.b"])]
    assert response.instance.revision == 4
    assert response.work_item_id
    events = await history(stub, "t-proc")
    transitioned = events[3]
    assert transitioned.kind == instance_pb2.EVENT_KIND_TRANSITIONED
    assert plain(transitioned.item)["work_item_id"] == response.work_item_id
    final = await settled(stub, "t-proc")
    assert plain(final.state)["b"]["runs"] == [{"k": "v"}]


async def test_transition_settled_answers_once_targets_ran(stub):
    await start(stub, "linear", "t-set")
    response = await stub.Transition(
        pb.TransitionRequest(instance_id="t-set", label="go", wait=WAIT_SETTLED), timeout=T
    )
    assert response.instance.pending_work_count == 0
    assert list(response.instance.active_states) == ["linear", "linear.b"]
    assert response.instance.revision == 5
    assert len(response.fired) == 1


async def test_transition_enqueued_answers_before_processing(stub):
    await start(stub, "linear", "t-enq")
    response = await stub.Transition(
        pb.TransitionRequest(instance_id="t-enq", label="go", wait=WAIT_ENQUEUED), timeout=T
    )
    assert not response.fired
    assert response.work_item_id
    final = await settled(stub, "t-enq")
    assert list(final.active_states) == ["linear", "linear.b"]
    items = [plain(e.item).get("work_item_id") for e in await history(stub, "t-enq")]
    assert response.work_item_id in items


async def test_transition_enqueued_that_cannot_fire_is_recorded_as_rejected(stub):
    await start(stub, "linear", "t-rej")
    response = await stub.Transition(
        pb.TransitionRequest(instance_id="t-rej", label="nope", wait=WAIT_ENQUEUED), timeout=T
    )
    await settled(stub, "t-rej")
    events = await history(stub, "t-rej")
    rejected = [e for e in events if e.kind == instance_pb2.EVENT_KIND_REJECTED]
    assert len(rejected) == 1
    assert plain(rejected[0].item)["work_item_id"] == response.work_item_id
    rejection = rejected[0].rejection
    assert rejection.reason == error_reason_pb2.ERROR_REASON_TRANSITION_NOT_ALLOWED
    assert rejection.metadata["label"] == "nope"


async def test_transition_not_allowed_lists_the_active_states(stub, fails):
    await start(stub, "linear", "t-no")
    error = await fails(stub.Transition(pb.TransitionRequest(instance_id="t-no", label="back")))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert error.metadata == {
        "instanceId": "t-no",
        "label": "back",
        "namespace": "linear",
        "activeStates": "linear,linear.a",
    }


async def test_transition_in_a_namespace_that_declares_nothing_is_not_allowed(stub, fails):
    await start(stub, "linear", "t-ns")
    error = await fails(
        stub.Transition(pb.TransitionRequest(instance_id="t-ns", label="go", namespace="other"))
    )
    assert error.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert error.metadata["namespace"] == "other"


async def test_transition_unknown_instance_is_not_found(stub, fails):
    error = await fails(
        stub.Transition(pb.TransitionRequest(instance_id="ghost", label="go"), timeout=T)
    )
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_INSTANCE_NOT_FOUND"
    assert error.metadata == {"instanceId": "ghost"}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"label": "go"}, "instance_id"), ({"instance_id": "t-req"}, "label")],
)
async def test_transition_required_fields(stub, fails, request_fields, field):
    error = await fails(stub.Transition(pb.TransitionRequest(**request_fields), timeout=T))
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.fields == (field,)


async def test_transition_expected_revision_mismatch_is_aborted(stub, fails):
    instance = await start(stub, "linear", "t-rev")
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(
                instance_id="t-rev", label="go", expected_revision=instance.revision - 1
            ),
            timeout=T,
        )
    )
    assert error.code is grpc.StatusCode.ABORTED
    assert error.reason == "ERROR_REASON_REVISION_CONFLICT"
    assert error.metadata["instanceId"] == "t-rev"
    assert error.metadata["expectedRevision"] == str(instance.revision - 1)
    assert int(error.metadata["currentRevision"]) >= instance.revision
    after = await settled(stub, "t-rev")
    assert list(after.active_states) == ["linear", "linear.a"]  # nothing fired


async def test_transition_expected_revision_match_fires(stub):
    instance = await start(stub, "linear", "t-rev-ok")
    response = await stub.Transition(
        pb.TransitionRequest(instance_id="t-rev-ok", label="go", expected_revision=3), timeout=T
    )
    assert instance.revision == 3
    assert len(response.fired) == 1


async def test_transition_negative_expected_revision_is_invalid(stub, fails):
    await start(stub, "linear", "t-rev-neg")
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(instance_id="t-rev-neg", label="go", expected_revision=-1),
            timeout=T,
        )
    )
    assert error.code is INVALID
    assert error.fields == ("expected_revision",)


async def test_transition_same_request_id_and_body_has_one_effect(stub):
    await start(stub, "self_loop", "t-idem")
    request = pb.TransitionRequest(
        instance_id="t-idem", label="again", payload=struct({"x": 1}), request_id="req-again"
    )
    first = await stub.Transition(request, timeout=T)
    second = await stub.Transition(request, timeout=T)
    assert second.work_item_id == first.work_item_id
    assert [f.label for f in second.fired] == ["again"]
    await settled(stub, "t-idem")
    events = await history(stub, "t-idem")
    ours = [e for e in events if e.request_id == "req-again"]
    assert len(ours) == 1
    assert ours[0].kind == instance_pb2.EVENT_KIND_TRANSITIONED
    loop_runs = plain((await settled(stub, "t-idem")).state)["loop"]["runs"]
    assert loop_runs == [{}, {"x": 1}]  # the loop re-ran once


async def test_transition_concurrent_duplicates_have_one_effect(stub):
    await start(stub, "self_loop", "t-idem-c")
    request = pb.TransitionRequest(instance_id="t-idem-c", label="again", request_id="req-c")
    answers = await asyncio.gather(*(stub.Transition(request, timeout=T) for _ in range(5)))
    assert len({a.work_item_id for a in answers}) == 1
    await settled(stub, "t-idem-c")
    assert [e.request_id for e in await history(stub, "t-idem-c")].count("req-c") == 1


async def test_transition_request_id_reused_with_another_body(stub, fails):
    await start(stub, "self_loop", "t-reuse")
    await stub.Transition(
        pb.TransitionRequest(instance_id="t-reuse", label="again", request_id="req-r"),
        timeout=T,
    )
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(
                instance_id="t-reuse",
                label="again",
                payload=struct({"other": True}),
                request_id="req-r",
            ),
            timeout=T,
        )
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_REQUEST_ID_REUSED"
    assert error.metadata == {"requestId": "req-r"}
    assert [e.request_id for e in await history(stub, "t-reuse")].count("req-r") == 1


async def test_transition_repeat_of_a_rejected_request_gets_the_same_error(stub, fails):
    await start(stub, "linear", "t-rej-rep")
    request = pb.TransitionRequest(instance_id="t-rej-rep", label="nope", request_id="req-n")
    first = await fails(stub.Transition(request, timeout=T))
    again = await fails(stub.Transition(request, timeout=T))
    assert first.reason == again.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert again.metadata == first.metadata
    rejected = [
        e for e in await history(stub, "t-rej-rep") if e.kind == instance_pb2.EVENT_KIND_REJECTED
    ]
    assert len(rejected) == 1


async def test_transition_with_params_spawns_lanes(stub):
    await start(stub, "hub_lanes", "t-lanes")
    response = await stub.Transition(
        pb.TransitionRequest(
            instance_id="t-lanes",
            label="spawn_{k}",
            params=[struct({"k": "x"}), struct({"k": 2})],
            wait=WAIT_SETTLED,
        ),
        timeout=T,
    )
    active = set(response.instance.active_states)
    assert {"hub_lanes.first_x", "hub_lanes.first_2", "hub_lanes.hub"} <= active


async def test_transition_missing_param(stub, fails):
    await start(stub, "hub_lanes", "t-miss")
    error = await fails(
        stub.Transition(pb.TransitionRequest(instance_id="t-miss", label="spawn_{k}"), timeout=T)
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_MISSING_PARAM"
    assert error.metadata["param"] == "k"
    assert error.metadata["template"] == "spawn_{k}"
    assert error.fields == (error.metadata["field"],)


async def test_transition_invalid_param_value_is_invalid_field(stub, fails):
    await start(stub, "hub_lanes", "t-badparam")
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(
                instance_id="t-badparam", label="spawn_{k}", params=[struct({"k": "no spaces"})]
            ),
            timeout=T,
        )
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.fields[0].startswith("params[0]")


# --- UpdateState -----------------------------------------------------------------------


async def test_update_state_sets_dotted_keys_in_order(stub):
    await start(stub, "linear", "u-1")
    response = await stub.UpdateState(
        pb.UpdateStateRequest(
            instance_id="u-1",
            updates={"order": value({"total": 1, "items": []}), "order.total": value(12.5)},
        ),
        timeout=T,
    )
    state = plain(response.instance.state)
    assert state["order"] == {"total": 12.5, "items": []}
    assert response.instance.revision == 4
    events = await history(stub, "u-1")
    assert events[-1].kind == instance_pb2.EVENT_KIND_STATE_UPDATED
    assert plain(events[-1].item)["work_item_id"] == response.work_item_id != ""


async def test_update_state_of_a_child_node(stub):
    await start(stub, "linear", "u-2")
    response = await stub.UpdateState(
        pb.UpdateStateRequest(instance_id="u-2", fqn="linear.a", updates={"note": value("hi")}),
        timeout=T,
    )
    assert plain(response.instance.state)["a"]["note"] == "hi"


async def test_update_state_unknown_node_is_not_found(stub, fails):
    await start(stub, "linear", "u-3")
    error = await fails(
        stub.UpdateState(
            pb.UpdateStateRequest(instance_id="u-3", fqn="linear.zz", updates={"k": value(1)}),
            timeout=T,
        )
    )
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_NODE_NOT_FOUND"
    assert error.metadata == {"instanceId": "u-3", "fqn": "linear.zz"}


async def test_update_state_through_a_missing_key(stub, fails):
    await start(stub, "linear", "u-4")
    error = await fails(
        stub.UpdateState(
            pb.UpdateStateRequest(instance_id="u-4", updates={"missing.x": value(1)}), timeout=T
        )
    )
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "ERROR_REASON_STATE_KEY_NOT_FOUND"
    assert error.metadata == {"instanceId": "u-4", "fqn": "linear", "key": "missing.x"}


@pytest.mark.parametrize("key", ["_status", "a", "", "x..y"])
async def test_update_state_refuses_reserved_child_and_malformed_keys(stub, fails, key):
    await start(stub, "linear", "u-5")
    error = await fails(
        stub.UpdateState(pb.UpdateStateRequest(instance_id="u-5", updates={key: value(1)}))
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.fields
    assert error.fields[0].startswith("updates")
    state = plain((await settled(stub, "u-5")).state)
    assert state["a"]["_status"] == "active"


async def test_update_state_requires_updates_and_instance(stub, fails):
    error = await fails(stub.UpdateState(pb.UpdateStateRequest(instance_id="x"), timeout=T))
    assert (error.code, error.fields) == (INVALID, ("updates",))
    error = await fails(stub.UpdateState(pb.UpdateStateRequest(updates={"k": value(1)})))
    assert (error.code, error.fields) == (INVALID, ("instance_id",))
    error = await fails(
        stub.UpdateState(pb.UpdateStateRequest(instance_id="ghost", updates={"k": value(1)}))
    )
    assert error.reason == "ERROR_REASON_INSTANCE_NOT_FOUND"


async def test_update_state_expected_revision_mismatch(stub, fails):
    await start(stub, "linear", "u-6")
    error = await fails(
        stub.UpdateState(
            pb.UpdateStateRequest(instance_id="u-6", updates={"k": value(1)}, expected_revision=2)
        )
    )
    assert error.code is grpc.StatusCode.ABORTED
    assert error.reason == "ERROR_REASON_REVISION_CONFLICT"
    assert error.metadata["expectedRevision"] == "2"
    assert error.metadata["currentRevision"] == "3"


async def test_update_state_same_request_id_has_one_effect(stub):
    await start(stub, "linear", "u-7")
    request = pb.UpdateStateRequest(instance_id="u-7", updates={"k": value(1)}, request_id="u")
    first = await stub.UpdateState(request, timeout=T)
    second = await stub.UpdateState(request, timeout=T)
    assert second.instance.revision == first.instance.revision == 4
    assert [e.request_id for e in await history(stub, "u-7")].count("u") == 1


# --- AtomicAppend ----------------------------------------------------------------------


async def test_atomic_append_returns_the_whole_list(stub):
    await start(stub, "lists", "ap-1")
    first = await stub.AtomicAppend(
        pb.AtomicAppendRequest(instance_id="ap-1", key="items", value=value({"n": 1})), timeout=T
    )
    second = await stub.AtomicAppend(
        pb.AtomicAppendRequest(instance_id="ap-1", key="items", value=value("two")), timeout=T
    )
    assert plain(first.values) == [{"n": 1}]
    assert plain(second.values) == [{"n": 1}, "two"]
    assert (first.length, second.length) == (1, 2)
    assert second.revision == first.revision + 1
    nested_append = await stub.AtomicAppend(
        pb.AtomicAppendRequest(instance_id="ap-1", fqn="lists", key="nested.inner", value=value(3))
    )
    assert plain(nested_append.values) == [3]
    events = await history(stub, "ap-1")
    assert [e.kind for e in events[-3:]] == [instance_pb2.EVENT_KIND_APPENDED] * 3
    got = await stub.GetInstance(pb.GetInstanceRequest(instance_id="ap-1"), timeout=T)
    assert plain(got.instance.state)["items"] == [{"n": 1}, "two"]


@pytest.mark.parametrize(("fqn", "key"), [("", "items"), ("lists", "nested.inner")])
async def test_atomic_append_basic_view_answers_the_length_without_the_values(stub, fqn, key):
    instance_id = f"ap-basic-{len(fqn)}"
    await start(stub, "lists", instance_id)
    full = await stub.AtomicAppend(
        pb.AtomicAppendRequest(
            instance_id=instance_id, fqn=fqn, key=key, value=value("a"), view=pb.APPEND_VIEW_FULL
        ),
        timeout=T,
    )
    basic = [
        await stub.AtomicAppend(
            pb.AtomicAppendRequest(
                instance_id=instance_id,
                fqn=fqn,
                key=key,
                value=value(n),
                view=pb.APPEND_VIEW_BASIC,
            ),
            timeout=T,
        )
        for n in range(3)
    ]
    assert (plain(full.values), full.length) == (["a"], 1)
    assert [(b.HasField("values"), b.length) for b in basic] == [
        (False, 2),
        (False, 3),
        (False, 4),
    ]
    assert [b.revision for b in basic] == [full.revision + 1, full.revision + 2, full.revision + 3]
    got = await stub.GetInstance(pb.GetInstanceRequest(instance_id=instance_id), timeout=T)
    state = plain(got.instance.state)
    assert (state["items"] if not fqn else state["nested"]["inner"]) == ["a", 0, 1, 2]


async def test_atomic_append_basic_view_replays_and_is_part_of_the_request_id_body(stub, fails):
    await start(stub, "lists", "ap-5")
    request = pb.AtomicAppendRequest(
        instance_id="ap-5",
        key="items",
        value=value("once"),
        request_id="ap-basic-req",
        view=pb.APPEND_VIEW_BASIC,
    )
    first = await stub.AtomicAppend(request, timeout=T)
    again = await stub.AtomicAppend(request, timeout=T)
    assert (again.length, again.revision) == (first.length, first.revision) == (1, first.revision)
    assert not again.HasField("values")
    full = pb.AtomicAppendRequest()
    full.CopyFrom(request)
    full.view = pb.APPEND_VIEW_FULL
    error = await fails(stub.AtomicAppend(full, timeout=T))
    assert error.reason == "ERROR_REASON_REQUEST_ID_REUSED"


async def test_atomic_appends_in_parallel_are_never_lost(stub):
    await start(stub, "lists", "ap-par")
    await asyncio.gather(
        *(
            stub.AtomicAppend(
                pb.AtomicAppendRequest(instance_id="ap-par", key="items", value=value(n)),
                timeout=T,
            )
            for n in range(20)
        )
    )
    got = await stub.GetInstance(pb.GetInstanceRequest(instance_id="ap-par"), timeout=T)
    assert sorted(plain(got.instance.state)["items"]) == list(range(20))


@pytest.mark.parametrize(
    ("key", "reason", "actual_type"),
    [
        ("missing", "ERROR_REASON_STATE_KEY_NOT_FOUND", None),
        ("items.deeper", "ERROR_REASON_STATE_KEY_NOT_FOUND", None),
        ("scalar", "ERROR_REASON_STATE_KEY_NOT_LIST", "number"),
        ("nested", "ERROR_REASON_STATE_KEY_NOT_LIST", "object"),
    ],
)
async def test_atomic_append_to_a_missing_key_or_not_a_list(stub, fails, key, reason, actual_type):
    await start(stub, "lists", "ap-2")
    error = await fails(
        stub.AtomicAppend(pb.AtomicAppendRequest(instance_id="ap-2", key=key, value=value(1)))
    )
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == reason
    expected = {"instanceId": "ap-2", "fqn": "lists", "key": key}
    if actual_type:
        expected["actualType"] = actual_type
    assert error.metadata == expected


async def test_atomic_append_required_fields_and_unknowns(stub, fails):
    await start(stub, "lists", "ap-3")
    error = await fails(stub.AtomicAppend(pb.AtomicAppendRequest(instance_id="ap-3", key="items")))
    assert (error.code, error.fields) == (INVALID, ("value",))
    error = await fails(
        stub.AtomicAppend(pb.AtomicAppendRequest(instance_id="ap-3", value=value(1)))
    )
    assert (error.code, error.fields) == (INVALID, ("key",))
    error = await fails(
        stub.AtomicAppend(pb.AtomicAppendRequest(instance_id="gh", key="items", value=value(1)))
    )
    assert error.reason == "ERROR_REASON_INSTANCE_NOT_FOUND"
    error = await fails(
        stub.AtomicAppend(
            pb.AtomicAppendRequest(instance_id="ap-3", fqn="lists.x", key="items", value=value(1))
        )
    )
    assert error.reason == "ERROR_REASON_NODE_NOT_FOUND"


async def test_atomic_append_same_request_id_appends_once(stub, fails):
    await start(stub, "lists", "ap-4")
    request = pb.AtomicAppendRequest(
        instance_id="ap-4", key="items", value=value("once"), request_id="ap-req"
    )
    first = await stub.AtomicAppend(request, timeout=T)
    again = await stub.AtomicAppend(request, timeout=T)
    assert plain(again.values) == plain(first.values) == ["once"]
    assert again.revision == first.revision
    other = pb.AtomicAppendRequest(
        instance_id="ap-4", key="items", value=value("twice"), request_id="ap-req"
    )
    error = await fails(stub.AtomicAppend(other, timeout=T))
    assert error.reason == "ERROR_REASON_REQUEST_ID_REUSED"


# --- GetInstance -----------------------------------------------------------------------


async def test_get_instance_views(stub):
    await start(stub, "fragile", "g-1")  # its step failed: it has errors
    full = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="g-1"), timeout=T)).instance
    assert full.HasField("state")
    assert len(full.errors) == 1
    explicit = await stub.GetInstance(
        pb.GetInstanceRequest(instance_id="g-1", view=instance_pb2.INSTANCE_VIEW_FULL), timeout=T
    )
    assert explicit.instance == full
    basic = await stub.GetInstance(
        pb.GetInstanceRequest(instance_id="g-1", view=instance_pb2.INSTANCE_VIEW_BASIC), timeout=T
    )
    assert not basic.instance.HasField("state")
    assert not basic.instance.errors
    assert basic.instance.id == "g-1"
    assert basic.instance.revision == full.revision
    assert basic.instance.status == full.status == instance_pb2.INSTANCE_STATUS_FAILED
    assert list(basic.instance.active_states) == list(full.active_states)


async def test_get_instance_errors(stub, fails):
    error = await fails(stub.GetInstance(pb.GetInstanceRequest(instance_id="nope"), timeout=T))
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_INSTANCE_NOT_FOUND"
    error = await fails(stub.GetInstance(pb.GetInstanceRequest(), timeout=T))
    assert (error.code, error.fields) == (INVALID, ("instance_id",))


# --- ListInstances ---------------------------------------------------------------------


async def test_list_instances_filters_and_pages_newest_first(stub):
    linear = [f"li-{n}" for n in range(5)]
    for instance_id in linear:
        await start(stub, "linear", instance_id, wait=WAIT_PROCESSED)
    await start(stub, "lists", "li-lists")
    await start(stub, "fragile", "li-fragile")

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListInstances(
            pb.ListInstancesRequest(machine="linear", page_size=2, page_token=token), timeout=T
        )
        pages += 1
        assert len(page.instances) <= 2
        assert all(i.machine == "linear" for i in page.instances)
        assert all(not i.HasField("state") for i in page.instances)  # BASIC by default
        seen += [i.id for i in page.instances]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(linear))  # newest first, each once

    everything = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert {i.id for i in everything.instances} == {*linear, "li-lists", "li-fragile"}
    assert not everything.next_page_token

    failed = await stub.ListInstances(
        pb.ListInstancesRequest(status=instance_pb2.INSTANCE_STATUS_FAILED), timeout=T
    )
    assert [i.id for i in failed.instances] == ["li-fragile"]

    full = await stub.ListInstances(
        pb.ListInstancesRequest(machine="lists", view=instance_pb2.INSTANCE_VIEW_FULL), timeout=T
    )
    assert [i.id for i in full.instances] == ["li-lists"]
    assert plain(full.instances[0].state)["items"] == []


async def test_list_instances_invalid_requests(stub, fails):
    for _ in range(3):
        await start(stub, "linear", wait=WAIT_PROCESSED)
    first = await stub.ListInstances(
        pb.ListInstancesRequest(machine="linear", page_size=1), timeout=T
    )
    assert first.next_page_token
    for request, field in [
        (pb.ListInstancesRequest(page_token="not a token!"), "page_token"),
        (pb.ListInstancesRequest(page_token="e30="), "page_token"),  # "{}" without fields
        (pb.ListInstancesRequest(page_token=first.next_page_token), "page_token"),  # filters
        (pb.ListInstancesRequest(page_size=-1), "page_size"),
        (pb.ListInstancesRequest(page_size=1001), "page_size"),
        (pb.ListInstancesRequest(status=99), "status"),
    ]:
        error = await fails(stub.ListInstances(request, timeout=T))
        assert error.code is INVALID, request
        assert error.reason == "ERROR_REASON_INVALID_FIELD"
        assert error.fields == (field,)


# --- GetHistory ------------------------------------------------------------------------


async def test_get_history_pages_in_revision_order_and_rebuilds_the_state(stub):
    await start(stub, "self_loop", "h-1")
    for n in range(3):
        await stub.Transition(
            pb.TransitionRequest(
                instance_id="h-1", label="again", payload=struct({"n": n}), wait=WAIT_SETTLED
            ),
            timeout=T,
        )
    current = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="h-1"))).instance
    assert current.revision == 9  # 3 + 3 * (transition + execute)

    events: list[instance_pb2.Event] = []
    token = ""
    while True:
        page = await stub.GetHistory(
            pb.GetHistoryRequest(instance_id="h-1", page_size=2, page_token=token), timeout=T
        )
        assert (page.oldest_revision, page.current_revision) == (1, 9)
        assert len(page.events) <= 2
        events += page.events
        token = page.next_page_token
        if not token:
            break
    assert [e.revision for e in events] == list(range(1, 10))
    assert events[0].kind == instance_pb2.EVENT_KIND_STARTED
    assert all(e.instance_id == "h-1" for e in events)
    document: Any = {}
    for event in events:
        document = apply_patch(document, plain(event.patch))
    assert document == plain(current.state)

    tail = await stub.GetHistory(pb.GetHistoryRequest(instance_id="h-1", from_revision=8))
    assert [e.revision for e in tail.events] == [8, 9]
    assert not tail.next_page_token


async def test_get_history_token_is_bound_to_its_query(stub, fails):
    await start(stub, "linear", "h-2")
    page = await stub.GetHistory(pb.GetHistoryRequest(instance_id="h-2", page_size=1))
    assert page.next_page_token
    error = await fails(
        stub.GetHistory(
            pb.GetHistoryRequest(
                instance_id="h-2", from_revision=2, page_token=page.next_page_token
            )
        )
    )
    assert (error.code, error.fields) == (INVALID, ("page_token",))
    error = await fails(stub.GetHistory(pb.GetHistoryRequest(instance_id="h-2", page_token="@@")))
    assert (error.code, error.fields) == (INVALID, ("page_token",))


async def test_get_history_errors(stub, fails):
    await start(stub, "linear", "h-3")
    error = await fails(stub.GetHistory(pb.GetHistoryRequest(instance_id="ghost")))
    assert error.reason == "ERROR_REASON_INSTANCE_NOT_FOUND"
    error = await fails(stub.GetHistory(pb.GetHistoryRequest(instance_id="h-3", from_revision=-1)))
    assert (error.code, error.fields) == (INVALID, ("from_revision",))
    error = await fails(stub.GetHistory(pb.GetHistoryRequest(instance_id="h-3", page_size=5000)))
    assert (error.code, error.fields) == (INVALID, ("page_size",))
    error = await fails(stub.GetHistory(pb.GetHistoryRequest()))
    assert (error.code, error.fields) == (INVALID, ("instance_id",))


async def test_get_history_from_beyond_the_current_revision_is_out_of_range(stub, fails):
    await start(stub, "linear", "h-4")
    error = await fails(stub.GetHistory(pb.GetHistoryRequest(instance_id="h-4", from_revision=50)))
    assert error.code is grpc.StatusCode.OUT_OF_RANGE
    assert error.reason == "ERROR_REASON_REVISION_OUT_OF_RANGE"
    assert error.metadata["revision"] == "50"
    assert error.metadata["currentRevision"] == "3"


# --- RetryErrors -----------------------------------------------------------------------


async def test_retry_errors_requeues_a_step_that_exhausted_its_retries(stub):
    failed = await start(stub, "fragile", "r-1")
    assert failed.status == instance_pb2.INSTANCE_STATUS_FAILED
    assert plain(failed.state)["boom"]["_status"] == "error"
    [error] = failed.errors
    assert (error.fqn, error.type, error.retrying) == (
        "fragile.boom",
        "builtins.ValueError",
        False,
    )
    assert error.attempts == 2  # retries = 1
    assert "not fixed yet" in error.message
    kinds = [e.kind for e in await history(stub, "r-1")]
    assert kinds.count(instance_pb2.EVENT_KIND_FAILED) == 1

    await stub.UpdateState(
        pb.UpdateStateRequest(instance_id="r-1", updates={"fixed": value(True)}), timeout=T
    )
    response = await stub.RetryErrors(pb.RetryErrorsRequest(instance_id="r-1"), timeout=T)
    assert list(response.retried_work_item_ids) == [error.work_item_id]
    assert plain(response.instance.state)["boom"]["_status"] in ("queued", "active")

    healed = await settled(stub, "r-1")
    assert healed.status == instance_pb2.INSTANCE_STATUS_WAITING
    assert not healed.errors
    assert plain(healed.state)["boom"] == {"_status": "active", "ran": True}
    events = await history(stub, "r-1")
    retried = [e for e in events if e.kind == instance_pb2.EVENT_KIND_RETRIED]
    assert len(retried) == 1
    assert plain(retried[0].item)["work_item_id"] == error.work_item_id

    nothing = await stub.RetryErrors(pb.RetryErrorsRequest(instance_id="r-1"), timeout=T)
    assert not nothing.retried_work_item_ids


async def test_retry_errors_only_the_named_items(stub):
    failed = await start(stub, "fragile", "r-2")
    response = await stub.RetryErrors(
        pb.RetryErrorsRequest(instance_id="r-2", work_item_ids=["not-an-item"]), timeout=T
    )
    assert not response.retried_work_item_ids
    still = await settled(stub, "r-2")
    assert [e.work_item_id for e in still.errors] == [failed.errors[0].work_item_id]


async def test_retry_errors_errors(stub, fails):
    error = await fails(stub.RetryErrors(pb.RetryErrorsRequest(instance_id="ghost"), timeout=T))
    assert (error.code, error.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ERROR_REASON_INSTANCE_NOT_FOUND",
    )
    error = await fails(stub.RetryErrors(pb.RetryErrorsRequest(), timeout=T))
    assert (error.code, error.fields) == (INVALID, ("instance_id",))


# --- ListMachines, DescribeMachine -----------------------------------------------------


async def test_list_machines_by_name_with_pages(stub, api, fails):
    expected = sorted(m.name for m in api.runtime.registry)
    assert {"gated", "fragile", "lists", "linear", "shop", "hub_lanes"} <= set(expected)
    whole = await stub.ListMachines(pb.ListMachinesRequest(), timeout=T)
    assert [m.name for m in whole.machines] == expected
    assert not whole.next_page_token
    assert all(not m.HasField("root") for m in whole.machines)
    assert all(m.kind == machine_pb2.MACHINE_KIND_LTM for m in whole.machines)
    descriptions = {m.name: m.description for m in whole.machines}
    assert descriptions["gated"] == "`idle --block--> slow`; `slow` blocks until the gate opens."
    assert descriptions["lists"] == "A single state holding lists to append to."

    names, token = [], ""
    while True:
        page = await stub.ListMachines(
            pb.ListMachinesRequest(page_size=4, page_token=token), timeout=T
        )
        names += [m.name for m in page.machines]
        token = page.next_page_token
        if not token:
            break
    assert names == expected

    error = await fails(stub.ListMachines(pb.ListMachinesRequest(page_token="garbage")))
    assert (error.code, error.reason, error.fields) == (
        INVALID,
        "ERROR_REASON_INVALID_FIELD",
        ("page_token",),
    )
    error = await fails(stub.ListMachines(pb.ListMachinesRequest(page_size=-5)))
    assert (error.code, error.fields) == (INVALID, ("page_size",))


async def test_describe_machine_shows_a_nested_structure(stub):
    response = await stub.DescribeMachine(pb.DescribeMachineRequest(machine="shop"), timeout=T)
    machine = response.machine
    assert machine.name == "shop"
    assert machine.kind == machine_pb2.MACHINE_KIND_LTM
    assert machine.description.startswith("Section 8's example")
    root = machine.root
    assert (root.name, root.fqn, root.kind) == ("shop", "shop", machine_pb2.NODE_KIND_MACHINE)
    assert list(root.init) == ["browse"]
    children = {c.name: c for c in root.children}
    assert set(children) == {"browse", "payment", "shipped"}
    assert children["browse"].kind == machine_pb2.NODE_KIND_STATE
    payment = children["payment"]
    assert (payment.fqn, payment.kind) == ("shop.payment", machine_pb2.NODE_KIND_MACHINE)
    assert list(payment.init) == ["charge"]
    assert [c.fqn for c in payment.children] == ["shop.payment.charge", "shop.payment.receipt"]
    assert [
        (t.label, list(t.sources), list(t.targets), t.namespace, t.custom_namespace)
        for t in payment.transitions
    ] == [("ok", ["charge"], ["receipt"], "shop.payment", False)]
    assert [
        (t.label, list(t.sources), list(t.targets), t.namespace) for t in root.transitions
    ] == [
        ("checkout", ["browse"], ["payment"], "shop"),
        ("paid", ["payment"], ["shipped"], "shop"),
    ]


async def test_describe_machine_params_joins_and_custom_namespaces(stub):
    lanes = (await stub.DescribeMachine(pb.DescribeMachineRequest(machine="hub_join_all"))).machine
    work = next(c for c in lanes.root.children if c.name == "work_{k}")
    assert list(work.params) == ["k"]
    assert work.fqn == "hub_join_all.work_{k}"
    done = next(t for t in lanes.root.transitions if t.label == "done_{k}")
    assert done.join == machine_pb2.JOIN_MODE_ALL
    assert list(done.params) == ["k"]
    spawn = next(t for t in lanes.root.transitions if t.label == "spawn_{k}")
    assert spawn.join == machine_pb2.JOIN_MODE_ANY

    channels = (await stub.DescribeMachine(pb.DescribeMachineRequest(machine="channels"))).machine
    start_t = next(t for t in channels.root.transitions if t.label == "start")
    assert (start_t.namespace, start_t.custom_namespace) == ("global", True)
    local = next(t for t in channels.root.transitions if t.label == "local")
    assert (local.namespace, local.custom_namespace) == ("channels", False)


async def test_describe_machine_errors(stub, fails):
    error = await fails(stub.DescribeMachine(pb.DescribeMachineRequest(machine="nope")))
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_MACHINE_NOT_FOUND"
    assert error.metadata == {"machine": "nope"}
    error = await fails(stub.DescribeMachine(pb.DescribeMachineRequest()))
    assert (error.code, error.fields) == (INVALID, ("machine",))


# --- deadlines -------------------------------------------------------------------------


async def test_deadline_while_waiting_for_settled_reports_the_accepted_work(stub, gate, fails):
    await start(stub, "gated", "d-1")
    request = pb.TransitionRequest(
        instance_id="d-1", label="block", wait=WAIT_SETTLED, request_id="req-block"
    )
    error = await fails(stub.Transition(request, timeout=0.5))
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason == "ERROR_REASON_DEADLINE_EXCEEDED"
    assert error.metadata["accepted"] == "true"
    assert error.metadata["instanceId"] == "d-1"
    work_item_id = error.metadata["workItemId"]
    assert work_item_id

    # The same request again (the step still blocks): answered at once, nothing enqueued.
    again = await stub.Transition(request, timeout=T)
    assert again.work_item_id == work_item_id
    gate.set()
    final = await settled(stub, "d-1")
    assert list(final.active_states) == ["gated", "gated.slow"]
    events = await history(stub, "d-1")
    ours = [e for e in events if e.request_id == "req-block"]
    assert len(ours) == 1
    assert plain(ours[0].item)["work_item_id"] == work_item_id
    transitioned = [e for e in events if e.kind == instance_pb2.EVENT_KIND_TRANSITIONED]
    assert len(transitioned) == 1


async def test_deadline_of_a_processed_wait_behind_a_blocked_step(stub, gate, fails):
    await start(stub, "gated", "d-2")
    # Processed: the step queued `slow`, so the update queues behind it. (Only enqueued,
    # the update could be queued before the step ran, and then go before `slow`.)
    await stub.Transition(
        pb.TransitionRequest(instance_id="d-2", label="block", wait=WAIT_PROCESSED), timeout=T
    )
    error = await fails(
        stub.UpdateState(
            pb.UpdateStateRequest(instance_id="d-2", updates={"k": value(1)}), timeout=0.4
        )
    )
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.metadata["accepted"] == "true"
    gate.set()
    final = await settled(stub, "d-2")
    assert plain(final.state)["k"] == 1  # accepted: it was still processed


# --- limits ----------------------------------------------------------------------------


async def test_payload_deeper_than_max_json_depth(stub, fails):
    await start(stub, "linear", "lim-1")
    for call, field in [
        (stub.Start(pb.StartRequest(machine="linear", payload=struct(nested(9)))), "payload"),
        (
            stub.Transition(
                pb.TransitionRequest(instance_id="lim-1", label="go", payload=struct(nested(9)))
            ),
            "payload",
        ),
        (
            stub.UpdateState(
                pb.UpdateStateRequest(instance_id="lim-1", updates={"k": value(nested(8))})
            ),
            "updates",
        ),
        (
            stub.AtomicAppend(
                pb.AtomicAppendRequest(instance_id="lim-1", key="k", value=value(nested(9)))
            ),
            "value",
        ),
    ]:
        error = await fails(call)
        assert error.code is INVALID
        assert error.reason == "ERROR_REASON_LIMIT_EXCEEDED"
        assert error.metadata == {
            "field": field,
            "limit": "max_json_depth",
            "max": "8",
            "actual": "9",
        }
        assert error.fields == (field,)
    ok = await stub.Start(pb.StartRequest(machine="linear", payload=struct(nested(8))))
    assert ok.instance.id  # exactly at the limit is fine
    listed = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert len(listed.instances) == 2


async def test_payload_bigger_than_max_payload_bytes(stub, fails):
    await start(stub, "linear", "lim-2")
    big = {"blob": "x" * 2100}
    error = await fails(stub.Start(pb.StartRequest(machine="linear", payload=struct(big))))
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_LIMIT_EXCEEDED"
    assert error.metadata["field"] == "payload"
    assert error.metadata["limit"] == "max_payload_bytes"
    assert error.metadata["max"] == "2048"
    assert int(error.metadata["actual"]) > 2048
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(
                instance_id="lim-2", label="go", params=[struct({"k": "1"}), struct(big)]
            )
        )
    )
    assert error.reason == "ERROR_REASON_LIMIT_EXCEEDED"
    assert (error.metadata["field"], error.fields) == ("params[1]", ("params[1]",))


async def test_too_many_params(stub, fails):
    await start(stub, "hub_lanes", "lim-3")
    error = await fails(
        stub.Transition(
            pb.TransitionRequest(
                instance_id="lim-3",
                label="spawn_{k}",
                params=[struct({"k": str(n)}) for n in range(4)],
            )
        )
    )
    assert error.code is INVALID
    assert error.reason == "ERROR_REASON_LIMIT_EXCEEDED"
    assert error.metadata == {"field": "params", "limit": "max_params", "max": "3", "actual": "4"}
    assert error.fields == ("params",)


async def test_message_over_max_message_bytes_is_refused_by_grpc(stub):
    huge = struct({"blob": "x" * (70 * 1024)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Start(pb.StartRequest(machine="linear", payload=huge), timeout=T)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await stub.ListInstances(pb.ListInstancesRequest(), timeout=T)
    assert not listed.instances


def _nested_struct_bytes(depth: int) -> bytes:
    """The wire bytes of a Struct nested `depth` objects deep, built by hand: the Python
    protobuf runtime refuses to build a message nested beyond its recursion limit."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(tag: int, payload: bytes) -> bytes:
        return bytes([tag]) + varint(len(payload)) + payload

    message = b""
    for _ in range(depth - 1):
        entry = field(0x0A, b"a") + field(0x12, field(0x2A, message))  # key, Value.struct
        message = field(0x0A, entry)  # Struct.fields
    return message


async def test_raw_nested_struct_encoding_matches_the_depth_helper(api):
    body = pb.StartRequest(machine="linear").SerializeToString()
    body += b"\x12" + bytes([len(_nested_struct_bytes(4))]) + _nested_struct_bytes(4)
    assert plain(pb.StartRequest.FromString(body).payload) == nested(4)


async def test_payload_nested_beyond_the_protobuf_recursion_limit(api, rich):
    inner = _nested_struct_bytes(60)
    body = pb.StartRequest(machine="linear").SerializeToString()
    length = len(inner)
    prefix = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        prefix.append(byte | (0x80 if length else 0))
        if not length:
            break
    body += b"\x12" + bytes(prefix) + inner
    async with grpc.aio.insecure_channel(api.target) as channel:
        call = channel.unary_unary("/flou.v1.FlouService/Start")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(body, timeout=T)
    # protobuf cannot decode it at all, so no field is reachable: the request is invalid.
    assert caught.value.code() is INVALID
    error = rich(caught.value)
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.metadata["field"] == "request"
    assert "max_json_depth" in error.metadata["description"]
