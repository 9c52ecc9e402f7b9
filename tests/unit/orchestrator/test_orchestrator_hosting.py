"""Hosting groundwork: snapshot/restore without entry actions, all-or-nothing send, describe."""

import json

import pytest
from statemachine import HistoryState, State, StateMachine

from flou_grpc import Orchestrator
from flou_grpc.errors import (
    InvalidDefinitionError,
    InvalidFieldError,
    TransitionNotAllowedError,
    UserCodeFailedError,
)
from flou_grpc.orchestrator import describe, restore, send, snapshot
from tests.unit.orchestrator.machines import (
    Billing,
    ECommerceOrchestrator,
    Ledger,
    LogisticsOrchestrator,
    OrderStateMachine,
    PaymentStateMachine,
    Shipment,
    entered,
)


@pytest.fixture(autouse=True)
def _clear_entries():
    entered.clear()


def logistics() -> LogisticsOrchestrator:
    return LogisticsOrchestrator(shipment=Shipment(), billing=Billing(model=Ledger()))


def shop() -> ECommerceOrchestrator:
    return ECommerceOrchestrator(order=OrderStateMachine(), payment=PaymentStateMachine())


# --- snapshot / restore ----------------------------------------------------------------


def test_snapshot_is_json_with_each_machine_configuration_and_model():
    orc = logistics()
    send(orc, "billing", "add", amount=5)
    data = snapshot(orc)
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "version": 1,
        "machines": {
            "shipment": {"configuration": ["idle"], "model": None},
            "billing": {"configuration": ["open"], "model": {"total": 5, "lines": ["+5"]}},
        },
    }


def test_compound_state_round_trips_without_entry_actions():
    orc = logistics()
    send(orc, "shipment", "start")
    assert snapshot(orc)["machines"]["shipment"]["configuration"] == ["shipping", "packing"]
    before = dict(entered)
    restored = restore(LogisticsOrchestrator, snapshot(orc))
    assert dict(entered) == before
    assert list(restored.shipment.configuration_values) == ["shipping", "packing"]
    send(restored, "shipment", "send")
    assert restored.shipment.current_state_value == {"shipping", "sent"}
    assert entered["sent"] == 1
    assert entered["shipping"] == 1


def test_parallel_state_round_trips_without_entry_actions_and_keeps_running():
    orc = logistics()
    for event in ("start", "check", "clear"):
        send(orc, "shipment", event)
    data = snapshot(orc)
    assert sorted(data["machines"]["shipment"]["configuration"]) == sorted(
        ["checks", "customs", "cleared", "insurance", "pending"]
    )
    before = dict(entered)
    restored = restore(LogisticsOrchestrator, json.loads(json.dumps(data)))
    assert dict(entered) == before
    assert snapshot(restored) == data
    send(restored, "shipment", "insure")
    assert set(restored.shipment.configuration_values) == {
        "checks",
        "customs",
        "cleared",
        "insurance",
        "insured",
    }
    assert entered["insured"] == 1


def test_restore_rebuilds_custom_models_and_injects_the_new_orchestrator():
    orc = logistics()
    send(orc, "billing", "add", amount=2)
    restored = restore(LogisticsOrchestrator, snapshot(orc))
    assert isinstance(restored.billing.model, Ledger)
    assert restored.billing.model.lines == ["+2"]
    send(restored, "billing", "close")  # before_close starts the shipment through `coordinator`
    assert restored.shipment.current_state_value == {"shipping", "packing"}
    assert orc.shipment.current_state_value == "idle"


def test_restore_of_the_seed_orchestrator_continues_where_it_was():
    orc = shop()
    orc.order.process()
    restored = restore(ECommerceOrchestrator, snapshot(orc))
    assert restored.payment.current_state_value == "authorized"
    restored.payment.capture()
    assert restored.payment.current_state_value == "captured"


def test_restore_keeps_history_values():
    class Player(StateMachine):
        class playing(State.Compound):
            first = State(initial=True)
            second = State()
            h = HistoryState()
            skip = first.to(second)

        paused = State()
        stopped = State(final=True)
        pause = playing.to(paused)
        resume = paused.to(playing.h)
        stop = paused.to(stopped)

    class Orc(Orchestrator):
        player: Player

    orc = Orc(player=Player())
    orc.player.send("skip")
    orc.player.send("pause")
    data = snapshot(orc)
    assert data["machines"]["player"]["history"] == {"h": ["second"]}
    restored = restore(Orc, data)
    restored.player.send("resume")
    assert set(restored.player.configuration_values) == {"playing", "second"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["machines"].pop("billing"), "holds machines"),
        (lambda d: d["machines"]["shipment"].update(configuration=["nowhere"]), "'nowhere'"),
        (lambda d: d["machines"]["shipment"].update(configuration=[]), "no active state"),
        (lambda d: d["machines"]["shipment"].update(configuration="idle"), "not a list"),
    ],
)
def test_restore_rejects_a_snapshot_that_does_not_fit_the_class(mutate, message):
    data = snapshot(logistics())
    mutate(data)
    with pytest.raises(InvalidDefinitionError, match=message):
        restore(LogisticsOrchestrator, data)


def test_snapshot_rejects_model_data_that_is_not_json():
    orc = logistics()
    orc.billing.model.lines = {1, 2}
    with pytest.raises(InvalidDefinitionError, match=r"billing.model.lines: set is not a JSON"):
        snapshot(orc)


