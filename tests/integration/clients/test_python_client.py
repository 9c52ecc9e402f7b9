"""flou-client against a real `flou-grpc serve` process on a real SQLite file; no mocks.

Every method of `FlouClient` (and `AsyncFlouClient`), request-id retry safety,
the typed errors with their reasons, retries on UNAVAILABLE, and Watch resuming
with no gap and no duplicate after the server closed a slow watcher and after a
server restart.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid

import flou_client
import grpc
import pytest
from flou_client import (
    AsyncFlouClient,
    Event,
    EventKind,
    FlouClient,
    Heartbeat,
    Instance,
    InstanceStatus,
    NodeKind,
    RetryPolicy,
    WaitMode,
)

from tests.server_process import ServerProcess


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- every RPC --------------------------------------------------------------------------


def test_start_get_and_list(client: FlouClient):
    instance_id = _id("shop")
    started = client.start("shop", {"user": "ada"}, instance_id=instance_id, wait="settled")
    assert isinstance(started, Instance)
    assert (started.id, started.machine, started.status) == (
        instance_id,
        "shop",
        InstanceStatus.WAITING,
    )
    assert started.active_states == ("shop", "shop.browse")
    assert started.state is not None
    assert started.state["browse"]["runs"] == [{"user": "ada"}]
    assert started.create_time is not None

    full = client.get_instance(instance_id)
    assert full.revision == started.revision
    assert full.state == started.state
    basic = client.get_instance(instance_id, view="basic")
    assert basic.state is None
    assert basic.revision == started.revision

    mine = [i.id for i in client.iter_instances(machine="shop", page_size=1)]
    assert instance_id in mine
    assert all(i.machine == "shop" for i in client.list_instances(machine="shop").instances)
    waiting = client.list_instances(machine="shop", status=InstanceStatus.WAITING).instances
    assert instance_id in [i.id for i in waiting]
    assert instance_id not in [i.id for i in client.list_instances(status="completed").instances]


def test_start_without_an_id_gets_a_uuid(client: FlouClient):
    started = client.start("linear")
    assert uuid.UUID(started.id).version == 4


def test_transition_wait_modes_and_fired(client: FlouClient):
    instance_id = client.start("shop", instance_id=_id("t"), wait="settled").id
    result = client.transition(instance_id, "checkout", {"card": "visa"}, wait=WaitMode.SETTLED)
    assert [(f.machine, f.label, f.sources, f.targets) for f in result.fired] == [
        ("shop", "checkout", ("shop.browse",), ("shop.payment",))
    ]
    assert result.instance.active_states == ("shop", "shop.payment", "shop.payment.charge")
    assert result.work_item_id
    enqueued = client.transition(
        instance_id, "ok", namespace="shop.payment", wait=WaitMode.ENQUEUED
    )
    assert enqueued.fired == ()
    assert enqueued.work_item_id
    # `receipt` fires `paid` on the shop itself: the instance reaches `shipped`.
    for _ in range(100):
        if "shop.shipped" in client.get_instance(instance_id).active_states:
            break
        time.sleep(0.05)
    assert "shop.shipped" in client.get_instance(instance_id).active_states


def test_params_lanes(client: FlouClient):
    instance_id = client.start("hub_lanes", wait="settled").id
    result = client.transition(
        instance_id, "spawn_{k}", params=[{"k": "a"}, {"k": 7}], wait="settled"
    )
    assert "hub_lanes.first_a" in result.instance.active_states
    assert "hub_lanes.first_7" in result.instance.active_states


def test_update_state_append_and_history(client: FlouClient):
    instance_id = client.start("linear", wait="settled").id
    updated = client.update_state(instance_id, {"order": {"total": 1}, "tags": []})
    assert updated.instance.state is not None
    assert updated.instance.state["order"] == {"total": 1}
    client.update_state(instance_id, {"order.total": 12.5})
    appended = client.atomic_append(instance_id, "tags", "urgent")
    assert appended.values == ["urgent"]
    again = client.atomic_append(instance_id, "tags", {"by": "ops"})
    assert again.values == ["urgent", {"by": "ops"}]
    assert again.revision == appended.revision + 1
    counted = client.atomic_append(instance_id, "tags", "third", values=False)
    assert (counted.values, counted.length, counted.revision) == ([], 3, again.revision + 1)
    leaf = client.atomic_append(instance_id, "runs", {"manual": True}, fqn="linear.a")
    assert leaf.values[-1] == {"manual": True}

    state = client.get_instance(instance_id).state
    assert state is not None
    assert (state["order"], state["tags"]) == ({"total": 12.5}, ["urgent", {"by": "ops"}, "third"])

    page = client.get_history(instance_id, page_size=2)
    assert [e.revision for e in page.events] == [1, 2]
    assert page.next_page_token
    assert page.current_revision == leaf.revision
    events = list(client.iter_history(instance_id, page_size=2))
    assert [e.revision for e in events] == list(range(1, leaf.revision + 1))
    assert events[0].kind is EventKind.STARTED
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.STATE_UPDATED) == 2
    assert kinds.count(EventKind.APPENDED) == 4
    assert all(isinstance(op, dict) and "op" in op for e in events for op in e.patch)
    later = list(client.iter_history(instance_id, from_revision=leaf.revision - 1))
    assert [e.revision for e in later] == [leaf.revision - 1, leaf.revision]


def test_retry_errors_with_nothing_failed(client: FlouClient):
    instance_id = client.start("linear", wait="settled").id
    result = client.retry_errors(instance_id)
    assert result.retried_work_item_ids == ()
    assert result.instance.id == instance_id


def test_list_and_describe_machines(client: FlouClient):
    page = client.list_machines()
    names = [m.name for m in page.machines]
    assert names == sorted(names)
    assert {"linear", "shop", "deep", "hub_lanes"} <= set(names)
    assert all(m.root is None for m in page.machines)

    deep = client.describe_machine("deep")
    assert deep.root is not None
    assert (deep.root.name, deep.root.kind, deep.root.init) == (
        "deep",
        NodeKind.MACHINE,
        ("outer",),
    )
    outer = next(c for c in deep.root.children if c.name == "outer")
    inner = next(c for c in outer.children if c.name == "inner")
    assert inner.fqn == "deep.outer.inner"
    assert [(t.label, t.sources, t.targets) for t in inner.transitions] == [("go", ("a",), ("b",))]


# --- request ids: retries are safe ---------------------------------------------------------


def test_the_same_request_id_twice_has_one_effect(client: FlouClient):
    instance_id = _id("idem")
    request_id = str(uuid.uuid4())
    first = client.start(
        "self_loop", instance_id=instance_id, request_id=request_id, wait="settled"
    )
    second = client.start("self_loop", instance_id=instance_id, request_id=request_id)
    assert second.id == first.id

    again = str(uuid.uuid4())
    one = client.transition(instance_id, "again", {"n": 1}, request_id=again, wait="settled")
    two = client.transition(instance_id, "again", {"n": 1}, request_id=again, wait="settled")
    assert two.work_item_id == one.work_item_id

    append_id = str(uuid.uuid4())
    a = client.atomic_append(instance_id, "runs", "x", request_id=append_id)
    b = client.atomic_append(instance_id, "runs", "x", request_id=append_id)
    assert (b.values, b.revision) == (a.values, a.revision)

    events = list(client.iter_history(instance_id))
    assert [e.kind for e in events].count(EventKind.TRANSITIONED) == 1
    assert [e.kind for e in events].count(EventKind.APPENDED) == 1
    assert sum(1 for e in events if e.request_id == again) == 1
    state = client.get_instance(instance_id).state
    assert state is not None
    assert state["runs"].count("x") == 1


def test_every_mutation_carries_a_fresh_request_id(client: FlouClient):
    instance_id = client.start("self_loop", wait="settled").id
    client.transition(instance_id, "again", {"n": 1}, wait="settled")
    client.transition(instance_id, "again", {"n": 1}, wait="settled")  # same body: not a retry
    events = list(client.iter_history(instance_id))
    transitioned = [e for e in events if e.kind is EventKind.TRANSITIONED]
    assert len(transitioned) == 2
    ids = {e.request_id for e in transitioned}
    assert len(ids) == 2
    assert all(uuid.UUID(i).version == 4 for i in ids)


# --- typed errors -------------------------------------------------------------------------------


def test_unknown_machine_is_not_found(client: FlouClient):
    with pytest.raises(flou_client.MachineNotFoundError) as caught:
        client.start("no_such_machine")
    error = caught.value
    assert isinstance(error, flou_client.NotFoundError)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_MACHINE_NOT_FOUND"
    assert error.metadata == {"machine": "no_such_machine"}
    assert error.domain == "flou.v1"
    with pytest.raises(flou_client.MachineNotFoundError):
        client.describe_machine("no_such_machine")


def test_unknown_instance_is_not_found_with_its_resource(client: FlouClient):
    with pytest.raises(flou_client.InstanceNotFoundError) as caught:
        client.get_instance("nobody")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert caught.value.metadata == {"instanceId": "nobody"}
    assert caught.value.resource is not None
    assert caught.value.resource.resource_name == "nobody"
    for call in (
        lambda: client.transition("nobody", "go"),
        lambda: client.update_state("nobody", {"a": 1}),
        lambda: client.atomic_append("nobody", "runs", 1),
        lambda: client.get_history("nobody"),
        lambda: client.retry_errors("nobody"),
    ):
        with pytest.raises(flou_client.InstanceNotFoundError):
            call()


def test_transition_not_allowed_is_failed_precondition(client: FlouClient):
    instance_id = client.start("linear", wait="settled").id
    with pytest.raises(flou_client.TransitionNotAllowedError) as caught:
        client.transition(instance_id, "nope")
    error = caught.value
    assert isinstance(error, flou_client.FailedPreconditionError)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
    assert error.metadata["label"] == "nope"
    assert error.metadata["activeStates"] == "linear,linear.a"
    assert "FAILED_PRECONDITION ERROR_REASON_TRANSITION_NOT_ALLOWED" in str(error)


def test_revision_conflict_is_aborted(client: FlouClient):
    instance = client.start("linear", wait="settled")
    with pytest.raises(flou_client.RevisionConflictError) as caught:
        client.transition(instance.id, "go", expected_revision=instance.revision - 1)
    assert caught.value.code is grpc.StatusCode.ABORTED
    assert caught.value.metadata["currentRevision"] == str(instance.revision)
    # The refused transition is in the history (a `rejected` event, one revision):
    # re-read, then re-apply.
    current = client.get_instance(instance.id, view="basic").revision
    assert current == instance.revision + 1
    fired = client.transition(instance.id, "go", expected_revision=current)
    assert fired.fired


def test_invalid_fields_name_the_field(client: FlouClient):
    instance_id = client.start("linear", wait="settled").id
    with pytest.raises(flou_client.InvalidArgumentError) as caught:
        client.transition(instance_id, "Not A Label")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations
    assert caught.value.field_violations[0].field == "label"
    with pytest.raises(flou_client.AlreadyExistsError):
        client.start("linear", instance_id=instance_id)


def test_a_request_id_reused_with_another_body_is_refused(client: FlouClient):
    instance_id = client.start("self_loop", wait="settled").id
    request_id = str(uuid.uuid4())
    client.transition(instance_id, "again", {"n": 1}, request_id=request_id)
    with pytest.raises(flou_client.RequestIdReusedError) as caught:
        client.transition(instance_id, "again", {"n": 2}, request_id=request_id)
    assert caught.value.metadata == {"requestId": request_id}


def test_json_that_protobuf_cannot_carry_is_refused_before_sending(client: FlouClient):
    with pytest.raises(TypeError, match=r"payload\.when"):
        client.start("linear", {"when": object()})


# --- retries on UNAVAILABLE --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_fails_unavailable_within_the_deadline():
    port = _free_port()
    with FlouClient(f"127.0.0.1:{port}", timeout=0.6) as client:
        started = time.monotonic()
        with pytest.raises(flou_client.UnavailableError) as caught:
            client.list_machines()
        elapsed = time.monotonic() - started
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert elapsed < 1.5


def test_a_call_made_while_the_server_is_down_is_retried_until_it_is_up(tmp_path):
    port = _free_port()
    server = ServerProcess(tmp_path / "late.db", port=port)
    retry = RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.3)
    with FlouClient(f"127.0.0.1:{port}", timeout=30, retry=retry) as client:
        starter = threading.Timer(0.3, server.start)
        starter.start()
        try:
            instance = client.start("linear", instance_id="late", wait="settled")
        finally:
            starter.join()
        try:
            assert instance.id == "late"
            events = list(client.iter_history("late"))
            assert [e.kind for e in events].count(EventKind.STARTED) == 1
        finally:
            server.stop()


# --- watch -------------------------------------------------------------------------------------


def test_watch_yields_the_snapshot_then_every_event_live(client: FlouClient):
    instance_id = client.start("self_loop", wait="settled").id
    stream = client.watch(instance_id, heartbeat_interval=0.2)
    snapshot = next(stream)
    assert isinstance(snapshot, Instance)
    assert snapshot.id == instance_id
    for n in range(3):
        client.transition(instance_id, "again", {"n": n}, wait="enqueued")
    seen: list[Event] = []
    heartbeats = 0
    for item in stream:
        if isinstance(item, Heartbeat):
            heartbeats += 1
        else:
            assert isinstance(item, Event)
            seen.append(item)
        if len(seen) >= 6 and heartbeats:  # 3 transitions, each re-running `loop`
            break
    stream.close()
    revisions = [e.revision for e in seen]
    assert revisions == list(range(snapshot.revision + 1, snapshot.revision + 1 + len(seen)))
    assert [e.kind for e in seen].count(EventKind.TRANSITIONED) == 3


def test_watch_from_a_past_revision_replays_history(client: FlouClient):
    instance_id = client.start("linear", wait="settled").id
    client.transition(instance_id, "go", wait="settled")
    current = client.get_instance(instance_id).revision
    stream = client.watch(instance_id, from_revision=1)
    snapshot = next(stream)
    assert isinstance(snapshot, Instance)
    assert snapshot.revision == 1
    events = [next(stream) for _ in range(current - 1)]
    stream.close()
    assert [e.revision for e in events if isinstance(e, Event)] == list(range(2, current + 1))


def test_watch_of_an_unknown_instance_raises_at_once(client: FlouClient):
    with pytest.raises(flou_client.InstanceNotFoundError):
        next(client.watch("nobody"))


def test_watch_instances_is_a_live_feed_of_one_machines_events(client: FlouClient):
    feed = client.watch_instances(machine="chain_reversed", heartbeat_interval=0.2)
    assert isinstance(next(feed), Heartbeat)  # the feed is open: nothing happened yet
    first = client.start("chain_reversed", wait="settled").id
    client.start("linear", wait="settled")  # another machine: not in this feed
    second = client.start("chain_reversed", wait="settled").id
    seen: dict[str, list[int]] = {first: [], second: []}
    deadline = time.monotonic() + 15
    for item in feed:
        if isinstance(item, Event):
            seen[item.instance_id].append(item.revision)
        if all(len(r) == 3 for r in seen.values()) or time.monotonic() > deadline:
            break
    feed.close()
    assert seen == {first: [1, 2, 3], second: [1, 2, 3]}


def _collect(stream, count, within=15.0):
    """`count` events from a watch (with heartbeats on), and how many snapshots came with them."""
    events, snapshots = [], 0
    deadline = time.monotonic() + within
    for item in stream:
        if isinstance(item, Instance):
            snapshots += 1
        elif isinstance(item, Event):
            events.append(item)
            if len(events) == count:
                return events, snapshots
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(events)} events of {count} in {within}s: {events}")
    raise AssertionError("the watch ended")


def test_watch_resumes_after_the_server_closed_it_as_too_slow(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flou_client")
    server = ServerProcess(tmp_path / "slow.db", env={"FLOU_WATCH_BUFFER": "1"}).start()
    try:
        # No BDP probing: the stream's flow-control window stays small, so a watcher
        # that stops reading makes the server's buffer overflow after a few events.
        options = [("grpc.http2.bdp_probe", 0)]
        with (
            FlouClient(server.address, timeout=20) as writer,
            FlouClient(server.address, options=options) as reader,
        ):
            instance_id = writer.start("self_loop", wait="settled").id
            stream = reader.watch(instance_id, heartbeat_interval=0.2)
            snapshot = next(stream)
            blob = "x" * 40_000
            for n in range(12):
                writer.transition(instance_id, "again", {"n": n, "blob": blob}, wait="settled")
            current = writer.get_instance(instance_id, view="basic").revision
            events, snapshots = _collect(stream, current - snapshot.revision)
            stream.close()
    finally:
        server.stop()
    assert snapshots == 0  # the snapshot was delivered once, before
    assert [e.revision for e in events] == list(range(snapshot.revision + 1, current + 1))
    assert "ERROR_REASON_WATCHER_TOO_SLOW" in caplog.text


def test_watch_resumes_across_a_server_restart_with_no_gap_and_no_duplicate(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flou_client")
    database = tmp_path / "restart.db"
    first = ServerProcess(database).start()
    port = first.port
    retry = RetryPolicy(max_attempts=40, initial_backoff=0.05, max_backoff=0.5)
    with FlouClient(first.address, timeout=20, retry=retry) as client:
        instance_id = client.start("self_loop", wait="settled").id
        stream = client.watch(instance_id, heartbeat_interval=0.2)
        snapshot = next(stream)
        client.transition(instance_id, "again", {"n": 0}, wait="settled")
        before, _ = _collect(stream, 2)  # the transition and loop's run
        assert first.stop() == 0  # graceful: the stream ends UNAVAILABLE SHUTTING_DOWN
        second = ServerProcess(database, port=port).start()
        try:
            # Events committed while nobody watches are replayed when the watch resumes.
            for n in range(1, 4):
                client.transition(instance_id, "again", {"n": n}, wait="settled")
            current = client.get_instance(instance_id, view="basic").revision
            after, snapshots = _collect(stream, current - before[-1].revision)
            stream.close()
        finally:
            second.stop()
    revisions = [e.revision for e in before + after]
    assert revisions == list(range(snapshot.revision + 1, current + 1))
    assert snapshots == 0
    assert "resuming after revision" in caplog.text


# --- asyncio ---------------------------------------------------------------------------------


async def test_async_client_calls_errors_and_watch(server: ServerProcess):
    async with AsyncFlouClient(server.address, timeout=20) as client:
        instance = await client.start("shop", {"user": "bob"}, wait="settled")
        assert instance.active_states == ("shop", "shop.browse")
        result = await client.transition(instance.id, "checkout", wait="settled")
        assert [f.label for f in result.fired] == ["checkout"]
        updated = await client.update_state(instance.id, {"note": "hi"})
        assert updated.instance.state is not None
        assert updated.instance.state["note"] == "hi"
        appended = await client.atomic_append(instance.id, "runs", 1)
        assert appended.values[-1] == 1
        assert (await client.get_instance(instance.id, view="basic")).state is None
        listed = [i.id async for i in client.iter_instances(machine="shop")]
        assert instance.id in listed
        history = [e.revision async for e in client.iter_history(instance.id)]
        assert history == list(range(1, appended.revision + 1))
        assert (await client.retry_errors(instance.id)).retried_work_item_ids == ()
        assert "shop" in [m.name for m in (await client.list_machines()).machines]
        assert (await client.describe_machine("shop")).root is not None
        with pytest.raises(flou_client.TransitionNotAllowedError):
            await client.transition(instance.id, "nope")
        with pytest.raises(flou_client.MachineNotFoundError):
            await client.start("no_such_machine")

        stream = client.watch(instance.id, from_revision=appended.revision)
        snapshot = await anext(stream)
        assert isinstance(snapshot, Instance)
        assert snapshot.revision == appended.revision
        rejected = await anext(stream)  # the refused `nope` is in the history
        assert isinstance(rejected, Event)
        assert rejected.kind is EventKind.REJECTED
        assert rejected.rejection is not None
        assert rejected.rejection.reason == "ERROR_REASON_TRANSITION_NOT_ALLOWED"
        await client.update_state(instance.id, {"note": "again"})
        event = await anext(stream)
        assert isinstance(event, Event)
        assert (event.revision, event.kind) == (appended.revision + 2, EventKind.STATE_UPDATED)
        await stream.aclose()

        feed = client.watch_instances(machine="any_one", heartbeat_interval=0.2)
        assert isinstance(await anext(feed), Heartbeat)
        started = await client.start("any_one", wait="settled")
        revisions = []
        while len(revisions) < started.revision:
            item = await anext(feed)
            if isinstance(item, Event):
                assert item.instance_id == started.id
                revisions.append(item.revision)
        await feed.aclose()
        assert revisions == list(range(1, started.revision + 1))
