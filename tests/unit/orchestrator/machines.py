"""Shared test machines: the seed's (corrected for python-statemachine 3.x) and nested ones."""

from collections import Counter
from typing import Any

from statemachine import State, StateMachine

from flou_grpc import Orchestrator

entered: Counter[str] = Counter()
"""How many times each entry action ran (cleared before every test)."""


class OrderStateMachine(StateMachine):
    pending = State(initial=True)
    processing = State()
    shipped = State()
    delivered = State(final=True)
    cancelled = State(final=True)

    process = pending.to(processing)
    ship = processing.to(shipped)
    deliver = shipped.to(delivered)
    cancel = pending.to(cancelled) | processing.to(cancelled)

    def after_process(self, orc: "ECommerceOrchestrator") -> None:
        orc.payment.authorize()


class PaymentStateMachine(StateMachine):
    # The seed marks `captured` final and then declares `refund` from it, which
    # python-statemachine rejects; `refunded` is reached from `captured` here.
    unpaid = State(initial=True)
    authorized = State()
    captured = State()
    failed = State(final=True)
    refunded = State(final=True)

    authorize = unpaid.to(authorized)
    capture = authorized.to(captured)
    fail = unpaid.to(failed) | authorized.to(failed)
    refund = captured.to(refunded)


class ECommerceOrchestrator(Orchestrator):
    order: OrderStateMachine
    payment: PaymentStateMachine


class Shipment(StateMachine):
    """Compound, parallel and history states, with entry counters."""

    idle = State(initial=True)

    class shipping(State.Compound):
        packing = State(initial=True)
        sent = State()
        send = packing.to(sent)

    class checks(State.Parallel):
        class customs(State.Compound):
            waiting = State(initial=True)
            cleared = State(final=True)
            clear = waiting.to(cleared)

        class insurance(State.Compound):
            pending = State(initial=True)
            insured = State(final=True)
            insure = pending.to(insured)

    done = State(final=True)

    start = idle.to(shipping)
    check = shipping.to(checks)
    finish = checks.to(done)

    def on_enter_state(self, state: State, **kwargs: Any) -> None:
        entered[state.id] += 1


class Ledger:
    """A model of its own: its data is persisted with the machine."""

    def __init__(self) -> None:
        self.total = 0
        self.lines: list[str] = []


class Billing(StateMachine):
    open = State(initial=True)
    closed = State(final=True)

    add = open.to.itself(internal=True)
    close = open.to(closed)

    def on_add(self, amount: int, coordinator: "LogisticsOrchestrator") -> None:
        self.model.total += amount
        self.model.lines.append(f"+{amount}")
        if amount < 0:
            raise ValueError("negative amount")

    def before_close(self, coordinator: "LogisticsOrchestrator") -> None:
        coordinator.shipment.start()


class LogisticsOrchestrator(Orchestrator, orchestrator_name="coordinator"):
    shipment: Shipment
    billing: Billing

    @classmethod
    def restore_model(cls, field: str, data: dict[str, Any]) -> object:
        if field == "billing":
            ledger = Ledger()
            vars(ledger).update(data)
            return ledger
        return super().restore_model(field, data)
