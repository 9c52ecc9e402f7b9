"""Executes of states with no code commit with the step that queued them, as their own events.

A transition into a state without `run` was two transactions: the transition,
then the target's execute taken from the mailbox. That execute is pure, so it
now goes in the transition's transaction, at the next revision, with its own
event (`AsyncRuntime._chain`, `Store.commit`'s `chained`). These tests hold
that the history, the answers and what watchers see stay those of separate
steps, and that a chain never jumps ahead of queued work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flou_grpc import AsyncRuntime, WaitMode
from flou_grpc.engine.document import apply_patch, json_size
from flou_grpc.engine.requests import update_item
from flou_grpc.runtime import EventKind, Instance
from flou_grpc.runtime.observer import Observer
from flou_grpc.runtime.stores import open_store
from flou_grpc.store.base import Store
from flou_grpc.store.records import Snapshot, WorkRecord
from tests.ltms.quiet import Auto, Flip, Nest

TRANSITIONED, EXECUTED = EventKind.TRANSITIONED, EventKind.EXECUTED


class Commits:
    """A real store that records the event kinds of each commit (chained ones included),
    and what its claims and head reads were for."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.commits: list[list[str]] = []
        self.before_commit: Any = None  # called once, before the next commit
        self.claimed: list[str] = []
        self.heads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(self, instance_id: str, *args: Any, **kwargs: Any) -> Snapshot:
        if self.before_commit is not None:
            self.before_commit, call = None, self.before_commit
            call(instance_id)
        snapshot = self._store.commit(instance_id, *args, **kwargs)
        event, chained = args[2], args[7] if len(args) > 7 else kwargs.get("chained", ())
        self.commits.append([event.kind, *(e.kind for e in chained)])
        return snapshot

    def since(self, mark: int) -> list[list[str]]:
        return self.commits[mark:]

    def claim(self, owner: str, lease_seconds: float, limit: int) -> list[str]:
        claimed: list[str] = self._store.claim(owner, lease_seconds, limit)
        self.claimed += claimed
        return claimed

    def head(self, instance_id: str) -> Snapshot:
        self.heads.append(instance_id)
        return self._store.head(instance_id)


def runtime(store: Commits, **options: Any) -> AsyncRuntime:
    return AsyncRuntime(store=store, machines=[Flip, Nest, Auto], poll_interval=60, **options)  # type: ignore[arg-type]


async def test_a_transition_into_a_state_with_no_code_is_one_commit(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store, linger=5) as flou:
        started = await flou.start("flip", instance_id="f", wait=WaitMode.SETTLED)
        mark = len(store.commits)
        answers = [await flou.transition("f", label) for label in ("on", "off", "on")]
        final = await flou.get("f")
        history = await flou.history("f", started.revision + 1)

    assert store.since(mark) == [[TRANSITIONED, EXECUTED]] * 3
    # The history is that of separate steps: each transition, then its target's execute.
    assert [(e.revision, e.kind) for e in history] == [
        (started.revision + n, kind) for n, kind in enumerate([TRANSITIONED, EXECUTED] * 3, 1)
    ]
    assert [e.item.get("fqn") for e in history if e.kind == EXECUTED] == [
        "flip.on",
        "flip.off",
        "flip.on",
    ]
    assert len({e.item["work_item_id"] for e in history}) == 6
    # Each answer is the instance right after its transition, before the execute.
    for n, answer in enumerate(answers):
        assert answer.instance.revision == started.revision + 1 + 2 * n
        assert answer.instance.active_states == ("flip",)  # the target is queued, not active
        assert answer.instance.pending_work_count == 1
    assert final.revision == started.revision + 6
    assert final.active_states == ("flip", "flip.on")
    assert final.pending_work_count == 0
    state = started.state
    for event in history:
        state = apply_patch(state, event.patch)
    assert state == final.state


async def test_a_chain_runs_through_nested_machines_and_stops_at_code(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store, linger=5) as flou:
        await flou.start("nest", instance_id="n", wait=WaitMode.SETTLED)
        mark = len(store.commits)
        entered = await flou.transition("n", "enter")
        settled = await flou.settle("n")
        entered_commits = store.since(mark)

        await flou.start("nest", instance_id="m", wait=WaitMode.SETTLED)
        mark = len(store.commits)
        await flou.transition("m", "work", {"job": 7})
        worked = await flou.settle("m")
        worked_commits = store.since(mark)
        history = await flou.history("n", entered.instance.revision)

    assert entered_commits == [[TRANSITIONED, EXECUTED, EXECUTED]]
    assert [e.item.get("fqn") for e in history[1:]] == ["nest.sub", "nest.sub.leaf"]
    assert set(settled.active_states) == {"nest", "nest.sub", "nest.sub.leaf"}
    # `busy` runs code: its execute is a step of its own, taken from the mailbox.
    assert worked_commits == [[TRANSITIONED], [EXECUTED]]
    assert worked.state["busy"]["ran"] == {"job": 7}


