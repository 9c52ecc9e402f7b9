"""A runtime that lost an instance's lease mid-step never commits that step afterwards."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flou_grpc import LTM, AsyncRuntime, WaitMode

gate = threading.Event()
calls: list[int] = []


class Stalling(LTM):
    name = "work"

    def run(self, **payload):
        calls.append(1)
        if len(calls) == 1:  # the first run, runtime A's, outlives A's lease
            gate.wait(10)
        self.root.update_state({"runs": self.root.state["runs"] + 1})


class Rest(LTM):
    name = "rest"


class Leased(LTM):
    name = "leased"
    init = [Stalling]
    transitions = [{"from": Stalling, "label": "poke", "to": Rest}]

    def get_initial_state(self):
        return {"runs": 0}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_a_step_run_past_its_lease_is_not_applied_again_after_a_takeover(sql_url):
    gate.clear()
    calls.clear()
    a = AsyncRuntime(sql_url, machines=[Leased], lease_seconds=0.3, poll_interval=100)
    b = AsyncRuntime(sql_url, machines=[Leased], lease_seconds=0.3, poll_interval=100)
    async with a:
        await a.start("leased", instance_id="x", wait=WaitMode.ENQUEUED)
        for _ in range(500):  # until A runs Work (B does not exist yet: A is first)
            if calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # A's lease expires while its run is stuck
        await b.__aenter__()
        b.poll_interval = 0.05
        b._kick()  # B takes the instance over and runs the same work item
        for _ in range(1000):
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 2, "B never took the instance over"
        await b.settle("x", timeout=10)
        b.poll_interval = 100
        await a.transition("x", "poke", wait=WaitMode.ENQUEUED)  # A may claim x again
        await asyncio.sleep(0.3)
        gate.set()  # A's stale run returns and tries to commit
        await asyncio.sleep(0.5)
        a.poll_interval = b.poll_interval = 0.05
        a._kick()
        b._kick()
        view = await a.settle("x", timeout=10)
        history = await a.history("x")
        await b.close()
    executed = [e.item["work_item_id"] for e in history if e.item.get("fqn") == "leased.work"]
    assert len(executed) == len(set(executed)) == 1
    assert view.state["runs"] == 1
    assert len(calls) == 2  # user code is at-least-once; its effects are exactly-once
