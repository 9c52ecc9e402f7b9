"""The seed's order + payment, made cyclic, for bench/orchestrator_bench.py.

The server loads this file (`FLOU_APP=bench/orchestrator_machines.py`); the
bench imports it too and drives the very same classes in memory.

They are the seed README's machines (python-statemachine 3.x), with two changes
so that one instance can take events forever:
- `delivered` (order) and `captured` (payment) are not final, and
- `reorder = delivered.to(pending)` brings the order back; its `after_reorder`
  sends `reset = authorized.to(unpaid) | captured.to(unpaid)` to the payment,
  through the orchestrator, as `after_process` sends `authorize`.

The cycle the bench sends, 5 external events (2 of them send an event to the
other machine from a callback): order.process (-> payment.authorize),
payment.capture, order.ship, order.deliver, order.reorder (-> payment.reset).
"""

from __future__ import annotations

from statemachine import State, StateMachine

from flou_grpc import Orchestrator

CYCLE = (
    ("order", "process"),
    ("payment", "capture"),
    ("order", "ship"),
    ("order", "deliver"),
    ("order", "reorder"),
)
"""The (machine, event) cycle; after it both machines are back at their initial states."""


class OrderStateMachine(StateMachine):
    pending = State(initial=True)
    processing = State()
    shipped = State()
    delivered = State()  # final in the seed: `reorder` leaves it here
    cancelled = State(final=True)

    process = pending.to(processing)
    ship = processing.to(shipped)
    deliver = shipped.to(delivered)
    cancel = pending.to(cancelled) | processing.to(cancelled)
    reorder = delivered.to(pending)

    def after_process(self, orc: BenchShop) -> None:
        orc.payment.authorize()

    def after_reorder(self, orc: BenchShop) -> None:
        orc.payment.reset()


class PaymentStateMachine(StateMachine):
    unpaid = State(initial=True)
    authorized = State()
    captured = State()  # final in the seed, which declares `refund` from it
    failed = State(final=True)
    refunded = State(final=True)

    authorize = unpaid.to(authorized)
    capture = authorized.to(captured)
    fail = unpaid.to(failed) | authorized.to(failed)
    refund = captured.to(refunded)
    reset = authorized.to(unpaid) | captured.to(unpaid)


class BenchShop(Orchestrator):
    """Served as `bench_shop`."""

    order: OrderStateMachine
    payment: PaymentStateMachine
