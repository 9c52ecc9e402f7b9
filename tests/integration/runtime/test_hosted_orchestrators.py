"""Orchestrators hosted by the runtime: durable, serialized, all or nothing, on every store."""

from __future__ import annotations

import asyncio

import pytest

from flou_grpc import AsyncRuntime
from flou_grpc.errors import InvalidFieldError, TransitionNotAllowedError, UserCodeFailedError
from flou_grpc.runtime import EventKind, InstanceStatus
from tests.unit.orchestrator.machines import ECommerceOrchestrator, LogisticsOrchestrator, entered

SHOP = "e_commerce_orchestrator"
LOGISTICS = "logistics_orchestrator"


def configuration(state, field):
    return state["orchestrator"]["machines"][field]["configuration"]


async def test_start_builds_every_machine_at_its_initial_state(database_url):
    async with AsyncRuntime(database_url, machines=[ECommerceOrchestrator]) as runtime:
        instance = await runtime.start(SHOP, instance_id="o-1")

    assert instance.revision == 1
    assert instance.status is InstanceStatus.WAITING
    assert configuration(instance.state, "order") == ["pending"]
    assert configuration(instance.state, "payment") == ["unpaid"]
    assert instance.active_states == (
        SHOP,
        f"{SHOP}.order",
        f"{SHOP}.order.pending",
        f"{SHOP}.payment",
        f"{SHOP}.payment.unpaid",
    )


async def test_an_event_runs_the_callbacks_that_drive_the_other_machines(database_url):
    async with AsyncRuntime(database_url, machines=[ECommerceOrchestrator]) as runtime:
        await runtime.start(SHOP, instance_id="o-1")
        result = await runtime.transition("o-1", "process", namespace="order")
        history = await runtime.history("o-1")

    state = result.instance.state
    assert configuration(state, "order") == ["processing"]
    assert configuration(state, "payment") == ["authorized"]  # after_process: orc.payment
    assert [(f["label"], f["namespace"]) for f in result.fired] == [("process", "order")]
    assert result.fired[0]["sources"] == [f"{SHOP}.order.pending"]
    assert result.fired[0]["targets"] == [f"{SHOP}.order.processing"]
    assert [e.kind for e in history] == [EventKind.STARTED, EventKind.TRANSITIONED]
    assert {op["path"] for op in history[-1].patch} == {
        "/orchestrator/machines/order",
        "/orchestrator/machines/payment",
    }


async def test_a_refused_event_names_the_machine_and_changes_nothing(database_url):
    async with AsyncRuntime(database_url, machines=[ECommerceOrchestrator]) as runtime:
        started = await runtime.start(SHOP, instance_id="o-1")
        with pytest.raises(TransitionNotAllowedError) as caught:
            await runtime.transition("o-1", "ship", namespace="order")
        with pytest.raises(InvalidFieldError):
            await runtime.transition("o-1", "process", namespace="nope")
        after = await runtime.get("o-1")

    assert caught.value.metadata["namespace"] == "order"
    assert caught.value.metadata["label"] == "ship"
    assert "pending" in caught.value.metadata["activeStates"]
    assert after.state == started.state


async def test_a_raising_callback_rolls_every_machine_back(database_url):
    async with AsyncRuntime(database_url, machines=[LogisticsOrchestrator]) as runtime:
        await runtime.start(LOGISTICS, instance_id="l-1")
        await runtime.transition("l-1", "add", {"amount": 5}, namespace="billing")
        before = await runtime.get("l-1")
        with pytest.raises(UserCodeFailedError):
            await runtime.transition("l-1", "add", {"amount": -1}, namespace="billing")
        after = await runtime.get("l-1")

    assert after.state == before.state
    assert after.state["orchestrator"]["machines"]["billing"]["model"]["total"] == 5


async def test_instances_survive_a_restart_without_entry_actions_running_again(sqlite_url):
    async with AsyncRuntime(sqlite_url, machines=[LogisticsOrchestrator]) as runtime:
        await runtime.start(LOGISTICS, instance_id="l-1")
        await runtime.transition("l-1", "close", namespace="billing")  # starts the shipment
        await runtime.transition("l-1", "send", namespace="shipment")
    entered.clear()

    async with AsyncRuntime(sqlite_url, machines=[LogisticsOrchestrator]) as reopened:
        shipment = configuration((await reopened.get("l-1")).state, "shipment")
        await reopened.transition("l-1", "check", namespace="shipment")
        checked = configuration((await reopened.get("l-1")).state, "shipment")

    assert set(shipment) == {"shipping", "sent"}
    assert {"checks", "customs", "waiting", "insurance", "pending"} <= set(checked)
    assert "shipping" not in entered  # restored, not entered again
    assert entered["checks"] == 1


async def test_concurrent_events_to_one_instance_are_serialized(database_url):
    async with AsyncRuntime(database_url, machines=[LogisticsOrchestrator]) as runtime:
        await runtime.start(LOGISTICS, instance_id="l-1")
        await asyncio.gather(
            *(
                runtime.transition("l-1", "add", {"amount": 1}, namespace="billing")
                for _ in range(20)
            )
        )
        instance = await runtime.settle("l-1")

    model = instance.state["orchestrator"]["machines"]["billing"]["model"]
    assert model["total"] == 20  # no lost update: one event at a time
    assert len(model["lines"]) == 20
    assert instance.revision == 21


async def test_machines_change_through_events_only(database_url):
    async with AsyncRuntime(database_url, machines=[ECommerceOrchestrator]) as runtime:
        await runtime.start(SHOP, instance_id="o-1")
        with pytest.raises(InvalidFieldError):
            await runtime.update_state("o-1", {"x": 1})
        with pytest.raises(InvalidFieldError):
            await runtime.start(SHOP, {"x": 1}, instance_id="o-2")
        assert (await runtime.history("o-1"))[-1].kind is EventKind.REJECTED
