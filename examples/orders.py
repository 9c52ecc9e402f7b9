"""An order fulfilment flow that a shop's services drive from outside, over gRPC.

`placed` forks into two nested machines that run side by side, `payment` and
`stock`; the order is packed once both are done (`join: "all"`), then shipped
and delivered. Each service sends its own events, to the machine they are for:

    payment service   payment_authorized, payment_declined   namespace order.payment
    warehouse         stock_reserved                         namespace order.stock
    shipping service  shipped, delivered                     namespace order (the default)

Run it embedded, with no server: `.venv/bin/python examples/orders.py`.
"""

import threading

from flou_grpc import LTM, Runtime


class Gateway:
    """A simulated card gateway: the first capture of each authorization times out."""

    def __init__(self) -> None:
        self._timed_out: set[str] = set()
        self._lock = threading.Lock()  # a sync `run` executes in a worker thread

    def capture(self, authorization: str) -> str:
        with self._lock:
            first = authorization not in self._timed_out
            if first:
                self._timed_out.add(authorization)
            else:
                self._timed_out.discard(authorization)
        if first:
            raise TimeoutError(f"gateway timed out capturing {authorization}")
        return f"cap-{authorization}"


GATEWAY = Gateway()


class Placed(LTM):
    """Keeps the order's items and total, then starts payment and stock at once."""

    name = "placed"

    def run(self, items, total):  # the Start payload, as keyword arguments
        self.root.update_state({"items": items, "total": total})
        self.root.atomic_state_append("log", f"placed: {len(items)} items, {total}")
        self.transition("fulfil")


class Authorize(LTM):
    """Waits for the payment service to authorize, or decline, the order's total."""

    name = "authorize"

    def run(self, **payload):
        self.parent.update_state({"amount": self.root.state["total"]})  # `payment`'s own state


class Capture(LTM):
    """Captures the authorized amount at the card gateway, retrying when it times out."""

    name = "capture"
    retries = 5  # a raising `run` runs again after a backoff, 5 times at most, then `error`

    def run(self, authorization, **payload):  # the payload of `payment_authorized`
        capture_id = GATEWAY.capture(authorization)  # times out once: this run is retried
        self.parent.update_state({"authorization": authorization, "capture_id": capture_id})
        self.root.atomic_state_append("log", f"payment captured: {capture_id}")
        self.parent.transition("paid")  # `payment`'s transition: it listens in `order`


class Declined(LTM):
    """Records why the payment service declined the card, and fails the order."""

    name = "declined"

    def run(self, reason="declined", **payload):
        self.parent.update_state({"decline_reason": reason})
        self.root.atomic_state_append("log", f"payment declined: {reason}")
        self.parent.transition("payment_failed")


class Payment(LTM):
    """Authorizes the order's total, then captures it; or stops when the card is declined."""

    name = "payment"
    init = [Authorize]
    transitions = [  # they listen in this machine's namespace, `order.payment`
        {"from": Authorize, "label": "payment_authorized", "to": Capture},
        {"from": Authorize, "label": "payment_declined", "to": Declined},
    ]


class Reserve(LTM):
    """Waits for the warehouse to reserve the order's items."""

    name = "reserve"


class Reserved(LTM):
    """Records which warehouse holds the order's items."""

    name = "reserved"

    def run(self, warehouse="main", **payload):  # the payload of `stock_reserved`
        self.parent.update_state({"warehouse": warehouse})
        self.root.atomic_state_append("log", f"stock reserved at {warehouse}")
        self.parent.transition("in_stock")


class Stock(LTM):
    """Reserves the order's items at the warehouse."""

    name = "stock"
    init = [Reserve]
    transitions = [{"from": Reserve, "label": "stock_reserved", "to": Reserved}]


class Paid(LTM):
    """Arrives at the join once the payment branch is done."""

    name = "paid"

    def run(self, **payload):
        self.transition("ready")


class InStock(LTM):
    """Arrives at the join once the stock branch is done."""

    name = "in_stock"

    def run(self, **payload):
        self.transition("ready")


class Packing(LTM):
    """Paid and in stock: waits for the shipping service to pick the parcel up."""

    name = "packing"

    def run(self, **payload):
        self.root.atomic_state_append("log", "ready to ship")


class Shipped(LTM):
    """Records the carrier's tracking number, and waits for the delivery."""

    name = "shipped"

    def run(self, tracking="", **payload):
        self.root.update_state({"tracking": tracking})
        self.root.atomic_state_append("log", f"shipped: {tracking}")


class Delivered(LTM):
    """Records the delivery: the order is done."""

    name = "delivered"

    def run(self, **payload):
        self.root.atomic_state_append("log", "delivered")


class Cancelled(LTM):
    """Records the cancellation (the stock branch was completed with the payment)."""

    name = "cancelled"

    def run(self, **payload):
        self.root.atomic_state_append("log", "cancelled")


class Order(LTM):
    """An order: payment and stock in parallel, shipped once both are done, then delivered."""

    name = "order"
    init = [Placed]
    transitions = [
        {"from": Placed, "label": "fulfil", "to": [Payment, Stock]},  # fork: both run at once
        # A label completes every listed source that is active, and a sub-machine is active
        # while it waits: each branch steps out to a state of its own, to arrive when done.
        {"from": Payment, "label": "paid", "to": Paid},
        {"from": Stock, "label": "in_stock", "to": InStock},
        {"from": [Paid, InStock], "label": "ready", "to": Packing, "join": "all"},
        {"from": Packing, "label": "shipped", "to": Shipped},
        {"from": Shipped, "label": "delivered", "to": Delivered},
        # Any active source fires: the stock branch, waiting or done, is completed too.
        {"from": [Payment, Stock, InStock], "label": "payment_failed", "to": Cancelled},
    ]

    def get_initial_state(self):
        return {"items": [], "total": 0, "tracking": "", "log": []}


def main() -> None:
    with Runtime("memory://", machines=[Order]) as runtime:
        items = [{"sku": "mug", "qty": 2}, {"sku": "tea", "qty": 1}]
        order = runtime.start("order", {"items": items, "total": 42.5}, instance_id="order-1")
        runtime.settle(order.id)
        # Each service sends its event to the nested machine it is for.
        paid = {"authorization": "auth-1"}
        runtime.transition(order.id, "payment_authorized", paid, namespace="order.payment")
        runtime.transition(
            order.id, "stock_reserved", {"warehouse": "north"}, namespace="order.stock"
        )
        print(runtime.settle(order.id).active_states)
        runtime.transition(order.id, "shipped", {"tracking": "1Z999"})
        runtime.transition(order.id, "delivered")
        final = runtime.settle(order.id)
        print(final.status, final.active_states)
        print(final.state["payment"]["capture_id"], final.state["stock"]["warehouse"])
        print("\n".join(final.state["log"]))


if __name__ == "__main__":
    main()
