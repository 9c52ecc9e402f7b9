"""The embedded Runtime on the in-memory store: mailboxes, waits, retries, watches, requests."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flou_grpc import LTM, AsyncRuntime, Registry, Runtime, WaitMode
from flou_grpc.engine import apply_patch
from flou_grpc.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidFieldError,
    MachineNotFoundError,
    RequestIdReusedError,
    RevisionConflictError,
    RevisionOutOfRangeError,
    StateKeyNotFoundError,
    StateKeyNotListError,
    TransitionNotAllowedError,
)
from flou_grpc.runtime import EventKind, Instance, InstanceStatus, default_runtime
from flou_grpc.runtime.default import close_default_runtime


class Idle(LTM):
    name = "idle"


class Busy(LTM):
    name = "busy"

    def run(self, **payload):
        self.root.update_state({"jobs": [*self.root.state["jobs"], payload.get("job")]})
        self.transition("finish")


class Door(LTM):
    """A door that can be opened and closed."""

    name = "door"
    init = [Idle]
    transitions = [
        {"from": Idle, "label": "work", "to": Busy},
        {"from": Busy, "label": "finish", "to": Idle},
    ]

    def get_initial_state(self):
        return {"jobs": [], "log": [], "meta": {"owner": "nobody"}}


class Flaky(LTM):
    name = "flaky"
    retries = 2
    failures_left = 0
    attempts = 0

    def run(self, **payload):
        type(self).attempts += 1
        self.atomic_state_append("seen", type(self).attempts)
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            raise ValueError("boom")


class FlakyState(Flaky):
    name = "flaky"

    def get_initial_state(self):
        return {"seen": []}


class RetryingMachine(LTM):
    name = "retrying"
    init = [FlakyState]


class Sleeper(LTM):
    name = "sleeper"

    def run(self, **payload):
        time.sleep(payload["seconds"])
        self.update_state({"slept": payload["seconds"]})


class Napping(LTM):
    name = "napping"
    init = [Sleeper]


class AsyncStep(LTM):
    name = "async_step"

    async def run(self, **payload):
        await asyncio.sleep(0.01)
        self.root.update_state({"async_done": payload["value"]})


class AsyncMachine(LTM):
    name = "async_machine"
    init = [AsyncStep]

    def get_initial_state(self):
        return {"async_done": None}


@pytest.fixture
def runtime(database_url):
    with Runtime(
        database_url,
        machines=[Door, RetryingMachine, Napping, AsyncMachine],
        retry_delay=0.01,
    ) as opened:
        yield opened


def _replay(runtime, instance_id):
    doc = {}
    for event in runtime.history(instance_id):
        doc = apply_patch(doc, event.patch)
    return doc


def test_start_runs_the_root_and_its_init_children(runtime):
    started = runtime.start("door", wait=WaitMode.SETTLED)
    assert started.status is InstanceStatus.WAITING
    assert started.active_states == ("door", "door.idle")
    assert [e.kind for e in runtime.history(started.id)] == [
        EventKind.STARTED,
        EventKind.EXECUTED,
        EventKind.EXECUTED,
    ]
    assert started.revision == 3
    assert _replay(runtime, started.id) == started.state


def test_transition_waits_until_processed_and_reports_what_fired(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    result = runtime.transition(door.id, "work", {"job": "paint"})
    assert result.fired == [
        {
            "machine": "door",
            "label": "work",
            "namespace": "door",
            "sources": ["door.idle"],
            "targets": ["door.busy"],
        }
    ]
    assert result.instance.state["busy"]["_status"] == "queued"
    settled = runtime.settle(door.id)
    assert settled.state["jobs"] == ["paint"]
    assert settled.active_states == ("door", "door.idle")
    assert _replay(runtime, door.id) == settled.state


def test_transition_enqueued_answers_before_processing(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    result = runtime.transition(door.id, "work", {"job": "a"}, wait=WaitMode.ENQUEUED)
    assert result.fired == []
    assert result.work_item_id
    settled = runtime.settle(door.id)
    processed = [e for e in runtime.history(door.id) if e.kind is EventKind.TRANSITIONED]
    assert processed[0].item["work_item_id"] == result.work_item_id
    assert settled.state["jobs"] == ["a"]


def test_transition_settled_answers_once_everything_ran(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    result = runtime.transition(door.id, "work", {"job": "b"}, wait=WaitMode.SETTLED)
    assert result.instance.pending_work_count == 0
    assert result.instance.state["jobs"] == ["b"]


def test_transitions_are_processed_in_order_one_at_a_time(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    for job in ("a", "b", "c"):
        runtime.transition(door.id, "work", {"job": job}, wait=WaitMode.ENQUEUED)
        runtime.transition(door.id, "finish", wait=WaitMode.ENQUEUED)
    settled = runtime.settle(door.id)
    # Every `work` runs Busy, whose own `finish` is queued behind the external one:
    # the FIFO order decides which transitions find their source active.
    kinds = [e.kind for e in runtime.history(door.id)]
    assert [e.revision for e in runtime.history(door.id)] == list(range(1, len(kinds) + 1))
    assert settled.state["jobs"][0] == "a"
    assert _replay(runtime, door.id) == settled.state


def test_transition_not_allowed_is_rejected_and_recorded(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    with pytest.raises(TransitionNotAllowedError) as caught:
        runtime.transition(door.id, "finish")
    assert caught.value.active_states == ("door", "door.idle")
    rejected = runtime.history(door.id)[-1]
    assert rejected.kind is EventKind.REJECTED
    assert rejected.patch == []
    assert rejected.rejection["reason"] == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert runtime.get(door.id).state == door.state


def test_enqueued_transition_that_cannot_fire_reaches_history(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    runtime.transition(door.id, "nothing_declares_this", wait=WaitMode.ENQUEUED)
    runtime.settle(door.id)
    assert runtime.history(door.id)[-1].kind is EventKind.REJECTED


def test_expected_revision_mismatch_is_a_conflict(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    with pytest.raises(RevisionConflictError) as caught:
        runtime.transition(door.id, "work", expected_revision=door.revision - 1)
    assert (caught.value.expected_revision, caught.value.current_revision) == (2, 3)
    result = runtime.transition(door.id, "work", expected_revision=door.revision + 1)
    assert result.fired  # the rejection above was revision 4


def test_update_state_sets_dotted_keys_in_order(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    updated = runtime.update_state(door.id, {"meta.owner": "ana", "meta": {"x": 1}})
    assert updated.state["meta"] == {"x": 1, "owner": "ana"}
    with pytest.raises(StateKeyNotFoundError):
        runtime.update_state(door.id, {"missing.key": 1})
    with pytest.raises(InvalidFieldError):
        runtime.update_state(door.id, {"idle": 1})
    with pytest.raises(InvalidFieldError):
        runtime.update_state(door.id, {"_status": "completed"})
    node = runtime.update_state(door.id, {"note": "hi"}, fqn="door.idle")
    assert node.state["idle"]["note"] == "hi"
    rooted = runtime.update_state(door.id, {"meta.owner": "bo"}, fqn=None)  # None: the root
    assert rooted.state["meta"]["owner"] == "bo"
    assert runtime.atomic_append(door.id, "log", 1, fqn=None).values == [1]


def test_atomic_append_returns_the_list_and_loses_nothing_under_concurrency(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: runtime.atomic_append(door.id, "log", i), range(64)))
    final = runtime.get(door.id).state["log"]
    assert sorted(final) == list(range(64))
    assert sorted(r.revision for r in results) == list(range(4, 68))
    assert max(len(r.values) for r in results) == 64
    with pytest.raises(StateKeyNotListError):
        runtime.atomic_append(door.id, "meta", 1)
    with pytest.raises(StateKeyNotFoundError):
        runtime.atomic_append(door.id, "absent", 1)


def test_request_id_makes_mutations_idempotent(runtime):
    first = runtime.start("door", {"a": 1}, "req-1", wait=WaitMode.SETTLED)
    again = runtime.start("door", {"a": 1}, "req-1")
    assert again == first
    assert len(runtime.list_instances("door")) == 1
    with pytest.raises(RequestIdReusedError):
        runtime.start("door", {"a": 2}, "req-1")
    appended = runtime.atomic_append(first.id, "log", "x", request_id="req-2")
    assert runtime.atomic_append(first.id, "log", "x", request_id="req-2") == appended
    assert runtime.get(first.id).state["log"] == ["x"]


async def test_concurrent_duplicates_of_one_request_take_effect_once(database_url):
    async with AsyncRuntime(database_url, machines=[Door]) as runtime:
        door = await runtime.start("door", wait=WaitMode.SETTLED)
        results = await asyncio.gather(
            *(runtime.atomic_append(door.id, "log", 1, request_id="same") for _ in range(10))
        )
        assert len({r.revision for r in results}) == 1
        assert (await runtime.get(door.id)).state["log"] == [1]


def test_a_failing_run_is_retried_then_its_node_errors_then_retry_errors_resumes(runtime):
    FlakyState.failures_left, FlakyState.attempts = 10, 0
    instance = runtime.start("retrying", wait=WaitMode.SETTLED)
    assert instance.status is InstanceStatus.FAILED
    assert instance.state["flaky"]["_status"] == "error"
    (error,) = instance.errors
    assert (error.fqn, error.attempts, error.retrying) == ("retrying.flaky", 3, False)
    assert error.type == "builtins.ValueError"
    assert "raise ValueError" in error.traceback
    assert runtime.history(instance.id)[-1].kind is EventKind.FAILED
    # Appends are deduplicated per (work item, call number): the three attempts made the
    # same first call, so only the first attempt's value is in the list.
    assert instance.state["flaky"]["seen"] == [1]
    assert FlakyState.attempts == 3
    FlakyState.failures_left = 0
    _, retried = runtime.retry_errors(instance.id)
    assert retried == [error.work_item_id]
    resumed = runtime.settle(instance.id)
    assert resumed.status is InstanceStatus.WAITING
    assert resumed.state["flaky"]["_status"] == "active"
    assert resumed.errors == ()
    assert _replay(runtime, instance.id) == resumed.state


def test_a_run_that_succeeds_on_retry_leaves_no_error(runtime):
    FlakyState.failures_left, FlakyState.attempts = 1, 0
    instance = runtime.start("retrying", wait=WaitMode.SETTLED)
    assert instance.status is InstanceStatus.WAITING
    assert instance.errors == ()
    assert instance.state["flaky"]["seen"] == [1]
    assert FlakyState.attempts == 2


def test_async_run_is_awaited(runtime):
    instance = runtime.start("async_machine", {"value": 42}, wait=WaitMode.SETTLED)
    assert instance.state["async_done"] == 42


def test_instances_run_concurrently(runtime):
    started = time.perf_counter()
    ids = [runtime.start("napping", {"seconds": 0.3}).id for _ in range(4)]
    for instance_id in ids:
        assert runtime.settle(instance_id).state["sleeper"]["slept"] == 0.3
    assert time.perf_counter() - started < 1.0  # 4 x 0.3 s in series would be 1.2 s


def test_watch_sends_the_snapshot_then_every_event_and_resumes(runtime):
    door = runtime.start("door", wait=WaitMode.SETTLED)
    stream = runtime.watch(door.id, timeout=5)
    snapshot = next(stream)
    assert isinstance(snapshot, Instance)
    assert snapshot.revision == 3

    def drive():
        runtime.transition(door.id, "work", {"job": "w"})

    thread = threading.Thread(target=drive)
    thread.start()
    seen = [next(stream) for _ in range(3)]
    thread.join()
    stream.close()
    assert [e.revision for e in seen] == [4, 5, 6]
    assert [e.kind for e in seen] == [
        EventKind.TRANSITIONED,
        EventKind.EXECUTED,
        EventKind.TRANSITIONED,
    ]
    resumed = runtime.watch(door.id, from_revision=4, timeout=5)
    old = next(resumed)
    assert old.revision == 4
    assert old.state == apply_patch(
        apply_patch(snapshot.state, []), runtime.history(door.id, 4)[0].patch
    )
    assert next(resumed).revision == 5
    resumed.close()
    with pytest.raises(RevisionOutOfRangeError):
        next(runtime.watch(door.id, from_revision=99))


def test_unknown_names_fail_clearly(runtime):
    with pytest.raises(MachineNotFoundError):
        runtime.start("nope")
    with pytest.raises(InstanceNotFoundError):
        runtime.transition("missing", "work")
    with pytest.raises(InvalidFieldError) as caught:
        runtime.start("door", instance_id="bad id!")
    assert caught.value.violations[0].field == "instance_id"
    runtime.start("door", instance_id="order-1")
    with pytest.raises(InstanceAlreadyExistsError):
        runtime.start("door", instance_id="order-1")


def test_an_unknown_database_url_is_refused():
    with pytest.raises(ValueError, match="use memory://, sqlite:///path"):
        Runtime("mysql://localhost/db")


def test_ltm_start_uses_the_default_runtime_configured_from_the_environment(tmp_path, monkeypatch):
    database = tmp_path / "default.db"
    monkeypatch.setenv("FLOU_DATABASE_URL", f"sqlite:///{database}")
    close_default_runtime()
    try:
        instance_id = Door().start(job="x")
        instance = default_runtime().settle(instance_id)
    finally:
        close_default_runtime()
    assert instance.machine == "door"
    assert instance.active_states == ("door", "door.idle")
    assert database.exists()


def test_instances_survive_a_restart_of_the_runtime(sqlite_url):
    with Runtime(sqlite_url, machines=[Door]) as first:
        door = first.start("door", wait=WaitMode.SETTLED)
        first.transition(door.id, "work", {"job": "kept"}, wait=WaitMode.SETTLED)
    with Runtime(sqlite_url, machines=[Door]) as second:
        again = second.get(door.id)
        assert again.state["jobs"] == ["kept"]
        assert [e.revision for e in second.history(door.id)] == list(range(1, again.revision + 1))
        second.transition(door.id, "work", {"job": "more"}, wait=WaitMode.SETTLED)
        assert second.get(door.id).state["jobs"] == ["kept", "more"]


def test_registry_imports_a_module_and_registers_its_roots(tmp_path, monkeypatch):
    (tmp_path / "shop_machines.py").write_text(
        "from flou_grpc import LTM\n"
        "class Cart(LTM):\n    name = 'cart'\n"
        "class Shop(LTM):\n    name = 'shop'\n    init = [Cart]\n"
        "class Other(LTM):\n    name = 'other'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    registered = registry.register_module("shop_machines")
    assert sorted(m.name for m in registered) == ["other", "shop"]
    assert "cart" not in registry
    with pytest.raises(ValueError, match="taken"):
        registry.register(type("Shop2", (LTM,), {"name": "shop"}))
