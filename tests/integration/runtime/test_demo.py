"""The demo machine `examples/orders.py`, driven from outside as the shop's services would.

Every event is sent the way the README fragment tells a client to: its label, the
namespace of the nested machine it is for, and its payload. Between events the tests
settle the instance, as a service that waits for the order to be ready would.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.orders import Order
from flou_grpc import Registry, Runtime
from flou_grpc.engine.registry import roots_of_module
from flou_grpc.errors import TransitionNotAllowedError
from flou_grpc.runtime import Instance

ROOT = Path(__file__).resolve().parents[3]
ITEMS = [{"sku": "mug", "qty": 2}, {"sku": "tea", "qty": 1}]
PLACED = "placed: 2 items, 42.5"

WAITING_FOR_BOTH = (
    "order",
    "order.payment",
    "order.payment.authorize",
    "order.stock",
    "order.stock.reserve",
)
WAITING_FOR_STOCK = ("order", "order.stock", "order.stock.reserve")
WAITING_FOR_PAYMENT = ("order", "order.payment", "order.payment.authorize")


@pytest.fixture(params=["memory", "sqlite"])
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The embedded runtime on memory:// and on a SQLite file (the stores a demo runs on)."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("sqlite_url")
    with Runtime(url, machines=[Order], retry_delay=0.01) as runtime:
        yield runtime


@pytest.fixture
def auth() -> str:
    """An authorization id of this test's own: the simulated gateway times out once per id."""
    return f"auth-{uuid.uuid4().hex[:8]}"


def place(runtime: Runtime) -> Instance:
    instance = runtime.start("order", {"items": ITEMS, "total": 42.5}, instance_id="order-1")
    return runtime.settle(instance.id)


def send(runtime: Runtime, event: str, payload: dict[str, Any] | None = None) -> list[Any]:
    """Sends an event as its service would (the README's namespaces); returns what fired."""
    namespace = {
        "payment_authorized": "order.payment",
        "payment_declined": "order.payment",
        "stock_reserved": "order.stock",
    }.get(event)  # None: the root's name, `order`
    return runtime.transition("order-1", event, payload, namespace=namespace).fired


def rejected(runtime: Runtime) -> list[str]:
    return [e.item["label"] for e in runtime.history("order-1") if e.kind == "rejected"]


def test_a_placed_order_waits_for_payment_and_stock_at_once(runtime: Runtime) -> None:
    order = place(runtime)

    assert order.active_states == WAITING_FOR_BOTH
    assert order.state["items"] == ITEMS
    assert order.state["total"] == 42.5
    assert order.state["payment"]["amount"] == 42.5
    assert order.state["log"] == [PLACED]
    assert order.state["placed"]["_status"] == "completed"


def test_events_reach_the_nested_machines_only_through_their_namespace(
    runtime: Runtime, auth: str
) -> None:
    place(runtime)

    with pytest.raises(TransitionNotAllowedError):  # sent to `order`, not `order.payment`
        runtime.transition("order-1", "payment_authorized", {"authorization": auth})
    with pytest.raises(TransitionNotAllowedError):
        runtime.transition("order-1", "stock_reserved", namespace="order.payment")

    assert runtime.settle("order-1").active_states == WAITING_FOR_BOTH
    assert rejected(runtime) == ["payment_authorized", "stock_reserved"]


@pytest.mark.parametrize("payment_first", [True, False], ids=["payment_first", "stock_first"])
def test_the_order_ships_only_once_paid_and_in_stock(
    runtime: Runtime, auth: str, payment_first: bool
) -> None:
    place(runtime)
    with pytest.raises(TransitionNotAllowedError):
        send(runtime, "shipped")
    captured, reserved = f"payment captured: cap-{auth}", "stock reserved at north"

    if payment_first:
        fired = send(runtime, "payment_authorized", {"authorization": auth})
        assert [(f["sources"], f["targets"]) for f in fired] == [
            (["order.payment.authorize"], ["order.payment.capture"])
        ]
        order = runtime.settle("order-1")
        assert order.active_states == WAITING_FOR_STOCK
        assert order.state["payment"]["capture_id"] == f"cap-{auth}"
        assert order.state["payment"]["_status"] == "completed"
        assert list(order.state["_joins"].values()) == [["paid"]]  # the join waits for stock
    else:
        send(runtime, "stock_reserved", {"warehouse": "north"})
        order = runtime.settle("order-1")
        assert order.active_states == WAITING_FOR_PAYMENT
        assert order.state["stock"]["warehouse"] == "north"
        assert order.state["stock"]["_status"] == "completed"
        assert list(order.state["_joins"].values()) == [["in_stock"]]
    with pytest.raises(TransitionNotAllowedError):  # one branch is not enough
        send(runtime, "shipped")

    if payment_first:
        send(runtime, "stock_reserved", {"warehouse": "north"})
    else:
        send(runtime, "payment_authorized", {"authorization": auth})
    order = runtime.settle("order-1")
    assert order.active_states == ("order", "order.packing")
    assert order.state["_joins"] == {}
    assert order.state["payment"]["authorization"] == auth
    assert order.state["stock"]["warehouse"] == "north"
    branches = [captured, reserved] if payment_first else [reserved, captured]
    assert order.state["log"] == [PLACED, *branches, "ready to ship"]

    fired = send(runtime, "shipped", {"tracking": "1Z999"})
    assert [(f["sources"], f["targets"]) for f in fired] == [
        (["order.packing"], ["order.shipped"])
    ]
    order = runtime.settle("order-1")
    assert order.active_states == ("order", "order.shipped")
    assert order.state["tracking"] == "1Z999"
    with pytest.raises(TransitionNotAllowedError):  # shipped once only
        send(runtime, "shipped")

    send(runtime, "delivered")
    order = runtime.settle("order-1")
    assert order.active_states == ("order", "order.delivered")
    assert order.state["log"] == [
        PLACED,
        *branches,
        "ready to ship",
        "shipped: 1Z999",
        "delivered",
    ]
    assert order.errors == ()
    assert rejected(runtime) == ["shipped", "shipped", "shipped"]  # only the refused ones