async def test_watchers_get_each_chained_step_as_its_own_event(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store, linger=5) as flou:
        started = await flou.start("flip", instance_id="w", wait=WaitMode.SETTLED)
        stream = flou.watch("w")
        first = await anext(stream)
        answer = await flou.transition("w", "on")
        seen = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
        await stream.aclose()
        at_step = await anext(flou.watch("w", answer.instance.revision))

    assert isinstance(first, Instance)
    assert first.revision == started.revision
    assert [(e.revision, e.kind) for e in seen] == [
        (started.revision + 1, TRANSITIONED),
        (started.revision + 2, EXECUTED),
    ]
    # What the answer shows is the instance at the transition's own revision.
    assert isinstance(at_step, Instance)
    assert at_step.state == answer.instance.state
    assert at_step.active_states == answer.instance.active_states


async def test_queued_work_behind_a_step_keeps_the_execute_in_its_turn(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store) as flou:
        started = await flou.start("flip", instance_id="q", wait=WaitMode.SETTLED)
        await asyncio.sleep(0.6)  # the worker let the instance go: the next items queue
        on = await flou.transition("q", "on", wait=WaitMode.ENQUEUED)
        update = await flou.submit_update("q", {"note": "behind"}, wait=WaitMode.ENQUEUED)
        settled = await flou.settle("q", timeout=10)
        history = await flou.history("q", started.revision + 1)

    # Two items were queued: the transition's execute joins the mailbox behind the update.
    assert [(e.kind, e.item.get("work_item_id")) for e in history][:2] == [
        (TRANSITIONED, on.work_item_id),
        (EventKind.STATE_UPDATED, update.work_item_id),
    ]
    assert [e.kind for e in history[2:]] == [EXECUTED]
    assert settled.state["note"] == "behind"
    assert settled.active_states == ("flip", "flip.on")


async def test_work_queued_during_the_step_makes_it_commit_without_its_chain(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store) as flou:
        started = await flou.start("flip", instance_id="r", wait=WaitMode.SETTLED)
        await asyncio.sleep(0.6)  # released: the transition below goes through the mailbox
        late = WorkRecord("late-update", update_item("", {"note": "late"}))

        def enqueue_elsewhere(instance_id: str) -> None:  # as another replica would
            store.enqueue(instance_id, [late])

        store.before_commit = enqueue_elsewhere
        mark = len(store.commits)
        answer = await flou.transition("r", "on")
        settled = await flou.settle("r", timeout=10)
        history = await flou.history("r", started.revision + 1)

    assert answer.instance.revision == started.revision + 1
    # The chained commit was refused (nothing recorded), then the step committed alone.
    assert store.since(mark)[0] == [TRANSITIONED]
    assert [(e.kind, e.item.get("work_item_id")) for e in history] == [
        (TRANSITIONED, answer.work_item_id),
        (EventKind.STATE_UPDATED, "late-update"),
        (EXECUTED, history[2].item["work_item_id"]),
    ]
    assert settled.state["note"] == "late"


async def test_a_chained_step_over_the_state_limit_is_left_to_the_worker(database_url):
    async with runtime(Commits(open_store(database_url))) as probe:
        await probe.start("nest", instance_id="p", wait=WaitMode.SETTLED)
        entered = await probe.transition("p", "enter")
    limit = json_size(entered.instance.state)  # `sub` queued fits; `sub` run, with `leaf`, not

    store = Commits(open_store(database_url))
    async with runtime(store, max_state_bytes=limit, retry_delay=0.01) as flou:
        await flou.start("nest", instance_id="n", wait=WaitMode.SETTLED)
        mark = len(store.commits)
        answer = await flou.transition("n", "enter")
        failed = await flou.settle("n", timeout=10)

    assert [f["label"] for f in answer.fired] == ["enter"]
    # The transition committed alone; the worker took the execute, which failed on the limit.
    assert store.since(mark) == [[TRANSITIONED], [EventKind.FAILED]]
    assert failed.errors[0].fqn == "nest.sub"
    assert "max_state_bytes" in failed.errors[0].message


