"""The seed's API: typed fields, injection into every callback, clear declaration errors."""

import subprocess
import sys
from pathlib import Path

import pytest
from statemachine import State, StateMachine

from flou_grpc import Orchestrator
from flou_grpc.errors import InvalidDefinitionError
from flou_grpc.orchestrator import machine_fields
from tests.unit.orchestrator.machines import (
    ECommerceOrchestrator,
    OrderStateMachine,
    PaymentStateMachine,
)

# --- the seed's README, as written there (python-statemachine 3.x) ---------------------


def test_readme_quick_start_builds_and_exposes_the_machines():
    order_sm = OrderStateMachine()
    payment_sm = PaymentStateMachine()
    orchestrator = ECommerceOrchestrator(order=order_sm, payment=payment_sm)
    assert orchestrator.order is order_sm
    assert orchestrator.payment is payment_sm
    # The seed prints `current_state`: deprecated in 3.x, it still works (and warns).
    with pytest.warns(DeprecationWarning, match="current_state"):
        assert orchestrator.order.current_state.id == "pending"
    assert orchestrator.payment.current_state_value == "unpaid"


def test_readme_after_process_authorizes_the_payment_through_orc():
    orc = ECommerceOrchestrator(order=OrderStateMachine(), payment=PaymentStateMachine())
    orc.order.process()
    assert orc.order.current_state_value == "processing"
    assert orc.payment.current_state_value == "authorized"


def test_readme_after_process_fails_with_python_statemachine_semantics():
    orc = ECommerceOrchestrator(order=OrderStateMachine(), payment=PaymentStateMachine())
    orc.payment.fail()
    with pytest.raises(PaymentStateMachine.TransitionNotAllowed):
        orc.order.process()


class CommunicatingOrder(StateMachine):
    """The README's "State Machine Communication" order, which needs `done` final in 3.x."""

    pending = State(initial=True)
    processing = State()
    done = State(final=True)

    process = pending.to(processing)
    complete = processing.to(done)

    def before_processing(self, orc: "CustomNameOrchestrator") -> None:
        # Named after a state, not an event: python-statemachine never calls it.
        if orc.payment.current_state_value == "authorized":
            orc.payment.capture()

    def on_enter_processing(self, coordinator: "CustomNameOrchestrator") -> None:
        # What the README means: capture an authorized payment when processing starts.
        if coordinator.payment.current_state_value == "authorized":
            coordinator.payment.capture()


class CustomNameOrchestrator(Orchestrator, orchestrator_name="coordinator"):
    order: CommunicatingOrder
    payment: PaymentStateMachine


def test_readme_communication_order_as_written_is_rejected_by_python_statemachine_3():
    with pytest.raises(Exception, match="no outgoing transition"):

        class _Order(StateMachine):
            pending = State(initial=True)
            processing = State()
            done = State()
            process = pending.to(processing)
            complete = processing.to(done)


def test_readme_custom_name_injects_coordinator_and_captures_an_authorized_payment():
    orc = CustomNameOrchestrator(order=CommunicatingOrder(), payment=PaymentStateMachine())
    assert CustomNameOrchestrator.__orchestrator_name__ == "coordinator"
    orc.payment.authorize()
    orc.order.process()
    assert orc.payment.current_state_value == "captured"
    orc.order.complete()
    assert orc.order.is_terminated


def test_readme_before_processing_alone_is_never_called():
    class Order(CommunicatingOrder):
        def on_enter_processing(self) -> None:  # type: ignore[override]
            pass

    class Orc(Orchestrator):
        order: Order
        payment: PaymentStateMachine

    orc = Orc(order=Order(), payment=PaymentStateMachine())
    orc.payment.authorize()
    orc.order.process()
    assert orc.payment.current_state_value == "authorized"


# --- injection into guards, validators and actions -----------------------------------

calls: list[tuple[str, object]] = []


class Gate(StateMachine):
    closed = State(initial=True)
    opened = State(final=True)

    open = closed.to(opened, cond="allowed", validators="checked")

    def allowed(self, orc: "GateOrchestrator") -> bool:
        calls.append(("cond", orc))
        return orc.switch.current_state_value == "on"

    def checked(self, orc: "GateOrchestrator") -> None:
        calls.append(("validator", orc))

    def before_open(self, orc: "GateOrchestrator") -> None:
        calls.append(("before", orc))

    def on_enter_opened(self, orc: "GateOrchestrator", source: State) -> None:
        calls.append(("enter", orc))
        calls.append(("source", source.id))

    def after_open(self, event: str) -> None:
        calls.append(("after-without-orc", event))


class Switch(StateMachine):
    off = State(initial=True)
    on = State(final=True)
    flip = off.to(on)


class GateOrchestrator(Orchestrator):
    gate: Gate
    switch: Switch


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()


def test_orc_is_injected_into_guards_validators_and_actions():
    orc = GateOrchestrator(gate=Gate(), switch=Switch())
    orc.switch.flip()
    orc.gate.open()
    assert calls == [
        ("validator", orc),
        ("cond", orc),
        ("before", orc),
        ("enter", orc),
        ("source", "closed"),
        ("after-without-orc", "open"),
    ]


def test_a_guard_reading_another_machine_through_orc_blocks_the_transition():
    orc = GateOrchestrator(gate=Gate(), switch=Switch())
    with pytest.raises(Gate.TransitionNotAllowed):
        orc.gate.open()
    assert orc.gate.current_state_value == "closed"
    assert ("cond", orc) in calls


