"""Checked by `mypy --strict` in test_orchestrator_api: the fields of an Orchestrator are typed."""

from statemachine import State, StateMachine

from flou_grpc import Orchestrator


class Order(StateMachine):
    pending = State(initial=True)
    paid = State(final=True)
    pay = pending.to(paid)

    def before_pay(self, orc: "Shop") -> None:
        orc.pay.send("charge")


class Pay(StateMachine):
    waiting = State(initial=True)
    charged = State(final=True)
    charge = waiting.to(charged)


class Shop(Orchestrator, orchestrator_name="orc"):
    order: Order
    pay: Pay


def build() -> Shop:
    shop = Shop(order=Order(), pay=Pay())
    order: Order = shop.order
    order.send("pay")
    return shop
