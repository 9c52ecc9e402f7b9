"""Sub-machines and namespaces (semantics sections 3, 5 and 8).

- `Shop`: section 8's example: `charge` moves inside `shop.payment`, and
  `receipt` fires `paid` on the machine above with `self.parent.transition`.
- `Deep`: three levels of machines, one transition at each level, each in its
  machine's own namespace.
- `Channels`: a custom namespace `global` shared by two sub-machines and the
  root, plus a dotted custom channel.
- `Defaults`: a leaf that fires a label through `self`, `self.parent`,
  `self.root` or an explicit namespace, as its payload says.
"""

from __future__ import annotations

from typing import Any

from tests.ltms.base import Recorder
from tests.ltms.flat import A, B, C, D, E


class Browse(Recorder):
    name = "browse"


class Charge(Recorder):
    name = "charge"


class Receipt(Recorder):
    name = "receipt"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        self.parent.transition("paid", payload={"receipt": self.fqn})


class Shipped(Recorder):
    name = "shipped"


class Payment(Recorder):
    name = "payment"
    init = [Charge]
    transitions = [{"from": Charge, "label": "ok", "to": Receipt}]


class Shop(Recorder):
    """Section 8's example: a shop with a nested payment machine.

    `browse --checkout--> payment --paid--> shipped`; inside `payment`,
    `charge --ok--> receipt`, and `receipt` fires `paid` on the shop.
    """

    name = "shop"
    init = [Browse]
    transitions = [
        {"from": Browse, "label": "checkout", "to": Payment},
        {"from": Payment, "label": "paid", "to": Shipped},
    ]


class Inner(Recorder):
    name = "inner"
    init = [A]
    transitions = [{"from": A, "label": "go", "to": B}]


class Outer(Recorder):
    name = "outer"
    init = [Inner]
    transitions = [
        {"from": Inner, "label": "up", "to": D},
        {"from": Inner, "label": "again", "to": Inner},
    ]


class Deep(Recorder):
    name = "deep"
    init = [Outer]
    transitions = [
        {"from": Outer, "label": "finish", "to": E},
        {"from": Outer, "label": "again", "to": Outer},
    ]


class Noop(Recorder):
    name = "noop"


class Noop2(Recorder):
    name = "noop2"


class Child1(Recorder):
    name = "child1"
    init = [Noop]
    transitions = [{"from": Noop, "label": "start", "to": Noop2, "namespace": "global"}]


class Child2(Recorder):
    name = "child2"
    init = [Noop]
    transitions = [
        {"from": Noop, "label": "start", "to": Noop2, "namespace": "global"},
        {"from": Noop2, "label": "back", "to": Noop},
        {"from": Noop2, "label": "alert", "to": Noop, "namespace": "team.alerts"},
    ]


class Channels(Recorder):
    """The root fires in `global` too: one request moves three machines."""

    name = "channels"
    init = [A, Child1, Child2]
    transitions = [
        {"from": A, "label": "start", "to": B, "namespace": "global"},
        {"from": A, "label": "local", "to": C},
    ]


class Caller(Recorder):
    """Fires `payload["label"]` through `payload["via"]`: self, parent, root or explicit."""

    name = "caller"

    def run(self, **payload: Any) -> None:
        self.record(payload)
        via, label = payload.get("via"), payload.get("label", "ping")
        if via == "self":
            self.transition(label)
        elif via == "parent":
            self.parent.transition(label)
        elif via == "root":
            self.root.transition(label)
        elif via == "explicit":
            self.transition(label, namespace=payload["namespace"])


class Sub(Recorder):
    name = "sub"
    init = [Caller]
    transitions = [{"from": Caller, "label": "ping", "to": B}]


class Defaults(Recorder):
    """`defaults.sub.caller --ping--> b` inside `sub`, and `sub --ping--> e` in the root.

    The root's own `run` fires `payload["root_label"]` if given: its default
    namespace is its own fqn.
    """

    name = "defaults"
    init = [Sub]
    transitions = [
        {"from": Sub, "label": "ping", "to": E},
        {"from": Sub, "label": "pong", "to": D},
    ]

    def run(self, **payload: Any) -> None:
        self.record(payload)
        if "root_label" in payload:
            self.transition(payload["root_label"])