def test_both_branches_finishing_together_pack_the_order_once(runtime: Runtime, auth: str) -> None:
    place(runtime)

    send(runtime, "stock_reserved", {"warehouse": "north"})  # no settling in between
    send(runtime, "payment_authorized", {"authorization": auth})
    order = runtime.settle("order-1")

    assert order.active_states == ("order", "order.packing")
    assert order.state["log"].count("ready to ship") == 1
    assert order.state["packing"]["_status"] == "active"


def test_capture_retries_the_gateway_that_timed_out(
    runtime: Runtime, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    place(runtime)

    with caplog.at_level(logging.WARNING, logger="flou_grpc"):
        send(runtime, "payment_authorized", {"authorization": auth})
        order = runtime.settle("order-1")

    failures = [
        r.getMessage() for r in caplog.records if "order.payment.capture" in r.getMessage()
    ]
    assert len(failures) == 1
    assert "(attempt 1 of 6)" in failures[0]  # `retries = 5`: six runs at most
    assert f"gateway timed out capturing {auth}" in failures[0]
    assert order.errors == ()
    assert order.state["log"] == [PLACED, f"payment captured: cap-{auth}"]  # appended once


@pytest.mark.parametrize("reserved_first", [False, True], ids=["stock_waiting", "stock_done"])
def test_a_declined_payment_cancels_the_order_and_its_stock(
    runtime: Runtime, reserved_first: bool
) -> None:
    place(runtime)
    if reserved_first:
        send(runtime, "stock_reserved", {"warehouse": "north"})
        runtime.settle("order-1")

    fired = send(runtime, "payment_declined", {"reason": "insufficient_funds"})
    assert [(f["sources"], f["targets"]) for f in fired] == [
        (["order.payment.authorize"], ["order.payment.declined"])
    ]
    order = runtime.settle("order-1")

    assert order.active_states == ("order", "order.cancelled")
    assert order.state["payment"]["decline_reason"] == "insufficient_funds"
    assert order.state["stock"]["_status"] == "completed"
    assert order.state["stock"]["reserve"]["_status"] == "completed"
    assert order.state["payment"]["capture"]["_status"] == "init"  # never ran
    reserved = ["stock reserved at north"] if reserved_first else []
    assert order.state["log"] == [
        PLACED,
        *reserved,
        "payment declined: insufficient_funds",
        "cancelled",
    ]
    for event, namespace in [
        ("payment_authorized", "order.payment"),
        ("stock_reserved", "order.stock"),
        ("shipped", None),
    ]:
        with pytest.raises(TransitionNotAllowedError):
            runtime.transition("order-1", event, namespace=namespace)


def test_register_module_serves_the_order_machine_only() -> None:
    registry = Registry()

    registered = registry.register_module("examples.orders")

    assert [machine.name for machine in registered] == ["order"]
    assert [machine.name for machine in registry] == ["order"]
    assert roots_of_module("examples.orders") == [Order]
    assert registry.get("order").description == Order.__doc__
    # `make run` serves both demo modules from one registry: their names do not clash.
    assert [m.name for m in registry.register_module("examples.crawl")] == ["crawl"]
    assert [machine.name for machine in registry] == ["crawl", "order"]


def test_orders_example_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "orders.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )

    assert result.stdout == (
        "('order', 'order.packing')\n"
        "waiting ('order', 'order.delivered')\n"
        "cap-auth-1 north\n"
        "placed: 2 items, 42.5\n"
        "payment captured: cap-auth-1\n"
        "stock reserved at north\n"
        "ready to ship\n"
        "shipped: 1Z999\n"
        "delivered\n"
    )
    assert "order.payment.capture failed (attempt 1 of 6)" in result.stderr  # the retry