async def test_a_transition_queued_by_code_commits_with_the_run(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store) as flou:
        mark = len(store.commits)
        started = await flou.start("auto", instance_id="a", wait=WaitMode.SETTLED)
        at_start = store.since(mark)
        mark = len(store.commits)
        await flou.transition("a", "again")
        again = await flou.settle("a", timeout=10)
        history = await flou.history("a", started.revision + 1)

    # The root's execute, then kick's run with the move it made and rest's execute.
    assert at_start == [[EXECUTED], [EXECUTED, TRANSITIONED, EXECUTED]]
    # `again` enters kick, whose code runs on its own: then as at the start.
    assert store.since(mark) == [[TRANSITIONED], [EXECUTED, TRANSITIONED, EXECUTED]]
    assert started.active_states == ("auto", "auto.rest")
    assert again.active_states == ("auto", "auto.rest")
    moved = [e for e in history if e.kind == TRANSITIONED and e.item["label"] == "next"]
    assert [f["label"] for f in moved[0].fired] == ["next"]
    assert moved[0].item["payload"] == {"from": "kick"}


async def test_a_transition_queued_by_code_that_cannot_fire_is_rejected_in_turn(database_url):
    store = Commits(open_store(database_url))
    async with runtime(store) as flou:
        await flou.start("auto", instance_id="s", wait=WaitMode.SETTLED)
        mark = len(store.commits)
        await flou.transition("s", "stray")
        settled = await flou.settle("s", timeout=10)
        history = await flou.history("s")

    assert store.since(mark) == [[TRANSITIONED], [EXECUTED], [EventKind.REJECTED]]
    assert history[-1].rejection is not None
    assert history[-1].item["label"] == "nowhere"
    assert settled.active_states == ("auto", "auto.stray")


class Kinds(Observer):
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def step_committed(self, kind: str) -> None:
        self.kinds.append(kind)


async def test_each_chained_step_is_counted_as_its_kind(database_url):
    observer = Kinds()
    async with runtime(Commits(open_store(database_url)), observer=observer) as flou:
        await flou.start("auto", instance_id="k", wait=WaitMode.SETTLED)
        history = await flou.history("k")

    stepped = [e.kind for e in history if e.kind != EventKind.STARTED]
    assert sorted(observer.kinds) == sorted(stepped)
    assert TRANSITIONED in observer.kinds


async def test_a_started_instance_is_worked_on_with_no_claim_and_no_read(database_url):
    store = Commits(open_store(database_url))
    async with AsyncRuntime(store=store, machines=[Nest], poll_interval=60) as flou:  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # the dispatcher's first look: done, and then it waits
        started = await flou.start("nest", instance_id="born")
        async with asyncio.timeout(5):  # read as `instance`: only the worker reads a head
            while (await asyncio.to_thread(store.instance, "born")).revision < 3:
                await asyncio.sleep(0.01)
        history = await flou.history("born")
        claimed, heads = list(store.claimed), list(store.heads)  # closing wakes the worker

    assert started.revision == 1
    # The root's execute, with its first state's chained: the worker's one step.
    assert [(e.revision, e.kind) for e in history] == [
        (1, EventKind.STARTED),
        (2, EXECUTED),
        (3, EXECUTED),
    ]
    assert "born" not in claimed
    assert "born" not in heads


async def test_with_no_worker_slot_free_a_lingering_worker_makes_room(database_url):
    store = Commits(open_store(database_url))
    options = {"poll_interval": 60, "max_workers": 1, "linger": 5}
    async with AsyncRuntime(store=store, machines=[Nest], **options) as flou:  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # the dispatcher's first look: done, and then it waits
        await flou.start("nest", instance_id="first", wait=WaitMode.SETTLED)  # its worker lingers
        await flou.start("nest", instance_id="second")  # no slot: queued for a claim
        second = await flou.settle("second", timeout=2)  # not after the 5 s of lingering
        claimed = list(store.claimed)

    assert "first" not in claimed
    assert "second" in claimed  # once the first worker gave its slot up
    assert second.active_states == ("nest", "nest.wait")


async def test_a_poll_with_no_work_waiting_evicts_no_lingering_worker(database_url):
    options = {"poll_interval": 0.1, "max_workers": 1, "linger": 5}
    async with AsyncRuntime(database_url, machines=[Nest], **options) as flou:  # type: ignore[arg-type]
        await flou.start("nest", instance_id="held", wait=WaitMode.SETTLED)
        await asyncio.sleep(0.6)  # several polls, every slot taken, nothing to claim
        held = flou.leased_instances

    assert held == 1
