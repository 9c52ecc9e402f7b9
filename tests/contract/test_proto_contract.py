"""The contract of protos/flou/v1, checked on the generated modules and on protoc's output."""

from __future__ import annotations

import re

import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from flou_grpc._proto.flou.v1 import (
    error_reason_pb2,
    flou_service_pb2,
    instance_pb2,
    machine_pb2,
)

GENERATED = [error_reason_pb2, flou_service_pb2, instance_pb2, machine_pb2]
SERVICE = flou_service_pb2.DESCRIPTOR.services_by_name["FlouService"]

STRUCT = "google.protobuf.Struct"
VALUE = "google.protobuf.Value"
LIST_VALUE = "google.protobuf.ListValue"
TIMESTAMP = "google.protobuf.Timestamp"

# RPC -> (server streaming, {request field: type}) for the fields the issues fix.
# A type is a scalar type name, a message full name, or "repeated <type>" / "map<k, v>".
EXPECTED_RPCS: dict[str, tuple[bool, dict[str, str]]] = {
    "Start": (
        False,
        {
            "machine": "string",
            "payload": STRUCT,
            "request_id": "string",
            "instance_id": "string",
            "wait": "flou.v1.WaitMode",
        },
    ),
    "Transition": (
        False,
        {
            "instance_id": "string",
            "label": "string",
            "payload": STRUCT,
            "params": f"repeated {STRUCT}",
            "namespace": "string",
            "request_id": "string",
            "expected_revision": "int64",
            "wait": "flou.v1.WaitMode",
        },
    ),
    "UpdateState": (
        False,
        {
            "instance_id": "string",
            "fqn": "string",
            "updates": f"map<string, {VALUE}>",
            "request_id": "string",
            "expected_revision": "int64",
        },
    ),
    "AtomicAppend": (
        False,
        {
            "instance_id": "string",
            "fqn": "string",
            "key": "string",
            "value": VALUE,
            "request_id": "string",
        },
    ),
    "Watch": (True, {"instance_id": "string", "from_revision": "int64"}),
    "WatchInstances": (True, {"machine": "string"}),
    "GetInstance": (False, {"instance_id": "string"}),
    "ListInstances": (
        False,
        {
            "machine": "string",
            "status": "flou.v1.InstanceStatus",
            "page_size": "int32",
            "page_token": "string",
        },
    ),
    "GetHistory": (
        False,
        {"instance_id": "string", "page_size": "int32", "page_token": "string"},
    ),
    "RetryErrors": (False, {"instance_id": "string", "request_id": "string"}),
    "ListMachines": (False, {"page_size": "int32", "page_token": "string"}),
    "DescribeMachine": (False, {"machine": "string"}),
}

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_BOOL: "bool",
}


