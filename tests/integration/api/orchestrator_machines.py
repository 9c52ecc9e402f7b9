"""Orchestrators the over-gRPC scenario tests serve (`app=(..., this module)`).

- `CustomNameOrchestrator` (`custom_name_orchestrator`): the seed README's
  "State Machine Communication" order under `orchestrator_name="coordinator"`.
  The README captures the payment in `before_processing`, which
  python-statemachine 3.x never calls (it is named after a state, not an
  event); `on_enter_processing` does what the README means. Its `done` state
  is final, as 3.x requires of a state without outgoing transitions.
- `DurableShop` (`durable_shop`): the seed's order + payment, every state
  entry counted in the machine's model (`model.entries`), which is persisted
  with the instance: a server restart that ran an entry action again would
  show in the counts, though the two servers are different processes.
"""

from __future__ import annotations

from typing import Any

from statemachine import State, StateMachine

from flou_grpc import Orchestrator
from tests.unit.orchestrator.machines import OrderStateMachine, PaymentStateMachine


class CommunicatingOrder(StateMachine):
    pending = State(initial=True)
    processing = State()
    done = State(final=True)

    process = pending.to(processing)
    complete = processing.to(done)

    def before_processing(self, coordinator: CustomNameOrchestrator) -> None:
        # As in the README: python-statemachine 3.x never calls it (see the docstring).
        raise AssertionError("before_processing is not a python-statemachine 3.x callback")

    def on_enter_processing(self, coordinator: CustomNameOrchestrator) -> None:
        if coordinator.payment.current_state_value == "authorized":
            coordinator.payment.capture()


class CustomNameOrchestrator(Orchestrator, orchestrator_name="coordinator"):
    order: CommunicatingOrder
    payment: PaymentStateMachine


def _count_entry(machine: StateMachine, state: State) -> None:
    entries = dict(getattr(machine.model, "entries", {}))
    entries[state.id] = entries.get(state.id, 0) + 1
    machine.model.entries = entries


class CountedOrder(OrderStateMachine):
    def on_enter_state(self, state: State, **kwargs: Any) -> None:
        _count_entry(self, state)


class CountedPayment(PaymentStateMachine):
    def on_enter_state(self, state: State, **kwargs: Any) -> None:
        _count_entry(self, state)


class DurableShop(Orchestrator):
    order: CountedOrder
    payment: CountedPayment
