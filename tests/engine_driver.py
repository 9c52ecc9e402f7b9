"""A synchronous, in-memory driver of the pure engine, for engine tests.

It plays the runtime's part as simply as possible: a FIFO mailbox, every step
applied in order, atomic appends committed on their own (as the store does),
every patch kept so tests can replay the history.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from flou_grpc.engine import Execute, Machine, Transition, UpdateState, apply_patch
from flou_grpc.engine.requests import transition_item


class Driver:
    def __init__(self, root: type, instance_id: str = "i1") -> None:
        self.machine = Machine(root)
        self.instance_id = instance_id
        self.doc: dict[str, Any] = {}
        self.queue: list[Any] = []
        self.patches: list[list[dict[str, Any]]] = []
        self.items: list[Any] = []
        self.fired: list[Any] = []

    # -- the mailbox --------------------------------------------------------------
    def start(self, **payload: Any) -> Driver:
        step = self.machine.start(self.instance_id, payload)
        self._commit(("start", payload), step)
        return self.drain()

    def send(self, label, params=None, namespace=None, payload=None, drain=True):
        item = transition_item(label, namespace or self.machine.name, params, payload)
        self.queue.append(item)
        return self.drain() if drain else self

    def update(self, updates, fqn=""):
        self.queue.append(UpdateState(fqn=fqn, updates=updates))
        return self.drain()

    def append(self, key, value, fqn=""):
        step, result = self.machine.append(self.instance_id, self.doc, fqn, key, value)
        self._commit(("append", fqn, key, value), step)
        return result

    def drain(self, limit: int = 10_000) -> Driver:
        steps = 0
        while self.queue:
            steps += 1
            assert steps <= limit, "the machine did not settle"
            self.step()
        return self

    def step(self) -> None:
        item = self.queue.pop(0)
        if isinstance(item, Execute):
            execution = self.machine.prepare(self.instance_id, self.doc, item, self._append_hook)
            if execution is None:
                return
            result = execution.run()
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
            step = self.machine.execute(self.instance_id, self.doc, item, execution.effects)
        elif isinstance(item, Transition):
            step = self.machine.transition(self.instance_id, self.doc, item)
            self.fired.extend(step.fired)
        else:
            step = self.machine.update_state(self.instance_id, self.doc, item)
        self._commit(item, step)

    def _append_hook(self, fqn: str, key: str, value: Any) -> list[Any]:
        return self.append(key, value, fqn)

    def _commit(self, item: Any, step: Any) -> None:
        self.doc = step.document
        self.patches.append(step.patch)
        self.items.append(item)
        self.queue.extend(step.work)

    # -- reading ------------------------------------------------------------------
    def status(self, fqn: str) -> str:
        path, _ = self.machine.path_of(self.instance_id, self.doc, fqn)
        node = self.doc
        for key in path:
            node = node[key]
        return node["_status"]

    def node(self, fqn: str) -> dict[str, Any]:
        path, _ = self.machine.path_of(self.instance_id, self.doc, fqn)
        node = self.doc
        for key in path:
            node = node[key]
        return node

    def statuses(self) -> dict[str, str]:
        return dict(self.machine.nodes(self.doc))

    def replayed(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for patch in self.patches:
            doc = apply_patch(doc, patch)
        return doc


async def _await(awaitable: Any) -> None:
    await awaitable
