"""A runtime process of the durability tests, and the machines it hosts.

Run as `python -m tests.integration.durability.worker DATABASE_URL [options]`
from the repository root: it hosts `Chain` and `Relay` on an `AsyncRuntime`
over the database until it is killed (it never stops by itself).

Options:
    --lease SECONDS: the runtime's `lease_seconds` (default 1).
    --poll SECONDS: the runtime's `poll_interval` (default 0.1).
    --pause SECONDS: how long each phase of a step lasts (default 0), so that
        a kill at a random moment lands in every phase: after reading the
        mailbox (before run), twice inside `run`, before the commit (after
        run), after the commit (before the runtime hears of it).
    --marks: write `<phase> <instance id>` lines to stdout as the phases
        begin, so a test can tell where each instance was when it killed the
        process. Phases: before-run (the mailbox was read), run (an append
        inside run committed), after-run (run returned, its step is about to
        commit), before-commit (the same for a step without code), committed
        (the commit returned), idle (the mailbox is empty). The first line is
        `ready <pid>`.

The pauses and marks come from a thin wrapper around the real `SqlStore`
(every call goes to it): nothing is replaced, only slowed down and reported.
The machines sleep inside `run` as long as the wrapper says (0 in the test
process, where the crash-free reference runs on `memory://`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flou_grpc import LTM, AsyncRuntime
from flou_grpc.engine.document import JsonObject, Path
from flou_grpc.store.records import EventRecord, Snapshot, WorkRecord
from flou_grpc.store.sql import SqlStore

READY = "ready"
BEFORE_RUN, RUN, AFTER_RUN, COMMITTED = "before-run", "run", "after-run", "committed"
PHASES = (BEFORE_RUN, RUN, AFTER_RUN, COMMITTED)
"""Where a kill can land in a step that runs code; the tests want each one hit."""
BEFORE_COMMIT, IDLE = "before-commit", "idle"
"""Marks of the rest: a step without code about to commit; a mailbox found empty."""

_pause = 0.0
"""Seconds each phase lasts in this process (set by `main`; 0 elsewhere)."""


def pause() -> None:
    """Sleeps one phase's length (a no-op outside a worker process started with --pause)."""
    if _pause:
        time.sleep(_pause)


# --- the crash-safety machine --------------------------------------------------------------


class Stage(LTM):
    """No `name`: the base of the chain's stages.

    A run appends twice to the root's `log` (with a pause between), counts
    itself in `count`, records its name in `last`, and moves the chain on.
    """

    last_stage = False

    def run(self, **payload: Any) -> None:
        root = self.root
        seed = root.state["seed"]
        root.atomic_state_append("log", f"{seed}:{self.fqn}:in")
        pause()
        root.atomic_state_append("log", f"{seed}:{self.fqn}:out")
        root.update_state({"count": root.state["count"] + 1, "last": self.fqn})
        if not self.last_stage:
            self.transition("next")
        pause()


class S1(Stage):
    name = "s1"


class S2(Stage):
    name = "s2"


class S3(Stage):
    name = "s3"


class S4(Stage):
    name = "s4"


class S5(Stage):
    name = "s5"
    last_stage = True


class Chain(LTM):
    """`s1 -> s2 -> s3 -> s4 -> s5`, each stage moving on by itself (`next`)."""

    name = "chain"
    init = [S1]
    transitions = [
        {"from": S1, "label": "next", "to": S2},
        {"from": S2, "label": "next", "to": S3},
        {"from": S3, "label": "next", "to": S4},
        {"from": S4, "label": "next", "to": S5},
    ]

    def get_initial_state(self) -> dict[str, Any]:
        return {"seed": -1, "log": [], "count": 0, "last": ""}

    def run(self, **payload: Any) -> None:
        self.update_state({"seed": payload["seed"]})


# --- the machine of the load tests ------------------------------------------------------------


class Side(LTM):
    """No `name`: a side of the relay; a run caused by a `step` logs its number and process."""

    def run(self, **payload: Any) -> None:
        if "n" in payload:
            self.root.atomic_state_append("log", {"n": payload["n"], "pid": os.getpid()})


class Ping(Side):
    name = "ping"


class Pong(Side):
    name = "pong"


class Relay(LTM):
    """`ping <-step-> pong`: every `step` (from an active side) runs the other side once."""

    name = "relay"
    init = [Ping]
    transitions = [
        {"from": Ping, "label": "step", "to": Pong},
        {"from": Pong, "label": "step", "to": Ping},
    ]

    def get_initial_state(self) -> dict[str, Any]:
        return {"log": [], "pids": []}

    def run(self, **payload: Any) -> None:
        self.atomic_state_append("pids", os.getpid())


MACHINES = (Chain, Relay)


# --- the process ------------------------------------------------------------------------------


class PhasedStore:
    """The real store, slowed down at the phases of a step, which it reports on stdout."""

    def __init__(self, store: SqlStore, marks: bool) -> None:
        self._store, self._marks = store, marks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _mark(self, phase: str, instance_id: str) -> None:
        if self._marks:
            os.write(1, f"{phase} {instance_id}\n".encode())

    def head(self, instance_id: str) -> Snapshot:
        # The worker's read of its next item: a step begins here.
        snapshot = self._store.head(instance_id)
        self._mark(BEFORE_RUN if snapshot.next else IDLE, instance_id)
        if snapshot.next:
            pause()
        return snapshot

    def append(
        self,
        instance_id: str,
        path: Path,
        value: Any,
        event: EventRecord,
        dedup: str = "",
        max_bytes: int | None = None,
    ) -> tuple[list[Any], int]:
        result = self._store.append(instance_id, path, value, event, dedup, max_bytes)
        self._mark(RUN, instance_id)
        return result

    def commit(
        self,
        instance_id: str,
        revision: int,
        document: JsonObject,
        event: EventRecord,
        done: str | None,
        work: Sequence[WorkRecord] = (),
        owner: str = "",
        alone: bool = False,
        chained: Sequence[EventRecord] = (),
    ) -> Snapshot:
        after_run = event.kind == "executed"
        self._mark(AFTER_RUN if after_run else BEFORE_COMMIT, instance_id)
        pause()
        if after_run:  # twice as long: the narrowest window otherwise, the least hit
            pause()
        snapshot = self._store.commit(
            instance_id, revision, document, event, done, work, owner, alone, chained
        )
        self._mark(COMMITTED, instance_id)
        pause()
        if snapshot.next:  # the commit read the next item too: its step begins here
            self._mark(BEFORE_RUN, instance_id)
            pause()
        return snapshot


async def serve(url: str, lease: float, poll: float, marks: bool) -> None:
    # Threads enough for every instance's pauses: a step waits in its phase, not for a thread.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    store = PhasedStore(SqlStore(url), marks)
    async with AsyncRuntime(
        machines=MACHINES, store=store, lease_seconds=lease, poll_interval=poll
    ):
        os.write(1, f"{READY} {os.getpid()}\n".encode())
        await asyncio.Event().wait()  # until killed


def main(argv: Sequence[str] | None = None) -> None:
    global _pause
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--marks", action="store_true")
    args = parser.parse_args(argv)
    _pause = args.pause
    asyncio.run(serve(args.url, args.lease, args.poll, args.marks))


if __name__ == "__main__":
    main()
