"""Mermaid: a described machine as a stateDiagram-v2, from a hand-built Machine message."""

from __future__ import annotations

import pytest
from flou_client import Machine, MachineKind, wire
from flou_client.mermaid import to_mermaid
from flou_client_gen.flou.v1 import machine_pb2


def _node(name, fqn, kind=machine_pb2.NODE_KIND_STATE, **fields):
    return machine_pb2.Node(name=name, fqn=fqn, kind=kind, **fields)


def _shop():
    payment = _node(
        "payment",
        "shop.payment",
        machine_pb2.NODE_KIND_MACHINE,
        init=["charge"],
        children=[
            _node("charge", "shop.payment.charge"),
            _node("receipt", "shop.payment.receipt"),
        ],
        transitions=[
            machine_pb2.MachineTransition(
                label="ok", sources=["charge"], targets=["receipt"], namespace="shop.payment"
            )
        ],
    )
    root = _node(
        "shop",
        "shop",
        machine_pb2.NODE_KIND_MACHINE,
        init=["browse"],
        children=[
            _node("browse", "shop.browse"),
            payment,
            _node("worker_{id}", "shop.worker_{id}", params=["id"]),
            _node("worker.id", "shop.worker.id"),  # a name whose id would collide
        ],
        transitions=[
            machine_pb2.MachineTransition(
                label="checkout", sources=["browse"], targets=["payment"], namespace="shop"
            ),
            machine_pb2.MachineTransition(
                label="done_{id}",
                sources=["browse", "payment"],
                targets=["worker_{id}"],
                namespace="global",
                custom_namespace=True,
                join=machine_pb2.JOIN_MODE_ALL,
                params=["id"],
            ),
        ],
    )
    return wire.machine(
        machine_pb2.Machine(
            name="shop", kind=machine_pb2.MACHINE_KIND_LTM, description="A shop.", root=root
        )
    )


def test_nested_machine_as_nested_composite_states():
    text = to_mermaid(_shop())
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    assert text.endswith("\n")
    # Every node declared with its name; composites hold their children.
    assert 'state "shop" as s_shop' in lines
    assert "state s_shop {" in lines
    assert "state s_shop_payment {" in lines
    assert 'state "charge" as s_shop_payment_charge' in lines
    opened = lines.index("state s_shop_payment {")
    closing = lines.index("}", opened)
    assert "s_shop_payment_charge --> s_shop_payment_receipt : ok" in lines[opened:closing]
    # init children, the root included.
    assert "[*] --> s_shop_payment_charge" in lines[opened:closing]
    assert "[*] --> s_shop_browse" in lines
    assert lines[-1] == "[*] --> s_shop"
    # Labelled transitions, one edge per source and target, with namespace and join.
    assert "s_shop_browse --> s_shop_payment : checkout" in lines
    assert "s_shop_browse --> s_shop_worker__id_ : done_{id} [global] (join all)" in lines
    assert "s_shop_payment --> s_shop_worker__id_ : done_{id} [global] (join all)" in lines
    # Braces balance, and two fqns that sanitize alike still get distinct ids.
    assert text.count("{\n") == text.count("}\n") == 2
    assert 'state "worker.id" as s_shop_worker_id' in lines
    assert 'state "worker_{id}" as s_shop_worker__id_' in lines


def test_parallel_regions_and_final_states():
    region = _node(
        "light",
        "o.light",
        machine_pb2.NODE_KIND_MACHINE,
        init=["red"],
        children=[_node("red", "o.light.red"), _node("off", "o.light.off", final=True)],
    )
    other = _node(
        "door",
        "o.door",
        machine_pb2.NODE_KIND_MACHINE,
        init=["shut"],
        children=[_node("shut", "o.door.shut")],
    )
    root = _node(
        "o",
        "o",
        machine_pb2.NODE_KIND_ORCHESTRATOR,
        init=["light", "door"],
        children=[region, other],
    )
    machine = wire.machine(
        machine_pb2.Machine(name="o", kind=machine_pb2.MACHINE_KIND_ORCHESTRATOR, root=root)
    )
    lines = [line.strip() for line in to_mermaid(machine).splitlines()]
    assert "--" in lines  # concurrent regions
    assert lines.index("--") > lines.index("state s_o_light {")
    assert "s_o_light_off --> [*]" in lines
    assert "[*] --> s_o_light" in lines
    assert "[*] --> s_o_door" in lines


def test_a_machine_without_structure_cannot_be_drawn():
    with pytest.raises(ValueError, match="no structure"):
        to_mermaid(Machine(name="m", kind=MachineKind.LTM))