# --- send ------------------------------------------------------------------------------


def test_send_runs_callbacks_that_drive_other_machines():
    orc = shop()
    send(orc, "order", "process")
    assert orc.order.current_state_value == "processing"
    assert orc.payment.current_state_value == "authorized"


def test_send_reaches_an_event_named_send():
    orc = logistics()
    send(orc, "shipment", "start")
    send(orc, "shipment", "send")
    assert "sent" in orc.shipment.configuration_values


def test_send_not_allowed_names_machine_event_and_state_and_changes_nothing():
    orc = shop()
    before = snapshot(orc)
    with pytest.raises(TransitionNotAllowedError) as info:
        send(orc, "payment", "capture", instance_id="i-1")
    error = info.value
    assert (error.label, error.namespace, error.active_states) == (
        "capture",
        "payment",
        ("unpaid",),
    )
    assert error.metadata == {
        "instanceId": "i-1",
        "label": "capture",
        "namespace": "payment",
        "activeStates": "unpaid",
    }
    assert isinstance(error.__cause__, PaymentStateMachine.TransitionNotAllowed)
    assert snapshot(orc) == before


def test_send_rolls_back_every_machine_when_a_nested_event_is_not_allowed():
    orc = shop()
    orc.payment.fail()
    before = snapshot(orc)
    with pytest.raises(UserCodeFailedError) as info:
        send(orc, "order", "process")
    assert info.value.fqn == "order"
    assert info.value.error_type == "TransitionNotAllowed"
    # The order had moved to processing before after_process raised: it is back.
    assert snapshot(orc) == before
    assert orc.order.current_state_value == "pending"


def test_send_rolls_back_configurations_and_model_data_when_a_callback_raises():
    orc = logistics()
    send(orc, "billing", "add", amount=4)
    ledger = orc.billing.model
    before = snapshot(orc)
    with pytest.raises(UserCodeFailedError, match="ValueError: negative amount") as info:
        send(orc, "billing", "add", amount=-1)
    assert isinstance(info.value.__cause__, ValueError)
    assert snapshot(orc) == before
    assert orc.billing.model is ledger
    assert ledger.lines == ["+4"]
    send(orc, "billing", "add", amount=1)
    assert ledger.total == 5


def test_send_rolls_back_a_machine_that_reached_a_final_state_before_the_error():
    class Closing(Billing):
        def after_close(self) -> None:
            raise RuntimeError("boom")

    class Orc(LogisticsOrchestrator):
        billing: Closing

    orc = Orc(shipment=Shipment(), billing=Closing(model=Ledger()))
    before = snapshot(orc)
    with pytest.raises(UserCodeFailedError, match="RuntimeError: boom"):
        send(orc, "billing", "close")
    assert snapshot(orc) == before
    assert not orc.billing.is_terminated
    send(orc, "billing", "add", amount=1)  # the rebuilt machine still receives the orchestrator


def test_send_to_an_unknown_machine_or_event_is_an_invalid_field():
    orc = shop()
    with pytest.raises(InvalidFieldError, match="no machine 'shipping'") as info:
        send(orc, "shipping", "process")
    assert info.value.violations[0].field == "namespace"
    with pytest.raises(InvalidFieldError, match=r"'order'.*no event 'capture'") as info:
        send(orc, "order", "capture")
    assert info.value.violations[0].field == "label"


def test_send_passes_keyword_arguments_but_not_the_instance_id():
    orc = logistics()
    send(orc, "billing", "add", amount=3, instance_id="i-2")
    assert orc.billing.model.total == 3


# --- describe ----------------------------------------------------------------------------


def test_describe_lists_states_events_and_transitions_of_each_machine():
    info = describe(LogisticsOrchestrator)
    assert info.name == "LogisticsOrchestrator"
    assert info.orchestrator_name == "coordinator"
    shipment, billing = info.machines
    assert (shipment.field, shipment.machine) == ("shipment", "Shipment")
    assert [(s.id, s.kind, s.initial, s.final) for s in shipment.states] == [
        ("idle", "atomic", True, False),
        ("shipping", "compound", False, False),
        ("checks", "parallel", False, False),
        ("done", "atomic", False, True),
    ]
    checks = shipment.states[2]
    assert [(c.id, c.kind) for c in checks.children] == [
        ("customs", "compound"),
        ("insurance", "compound"),
    ]
    assert [(s.id, s.final) for s in checks.children[0].children] == [
        ("waiting", False),
        ("cleared", True),
    ]
    assert set(shipment.events) == {"start", "send", "check", "clear", "insure", "finish"}
    rows = {(t.source, t.target, t.event) for t in shipment.transitions}
    assert ("idle", "shipping", "start") in rows
    assert ("packing", "sent", "send") in rows
    assert ("waiting", "cleared", "clear") in rows
    assert all(t.event for t in shipment.transitions)  # initial transitions are not listed
    assert [(t.source, t.target, t.event, t.internal) for t in billing.transitions] == [
        ("open", "open", "add", True),
        ("open", "closed", "close", False),
    ]


def test_describe_of_the_seed_orchestrator_has_one_row_per_event_and_source():
    order, payment = describe(ECommerceOrchestrator).machines
    assert {(t.source, t.target) for t in order.transitions if t.event == "cancel"} == {
        ("pending", "cancelled"),
        ("processing", "cancelled"),
    }
    assert [s.id for s in payment.states if s.final] == ["failed", "refunded"]
