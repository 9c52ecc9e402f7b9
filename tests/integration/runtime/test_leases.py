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


# --- lingering: a worker keeps an idle instance a while ------------------------------------


class Ping(LTM):
    name = "ping"


class Pong(LTM):
    name = "pong"


class PingPong(LTM):
    name = "pingpong"
    init = [Ping]
    transitions = [
        {"from": Ping, "label": "go", "to": Pong},
        {"from": Pong, "label": "back", "to": Ping},
    ]


def _lease_owner(runtime: AsyncRuntime, instance_id: str) -> str:
    from sqlalchemy import select

    from flou_grpc.store.schema import instances

    engine = runtime.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        query = select(instances.c.lease_owner).where(instances.c.id == instance_id)
        return str(conn.execute(query).scalar_one())


async def _until_released(runtime: AsyncRuntime, instance_id: str, within: float) -> float:
    began = asyncio.get_running_loop().time()
    while _lease_owner(runtime, instance_id):
        assert asyncio.get_running_loop().time() - began < within, "the lease was never released"
        await asyncio.sleep(0.02)
    return asyncio.get_running_loop().time() - began


async def test_a_worker_keeps_an_emptied_instance_for_linger_seconds_then_releases_it(sql_url):
    runtime = AsyncRuntime(sql_url, machines=[PingPong], linger=0.4, poll_interval=100)
    async with runtime:
        await runtime.start("pingpong", instance_id="p", wait=WaitMode.SETTLED)
        await runtime.transition("p", "go")
        assert _lease_owner(runtime, "p") == runtime.owner  # kept, though the mailbox is empty

        released_after = await _until_released(runtime, "p", within=5.0)

        assert released_after > 0.1
        assert (await runtime.settle("p")).active_states == ("pingpong", "pingpong.pong")


async def test_events_sent_while_the_worker_lingers_need_no_claim(sql_url):
    runtime = AsyncRuntime(sql_url, machines=[PingPong], linger=5.0, poll_interval=100)
    claims: list[int] = []
    claim = runtime.store.claim

    def counted(owner: str, lease_seconds: float, limit: int) -> list[str]:
        claims.append(1)
        return claim(owner, lease_seconds, limit)

    runtime.store.claim = counted  # type: ignore[method-assign]
    async with runtime:
        await runtime.start("pingpong", instance_id="p", wait=WaitMode.SETTLED)
        await runtime.transition("p", "go")
        claims.clear()
        for label in ("back", "go", "back", "go"):
            result = await runtime.transition("p", label)
            assert [fired["label"] for fired in result.fired] == [label]
        settled = await runtime.settle("p")

    assert settled.active_states == ("pingpong", "pingpong.pong")
    assert settled.revision == 1 + 2 + 2 * 5  # start + its two executes, two steps per event
    assert claims == []


async def test_close_gives_back_the_leases_of_lingering_workers(sql_url):
    runtime = AsyncRuntime(sql_url, machines=[PingPong], linger=30.0, poll_interval=100)
    async with runtime:
        await runtime.start("pingpong", instance_id="p", wait=WaitMode.SETTLED)
        await runtime.transition("p", "go")
        assert _lease_owner(runtime, "p") == runtime.owner
        closing = asyncio.get_running_loop().time()

    assert asyncio.get_running_loop().time() - closing < 2.0
    reopened = AsyncRuntime(sql_url, machines=[PingPong])
    try:
        assert _lease_owner(reopened, "p") == ""
    finally:
        await reopened.close()
