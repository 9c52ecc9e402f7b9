"""max_state_bytes: no step, update or append commits a state over the limit."""

from __future__ import annotations

import pytest

from flou_grpc import LTM, AsyncRuntime, WaitMode
from flou_grpc.errors import LimitExceededError
from flou_grpc.runtime import EventKind, InstanceStatus

LIMIT = 400


class Grow(LTM):
    name = "grow"

    def run(self, size=0, **payload):
        self.root.update_state({"blob": "x" * size})


class Hold(LTM):
    name = "hold"
    init = [Grow]
    transitions = [{"from": Grow, "label": "again", "to": Grow}]

    def get_initial_state(self):
        return {"blob": "", "items": []}


async def test_an_update_over_the_limit_is_rejected_and_changes_nothing(database_url):
    async with AsyncRuntime(database_url, machines=[Hold], max_state_bytes=LIMIT) as runtime:
        started = await runtime.start("hold", instance_id="h", wait=WaitMode.SETTLED)

        with pytest.raises(LimitExceededError) as caught:
            await runtime.update_state("h", {"blob": "y" * LIMIT})

        assert caught.value.metadata["field"] == "state"
        assert caught.value.metadata["limit"] == "max_state_bytes"
        after = await runtime.get("h")
        assert after.state == started.state
        assert (await runtime.history("h"))[-1].kind is EventKind.REJECTED


async def test_an_append_over_the_limit_is_refused(database_url):
    async with AsyncRuntime(database_url, machines=[Hold], max_state_bytes=LIMIT) as runtime:
        await runtime.start("hold", instance_id="h", wait=WaitMode.SETTLED)
        await runtime.atomic_append("h", "items", "small")

        with pytest.raises(LimitExceededError):
            await runtime.atomic_append("h", "items", "z" * LIMIT)

        assert (await runtime.get("h")).state["items"] == ["small"]


async def test_a_run_that_grows_the_state_over_the_limit_fails_into_error(database_url):
    runtime = AsyncRuntime(database_url, machines=[Hold], max_state_bytes=LIMIT, retry_delay=0.01)
    async with runtime:
        await runtime.start("hold", {"size": 10}, instance_id="h", wait=WaitMode.SETTLED)
        await runtime.transition("h", "again", {"size": LIMIT}, wait=WaitMode.SETTLED)

        instance = await runtime.get("h")

    assert instance.status is InstanceStatus.FAILED
    assert instance.state["grow"]["_status"] == "error"
    assert "max_state_bytes" in instance.errors[0].message
    assert len(instance.state["blob"]) == 10