def _type_of(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return f"map<{_type_of(key)}, {_type_of(value)}>"
    if field.message_type is not None:
        name = field.message_type.full_name
    elif field.enum_type is not None:
        name = field.enum_type.full_name
    else:
        name = _SCALARS[field.type]
    return f"repeated {name}" if field.is_repeated else name


def _all_messages() -> list[Descriptor]:
    found: list[Descriptor] = []

    def walk(message: Descriptor) -> None:
        found.append(message)
        for nested in message.nested_types:
            walk(nested)

    for module in GENERATED:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
    return found


def _all_enums() -> list[EnumDescriptor]:
    enums = [e for m in GENERATED for e in m.DESCRIPTOR.enum_types_by_name.values()]
    enums += [e for message in _all_messages() for e in message.enum_types]
    return enums


def test_service_has_exactly_the_rpcs_of_the_contract():
    assert SERVICE.full_name == "flou.v1.FlouService"
    assert [m.name for m in SERVICE.methods] == list(EXPECTED_RPCS)


@pytest.mark.parametrize("rpc", list(EXPECTED_RPCS))
def test_rpc_request_has_its_fields_and_standard_message_names(rpc: str):
    streaming, fields = EXPECTED_RPCS[rpc]
    method = SERVICE.methods_by_name[rpc]
    assert method.input_type.full_name == f"flou.v1.{rpc}Request"
    assert method.output_type.full_name == f"flou.v1.{rpc}Response"
    assert method.server_streaming is streaming
    assert not method.client_streaming
    actual = {name: _type_of(f) for name, f in method.input_type.fields_by_name.items()}
    assert {name: actual.get(name) for name in fields} == fields


@pytest.mark.parametrize(
    ("rpc", "answer"),
    [
        ("Start", {"instance": "flou.v1.Instance"}),
        (
            "Transition",
            {
                "instance": "flou.v1.Instance",
                "fired": "repeated flou.v1.FiredTransition",
                "work_item_id": "string",
            },
        ),
        ("UpdateState", {"instance": "flou.v1.Instance", "work_item_id": "string"}),
        ("AtomicAppend", {"values": LIST_VALUE, "revision": "int64"}),
        ("GetInstance", {"instance": "flou.v1.Instance"}),
        ("ListInstances", {"instances": "repeated flou.v1.Instance", "next_page_token": "string"}),
        ("GetHistory", {"events": "repeated flou.v1.Event", "next_page_token": "string"}),
        ("ListMachines", {"machines": "repeated flou.v1.Machine", "next_page_token": "string"}),
        ("DescribeMachine", {"machine": "flou.v1.Machine"}),
    ],
)
def test_rpc_response_carries_its_outcome(rpc: str, answer: dict[str, str]):
    output = SERVICE.methods_by_name[rpc].output_type
    actual = {name: _type_of(f) for name, f in output.fields_by_name.items()}
    assert {name: actual.get(name) for name in answer} == answer


def test_watch_stream_sends_snapshot_events_and_heartbeats():
    response = flou_service_pb2.WatchResponse.DESCRIPTOR
    kind = response.oneofs_by_name["kind"]
    assert {f.name: _type_of(f) for f in kind.fields} == {
        "snapshot": "flou.v1.Instance",
        "event": "flou.v1.Event",
        "heartbeat": "flou.v1.Heartbeat",
    }


def test_instance_and_event_carry_what_design_fixes():
    instance = {n: _type_of(f) for n, f in instance_pb2.Instance.DESCRIPTOR.fields_by_name.items()}
    assert (
        instance
        | {
            "id": "string",
            "machine": "string",
            "revision": "int64",
            "status": "flou.v1.InstanceStatus",
            "state": STRUCT,
            "create_time": TIMESTAMP,
            "update_time": TIMESTAMP,
        }
        == instance
    )
    event = {n: _type_of(f) for n, f in instance_pb2.Event.DESCRIPTOR.fields_by_name.items()}
    assert (
        event
        | {
            "instance_id": "string",
            "revision": "int64",
            "kind": "flou.v1.EventKind",
            "item": STRUCT,
            "patch": LIST_VALUE,
        }
        == event
    )


def test_machine_structure_is_recursive_and_describes_transitions():
    node = machine_pb2.Node.DESCRIPTOR
    assert _type_of(node.fields_by_name["children"]) == "repeated flou.v1.Node"
    transition = {
        n: _type_of(f) for n, f in machine_pb2.MachineTransition.DESCRIPTOR.fields_by_name.items()
    }
    assert (
        transition
        | {
            "label": "string",
            "sources": "repeated string",
            "targets": "repeated string",
            "namespace": "string",
            "join": "flou.v1.JoinMode",
            "params": "repeated string",
        }
        == transition
    )


@pytest.mark.parametrize("enum", _all_enums(), ids=lambda e: e.full_name)
def test_enum_starts_at_unspecified_zero_and_prefixes_its_values(enum: EnumDescriptor):
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    assert enum.values[0].number == 0
    assert enum.values[0].name == f"{prefix}UNSPECIFIED"
    assert all(v.name.startswith(prefix) for v in enum.values)


@pytest.mark.parametrize(
    "message",
    [m for m in _all_messages() if m.name.endswith("Request")],
    ids=lambda m: m.name,
)
def test_every_request_field_declares_its_field_behavior(message: Descriptor):
    missing = [
        f.name
        for f in message.fields
        if not f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]
    assert missing == []


def _clear_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def test_generated_modules_match_the_protos(compiled_protos):
    """The committed generated code was produced from the current protos (`make proto`)."""
    for module in GENERATED:
        source = descriptor_pb2.FileDescriptorProto()
        source.CopyFrom(compiled_protos[module.DESCRIPTOR.name])
        source.ClearField("source_code_info")
        _clear_json_names(source.message_type)  # protoc's python plugin leaves them out
        generated = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert generated == source, f"{module.__name__} is stale: run make proto"


def _undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    documented = {
        tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()
    }
    missing: list[str] = []

    def need(path: tuple[int, ...], what: str) -> None:
        if path not in documented:
            missing.append(what)

    def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str) -> None:
        if msg.options.map_entry:
            return
        need(path, name)
        for i, f in enumerate(msg.field):
            need((*path, 2, i), f"{name}.{f.name}")
        for i, o in enumerate(msg.oneof_decl):
            need((*path, 8, i), f"{name}.{o.name}")
        for i, nested in enumerate(msg.nested_type):
            message(nested, (*path, 3, i), f"{name}.{nested.name}")
        for i, e in enumerate(msg.enum_type):
            enum(e, (*path, 4, i), f"{name}.{e.name}")

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str) -> None:
        need(path, name)
        for i, v in enumerate(e.value):
            need((*path, 2, i), f"{name}.{v.name}")

    for i, msg in enumerate(file.message_type):
        message(msg, (4, i), msg.name)
    for i, e in enumerate(file.enum_type):
        enum(e, (5, i), e.name)
    for i, service in enumerate(file.service):
        need((6, i), service.name)
        for j, method in enumerate(service.method):
            need((6, i, 2, j), f"{service.name}.{method.name}")
    return missing


@pytest.mark.parametrize("name", [m.DESCRIPTOR.name for m in GENERATED])
def test_every_element_of_the_contract_is_documented(compiled_protos, name: str):
    assert _undocumented(compiled_protos[name]) == []


def test_documentation_check_finds_an_undocumented_field(compiled_protos):
    file = descriptor_pb2.FileDescriptorProto()
    file.CopyFrom(compiled_protos["flou/v1/instance.proto"])
    for loc in file.source_code_info.location:
        if list(loc.path) == [4, 0, 2, 1]:  # Instance.machine
            loc.leading_comments = ""
    assert _undocumented(file) == ["Instance.machine"]
