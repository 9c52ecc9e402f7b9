"""An `async def run`: awaited by the runtime, its effects applied like a sync run's."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.ltms.base import Recorder
from tests.ltms.flat import B


class AsyncStep(Recorder):
    name = "async_step"

    async def run(self, **payload: Any) -> None:
        await asyncio.sleep(0)
        self.record(payload)
        self.transition("next", payload={"after": "await"})


class AsyncFlow(Recorder):
    name = "async_flow"
    init = [AsyncStep]
    transitions = [{"from": AsyncStep, "label": "next", "to": B}]