def test_each_orchestrator_injects_itself():
    first = GateOrchestrator(gate=Gate(), switch=Switch())
    second = GateOrchestrator(gate=Gate(), switch=Switch())
    second.switch.flip()
    second.gate.open()
    assert {value for kind, value in calls if kind == "cond"} == {second}
    assert first.gate.current_state_value == "closed"


# --- construction --------------------------------------------------------------------


def test_fields_are_in_declaration_order_and_inherited():
    class Extended(ECommerceOrchestrator):
        gate: Gate

    assert list(machine_fields(Extended)) == ["order", "payment", "gate"]
    orc = Extended(OrderStateMachine(), PaymentStateMachine(), gate=Gate())
    assert isinstance(orc.gate, Gate)
    assert repr(orc).startswith("Extended(order=OrderStateMachine(")


def test_a_missing_machine_is_a_type_error():
    with pytest.raises(TypeError, match=r"missing machine.*'payment'"):
        ECommerceOrchestrator(order=OrderStateMachine())  # type: ignore[call-arg]


def test_an_extra_machine_is_a_type_error():
    with pytest.raises(TypeError, match=r"unexpected machine.*'gate'"):
        ECommerceOrchestrator(
            order=OrderStateMachine(),
            payment=PaymentStateMachine(),
            gate=Gate(),  # type: ignore[call-arg]
        )


def test_a_machine_of_the_wrong_class_is_a_type_error():
    with pytest.raises(TypeError, match="'order' takes a OrderStateMachine"):
        ECommerceOrchestrator(
            order=PaymentStateMachine(),  # type: ignore[arg-type]
            payment=PaymentStateMachine(),
        )


def test_too_many_or_repeated_positional_machines_are_type_errors():
    with pytest.raises(TypeError, match="takes 2 machines, 3"):
        ECommerceOrchestrator(OrderStateMachine(), PaymentStateMachine(), Gate())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'order' twice"):
        ECommerceOrchestrator(OrderStateMachine(), order=OrderStateMachine())  # type: ignore[misc]


# --- declaration errors --------------------------------------------------------------


def test_a_field_that_is_not_a_state_machine_is_rejected_at_class_creation():
    with pytest.raises(InvalidDefinitionError, match="'order' is annotated <class 'int'>"):

        class _Bad(Orchestrator):
            order: int


def test_a_field_with_a_default_is_rejected():
    with pytest.raises(InvalidDefinitionError, match="'order' has a default"):

        class _Bad(Orchestrator):
            order: OrderStateMachine = OrderStateMachine()


def test_an_injection_name_clashing_with_a_field_is_rejected():
    with pytest.raises(
        InvalidDefinitionError, match=r"injected as 'payment'.*also a machine field"
    ):

        class _Bad(Orchestrator, orchestrator_name="payment"):
            order: OrderStateMachine
            payment: PaymentStateMachine


def test_default_injection_name_clashing_with_a_field_is_rejected():
    with pytest.raises(InvalidDefinitionError, match="injected as 'orc'"):

        class _Bad(Orchestrator):
            orc: OrderStateMachine


@pytest.mark.parametrize("name", ["not an identifier", "class", "machine", "event", "model"])
def test_unusable_injection_names_are_rejected(name):
    with pytest.raises(InvalidDefinitionError, match="orchestrator_name"):

        class _Bad(Orchestrator, orchestrator_name=name):
            order: OrderStateMachine


def test_a_field_shadowing_an_orchestrator_attribute_is_rejected():
    with pytest.raises(InvalidDefinitionError, match="'restore_model' shadows"):

        class _Bad(Orchestrator):
            restore_model: OrderStateMachine  # type: ignore[assignment]


def test_a_forward_reference_resolves_when_the_class_is_first_used():
    orc = ForwardOrchestrator(later=LaterMachine())
    assert isinstance(orc.later, LaterMachine)


def test_an_unresolvable_annotation_is_a_clear_error_on_first_use():
    class Unresolved(Orchestrator):
        ghost: "GhostMachine"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidDefinitionError, match="cannot resolve a machine annotation"):
        Unresolved()


class ForwardOrchestrator(Orchestrator):
    later: "LaterMachine"


class LaterMachine(StateMachine):
    a = State(initial=True)
    b = State(final=True)
    go = a.to(b)


# --- typing ----------------------------------------------------------------------------

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_mypy_strict_accepts_the_typed_example_and_sees_its_fields(tmp_path):
    good = _mypy(HERE / "typing_example.py")
    assert good.returncode == 0, good.stdout
    bad = tmp_path / "typing_misuse.py"
    bad.write_text(
        "from tests.unit.orchestrator.typing_example import Shop, Order, Pay\n"
        "Shop(order=Pay(), pay=Pay())\n"
        "Shop(order=Order())\n"
        "x: int = Shop(order=Order(), pay=Pay()).order\n"
    )
    result = _mypy(bad)
    assert result.returncode == 1
    assert 'Argument "order" to "Shop" has incompatible type "Pay"' in result.stdout
    assert 'typing_misuse.py:3: error: Missing positional argument "pay" in call to "Shop"' in (
        result.stdout
    )
    assert 'expression has type "Order", variable has type "int"' in result.stdout
