"""The `Store` contract, held against every implementation: memory, SQLite, PostgreSQL.

The first part runs the same tests on the three (`store` fixture); the second
covers what only a database has: durability, migrations, retrying transient
errors (real ones: a locked SQLite file, a killed PostgreSQL connection), and
answers lost with their connection after the commit.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from flou_grpc.engine.work import Execute, Transition, UpdateState
from flou_grpc.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LimitExceededError,
    RevisionConflictError,
    StoreUnavailableError,
)
from flou_grpc.store import migrations
from flou_grpc.store.base import LeaseLostError, MailboxNotEmptyError
from flou_grpc.store.dialects import SqliteDialect
from flou_grpc.store.records import (
    AppendRecord,
    ErrorRecord,
    EventRecord,
    InstanceRecord,
    RequestRecord,
    Snapshot,
    WorkRecord,
)
from flou_grpc.store.retry import RetryPolicy, deadline, run_retrying
from flou_grpc.store.schema import VERSION_TABLE, metadata
from flou_grpc.store.sql import SqlStore

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
STORE_LOGGER = "flou_grpc.store"
TEST_RETRY = RetryPolicy(deadline=10.0)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def instance(instance_id: str = "i-1", machine: str = "door", document=None, at=T0):
    return InstanceRecord(
        instance_id, machine, 0, {"log": []} if document is None else document, at, at
    )


def started(instance_id: str = "i-1") -> EventRecord:
    return EventRecord(
        instance_id, 0, "started", {"kind": "start"}, [{"op": "add", "path": "", "value": {}}]
    )


def step(kind: str = "executed", **fields: Any) -> EventRecord:
    fields.setdefault("patch", [])
    return EventRecord("", 0, kind, {"fqn": "door"}, **fields)


def work(work_id: str, fqn: str = "door") -> WorkRecord:
    return WorkRecord(work_id, Execute(fqn, {"id": work_id}))


def make(store, instance_id="i-1", document=None, work_ids=("w-1",), machine="door", at=T0):
    return store.create(
        instance(instance_id, machine, document, at),
        started(instance_id),
        [work(w) for w in work_ids],
    )


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == STORE_LOGGER and "retrying" in r.getMessage()
    ]


# --- instances ------------------------------------------------------------------------


def test_create_stores_the_instance_at_revision_1_with_its_event_and_work(store):
    created = make(store, document={"log": [], "n": 1}, work_ids=("w-1", "w-2"))

    assert created == replace(instance(document={"log": [], "n": 1}), revision=1)
    assert store.instance("i-1") == created
    [event] = store.events("i-1")
    assert (event.instance_id, event.revision, event.kind) == ("i-1", 1, "started")
    assert event.patch == started().patch
    pending = store.pending("i-1")
    assert [w.id for w in pending] == ["w-1", "w-2"]
    assert 0 < pending[0].seq < pending[1].seq
    assert pending[0].item == Execute("door", {"id": "w-1"})


def test_create_refuses_a_taken_id_and_changes_nothing(store):
    make(store, document={"log": [], "first": True})

    with pytest.raises(InstanceAlreadyExistsError) as caught:
        make(store, document={"other": True}, work_ids=("w-9",))

    assert caught.value.instance_id == "i-1"
    assert store.instance("i-1").document == {"log": [], "first": True}
    assert [w.id for w in store.pending("i-1")] == ["w-1"]
    assert len(store.events("i-1")) == 1


def test_unknown_instance_is_not_found(store):
    with pytest.raises(InstanceNotFoundError) as caught:
        store.instance("nope")
    assert caught.value.instance_id == "nope"


def test_instances_are_listed_newest_first_then_by_id_and_filtered_by_machine(store):
    make(store, "a", at=T0)
    make(store, "b", at=T0 + timedelta(seconds=1), machine="lamp")
    make(store, "c", at=T0 + timedelta(seconds=1))
    make(store, "d", at=T0 - timedelta(seconds=1))

    assert [r.id for r in store.instances()] == ["c", "b", "a", "d"]
    assert [r.id for r in store.instances("door")] == ["c", "a", "d"]
    assert [r.id for r in store.instances("lamp")] == ["b"]
    assert store.instances("none") == []


def test_documents_and_times_round_trip(store):
    document = {
        "text": "héllo ✓ 💥",
        "int": 2**53 + 1,
        "float": 0.1,
        "neg": -3.5,
        "bool": True,
        "null": None,
        "nested": {"list": [1, "two", {"three": [None, False]}], "empty": {}},
        "key.with.dots": [],
        'quote"key': "x",
    }
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 5, 6, 9, 8, 7, 654321, tzinfo=paris)

    created = store.create(instance(document=document, at=at), started(), [])

    found = store.instance("i-1")
    assert found.document == document
    assert found.create_time == at  # the same instant
    assert found.create_time.tzinfo is not None
    assert created.update_time == at


# --- mailboxes ------------------------------------------------------------------------


def test_enqueue_appends_in_order_with_growing_seq(store):
    make(store)

    first = store.enqueue("i-1", [work("w-2"), work("w-3")])
    second = store.enqueue("i-1", [work("w-4")])

    assert [w.id for w in first + second] == ["w-2", "w-3", "w-4"]
    pending = store.pending("i-1")
    assert pending[1:] == first + second
    seqs = [w.seq for w in pending]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 4


def test_enqueue_nothing_returns_nothing(store):
    make(store)
    assert store.enqueue("i-1", []) == []
    assert [w.id for w in store.pending("i-1")] == ["w-1"]


def test_work_items_round_trip(store):
    make(store, work_ids=())
    items = [
        WorkRecord("a", Execute("door.idle", {"x": [1, {"y": None}]})),
        WorkRecord(
            "b",
            Transition("go", "door", ({"i": "1"}, {"i": "2"}), {"p": "q"}),
            request_id="req-1",
            expected_revision=7,
        ),
        WorkRecord("c", UpdateState("door", {"a.b": 1, "c": [True]})),
    ]

    queued = store.enqueue("i-1", items)

    assert [replace(w, seq=0) for w in queued] == items
    assert store.pending("i-1") == queued


def test_enqueue_to_an_unknown_instance_is_not_found(store):
    with pytest.raises(InstanceNotFoundError):
        store.enqueue("nope", [work("w-1")])


def test_head_reads_the_instance_with_the_first_item_of_its_mailbox(store):
    make(store, work_ids=("w-1", "w-2"))

    snapshot = store.head("i-1")
    assert snapshot.instance == store.instance("i-1")
    assert snapshot.next == store.pending("i-1")[0]
    assert (snapshot.pending, snapshot.errors) == (2, ())
    store.discard("i-1", "w-1")
    store.discard("i-1", "w-2")
    assert store.head("i-1") == Snapshot(snapshot.instance, None, 0, ())
    with pytest.raises(InstanceNotFoundError):
        store.head("nope")


def test_pending_of_an_unknown_instance_is_empty(store):
    assert store.pending("nope") == []


def test_discard_removes_one_item_only(store):
    make(store, work_ids=("w-1", "w-2", "w-3"))

    store.discard("i-1", "w-2")
    store.discard("i-1", "w-9")

    assert [w.id for w in store.pending("i-1")] == ["w-1", "w-3"]
    assert store.instance("i-1").revision == 1


# --- commits --------------------------------------------------------------------------


def test_commit_stores_the_step_at_the_next_revision(store):
    make(store, work_ids=("w-1", "w-2"))

    snapshot = store.commit(
        "i-1",
        1,
        {"log": ["one"]},
        step(patch=[{"op": "add", "path": "/log/-", "value": "one"}], request_id="r-1"),
        "w-1",
        [work("w-3")],
    )

    assert snapshot == store.head("i-1")
    assert [snapshot.next, snapshot.pending] == [store.pending("i-1")[0], 2]
    record = snapshot.instance
    assert (record.id, record.machine, record.revision) == ("i-1", "door", 2)
    assert record.document == {"log": ["one"]}
    assert record.create_time == T0
    assert record.update_time > T0
    assert store.instance("i-1") == record
    event = store.events("i-1")[-1]
    assert (event.instance_id, event.revision, event.kind) == ("i-1", 2, "executed")
    assert event.patch == [{"op": "add", "path": "/log/-", "value": "one"}]
    assert event.request_id == "r-1"
    assert [w.id for w in store.pending("i-1")] == ["w-2", "w-3"]


def test_commit_keeps_every_event_field(store):
    make(store)
    event = EventRecord(
        "",
        0,
        "rejected",
        {"kind": "transition", "label": "go"},
        [],
        fired=[{"label": "go", "sources": ["a"]}],
        error={"type": "ValueError", "message": "bad"},
        rejection={"reason": "ERROR_REASON_TRANSITION_NOT_ALLOWED"},
        request_id="req",
        create_time=T0 + timedelta(minutes=1),
    )

    store.commit("i-1", 1, {"log": []}, event, None)

    assert store.events("i-1", 2) == [replace(event, instance_id="i-1", revision=2)]


def test_commit_with_chained_steps_gives_each_its_own_revision(store):
    make(store, work_ids=("w-1",))
    patches = [[{"op": "add", "path": "/log/-", "value": n}] for n in range(3)]

    snapshot = store.commit(
        "i-1",
        1,
        {"log": [0, 1, 2]},
        step("transitioned", patch=patches[0], request_id="r-1"),
        "w-1",
        [work("w-9")],
        chained=[step(patch=patches[1]), step(patch=patches[2])],
    )

    assert snapshot == store.head("i-1")
    assert (snapshot.instance.revision, snapshot.instance.document) == (4, {"log": [0, 1, 2]})
    assert [(e.revision, e.kind, e.patch) for e in store.events("i-1", 2)] == [
        (2, "transitioned", patches[0]),
        (3, "executed", patches[1]),
        (4, "executed", patches[2]),
    ]
    assert [e.request_id for e in store.events("i-1", 2)] == ["r-1", "", ""]
    assert [w.id for w in store.pending("i-1")] == ["w-9"]


@pytest.mark.parametrize("chained", [0, 2])
def test_a_step_taken_alone_answers_its_work_and_the_kept_errors(store, chained):
    make(store, work_ids=())
    store.put_error("i-1", failure("w-0"))

    snapshot = store.commit(
        "i-1",
        1,
        {"log": [1]},
        step(),
        None,
        [work("w-5"), work("w-6")],
        alone=True,
        chained=[step()] * chained,
    )

    assert snapshot == store.head("i-1")
    assert (snapshot.instance.revision, snapshot.pending) == (2 + chained, 2)
    assert snapshot.next is not None
    assert snapshot.next.id == "w-5"
    assert snapshot.errors == (failure("w-0"),)


@pytest.mark.parametrize("done", ["w-1", None])
def test_a_chain_is_refused_while_other_work_is_queued(store, done):
    make(store, work_ids=("w-1", "w-2"))

    with pytest.raises(MailboxNotEmptyError):
        store.commit("i-1", 1, {"log": [1]}, step(), done, [work("w-3")], chained=[step()])

    assert store.instance("i-1").revision == 1
    assert [e.revision for e in store.events("i-1")] == [1]
    assert [w.id for w in store.pending("i-1")] == ["w-1", "w-2"]


def test_commit_without_done_keeps_the_mailbox(store):
    make(store)
    store.commit("i-1", 1, {"log": [1]}, step(), None)
    assert [w.id for w in store.pending("i-1")] == ["w-1"]


def test_commit_at_a_stale_revision_conflicts_and_changes_nothing(store):
    make(store)
    store.commit("i-1", 1, {"log": [1]}, step(), None)

    with pytest.raises(RevisionConflictError) as caught:
        store.commit("i-1", 1, {"log": ["stale"]}, step(), "w-1", [work("w-2")])

    error = caught.value
    assert (error.instance_id, error.expected_revision, error.current_revision) == ("i-1", 1, 2)
    assert store.instance("i-1").document == {"log": [1]}
    assert [w.id for w in store.pending("i-1")] == ["w-1"]
    assert [e.revision for e in store.events("i-1")] == [1, 2]


def test_commit_of_an_item_no_longer_pending_is_refused_and_changes_nothing(store):
    # A runtime that lost its lease mid-step, and got it back after another
    # runtime processed the same item, must not apply the item a second time.
    make(store, work_ids=("w-1", "w-2"))
    assert store.claim("runtime-a", 30, 10) == ["i-1"]
    store.commit("i-1", 1, {"log": ["once"]}, step(), "w-1", owner="runtime-a")

    with pytest.raises(LeaseLostError):
        store.commit("i-1", 2, {"log": ["twice"]}, step(), "w-1", [work("w-3")], "runtime-a")

    assert store.instance("i-1").document == {"log": ["once"]}
    assert [w.id for w in store.pending("i-1")] == ["w-2"]
    assert [e.revision for e in store.events("i-1")] == [1, 2]


def test_commit_to_an_unknown_instance_is_not_found(store):
    with pytest.raises(InstanceNotFoundError):
        store.commit("nope", 1, {}, step(), None)


def test_concurrent_commits_at_one_revision_let_exactly_one_win(store):
    make(store)
    barrier = threading.Barrier(8)

    def attempt(n: int) -> str:
        barrier.wait()
        try:
            store.commit("i-1", 1, {"log": [n]}, step(), None)
        except RevisionConflictError:
            return "conflict"
        return "won"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))

    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert store.instance("i-1").revision == 2
    assert [e.revision for e in store.events("i-1")] == [1, 2]


# --- leases ---------------------------------------------------------------------------


def test_claim_leases_instances_with_pending_work_to_one_owner(store):
    make(store, "a")
    make(store, "b")
    make(store, "idle", work_ids=())

    assert sorted(store.claim("one", 30, 10)) == ["a", "b"]
    assert store.claim("two", 30, 10) == []
    # The holder claims them again (renewal).
    assert sorted(store.claim("one", 30, 10)) == ["a", "b"]


def test_an_instance_created_with_an_owner_is_born_leased_to_it(store):
    store.create(instance("mine"), started("mine"), [work("w-1")], "one", 30)
    store.create(instance("expiring"), started("expiring"), [work("w-1")], "one", 0.05)
    make(store, "free")
    time.sleep(0.1)

    assert sorted(store.claim("two", 30, 10)) == ["expiring", "free"]
    assert store.claim("one", 30, 10) == ["mine"]  # its holder renews it


def test_claim_respects_the_limit_and_skips_what_others_hold(store):
    for name in ("a", "b", "c"):
        make(store, name)

    first = store.claim("one", 30, 2)
    second = store.claim("two", 30, 2)

    assert len(first) == 2
    assert len(second) == 1
    assert sorted(first + second) == ["a", "b", "c"]
    assert store.claim("three", 30, 0) == []


def test_claim_takes_over_an_expired_lease(store):
    make(store)
    assert store.claim("one", 0.05, 1) == ["i-1"]
    time.sleep(0.1)

    assert store.claim("two", 30, 1) == ["i-1"]
    assert store.claim("one", 30, 1) == []


def test_concurrent_claims_hand_each_instance_to_one_owner(store):
    for n in range(20):
        make(store, f"i-{n:02}")
    barrier = threading.Barrier(4)

    def claim(owner: int) -> list[str]:
        barrier.wait()
        return store.claim(f"owner-{owner}", 30, 5)

    with ThreadPoolExecutor(4) as pool:
        claimed = [i for ids in pool.map(claim, range(4)) for i in ids]

    assert sorted(claimed) == [f"i-{n:02}" for n in range(20)]


def test_release_frees_the_lease_of_its_owner_only(store):
    make(store)
    store.claim("one", 30, 1)

    store.release("two", "i-1")
    assert store.claim("two", 30, 1) == []

    store.release("one", "i-1")
    assert store.claim("two", 30, 1) == ["i-1"]


def test_fenced_commit_fails_once_the_lease_is_taken_over(store):
    make(store, work_ids=("w-1", "w-2"))
    store.claim("one", 0.05, 1)
    store.commit("i-1", 1, {"log": [1]}, step(), "w-1", owner="one")
    time.sleep(0.1)
    store.claim("two", 30, 1)

    with pytest.raises(LeaseLostError) as caught:
        store.commit("i-1", 2, {"log": [2]}, step(), "w-2", owner="one")

    assert (caught.value.instance_id, caught.value.owner) == ("i-1", "one")
    assert store.instance("i-1").revision == 2
    assert store.commit("i-1", 2, {"log": [2]}, step(), "w-2", owner="two").instance.revision == 3
    assert store.pending("i-1") == []


# --- appends --------------------------------------------------------------------------


def test_append_returns_the_list_and_the_revision_it_created(store):
    make(store, document={"log": [], "node": {"items": ["a"]}})

    values, revision = store.append("i-1", ("node", "items"), {"b": [1]}, step("appended"))

    assert (values, revision) == (["a", {"b": [1]}], 2)
    found = store.instance("i-1")
    assert found.revision == 2
    assert found.document == {"log": [], "node": {"items": ["a", {"b": [1]}]}}
    event = store.events("i-1")[-1]
    assert (event.instance_id, event.revision, event.kind) == ("i-1", 2, "appended")
    assert event.patch == [{"op": "add", "path": "/node/items/-", "value": {"b": [1]}}]


def test_append_of_a_list_appends_it_as_one_element(store):
    make(store)
    assert store.append("i-1", ("log",), [1, 2], step("appended"))[0] == [[1, 2]]


@pytest.mark.parametrize(
    "path", [("missing",), ("node", "missing"), ("missing", "deeper"), ("node", "items", "0")]
)
def test_append_where_nothing_is_raises_key_error(store, path):
    make(store, document={"log": [], "node": {"items": [[1]]}})

    with pytest.raises(KeyError):
        store.append("i-1", path, 1, step("appended"))

    assert store.instance("i-1").revision == 1
    assert len(store.events("i-1")) == 1


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("obj", "object"),
        ("text", "string"),
        ("num", "number"),
        ("flag", "boolean"),
        ("nil", "null"),
    ],
)
def test_append_to_what_is_not_a_list_raises_type_error_naming_its_type(store, key, kind):
    document = {"obj": {}, "text": "x", "num": 1.5, "flag": False, "nil": None}
    make(store, document=document)

    with pytest.raises(TypeError) as caught:
        store.append("i-1", (key,), 1, step("appended"))

    assert str(caught.value) == kind
    assert store.instance("i-1").revision == 1


def test_append_to_an_unknown_instance_is_not_found(store):
    with pytest.raises(InstanceNotFoundError):
        store.append("nope", ("log",), 1, step("appended"))
    with pytest.raises(InstanceNotFoundError):
        store.append("nope", ("log",), 1, step("appended"), dedup="k")


@pytest.mark.parametrize(
    "key", ["a.b", "x[0]", "it's", "back\\slash", "new\nline", "tab\t", "é✓", 'say "hi"', ""]
)
def test_append_under_keys_with_special_characters(store, key):
    make(store, document={"log": [], key: {key: ["old"]}})

    values, _ = store.append("i-1", (key, key), "new", step("appended"))

    assert values == ["old", "new"]
    assert store.instance("i-1").document == {"log": [], key: {key: ["old", "new"]}}


def test_append_with_a_dedup_key_appends_once_and_answers_the_first_result(store):
    make(store)
    first = store.append("i-1", ("log",), "a", step("appended"), dedup="w-1:1")
    store.append("i-1", ("log",), "b", step("appended"))

    again = store.append("i-1", ("log",), "a", step("appended"), dedup="w-1:1")

    assert first == again == (["a"], 2)
    assert store.instance("i-1").document["log"] == ["a", "b"]
    assert store.instance("i-1").revision == 3


def test_a_failed_append_does_not_use_up_its_dedup_key(store):
    make(store, document={"log": "not yet"})
    with pytest.raises(TypeError):
        store.append("i-1", ("log",), "a", step("appended"), dedup="k")
    store.commit("i-1", 1, {"log": []}, step(), None)

    assert store.append("i-1", ("log",), "a", step("appended"), dedup="k") == (["a"], 3)


def test_concurrent_appends_to_one_list_keep_every_value_once(store):
    make(store)
    threads, per_thread = 16, 200
    barrier = threading.Barrier(threads)

    def append_all(t: int) -> list[int]:
        barrier.wait()
        revisions = []
        for i in range(per_thread):
            value = t * per_thread + i
            values, revision = store.append("i-1", ("log",), value, step("appended"))
            # The list was empty at revision 1: each append's revision says where it went.
            assert values[revision - 2] == value
            revisions.append(revision)
        return revisions

    with ThreadPoolExecutor(threads) as pool:
        revisions = [r for rs in pool.map(append_all, range(threads)) for r in rs]

    total = threads * per_thread
    log = store.instance("i-1").document["log"]
    assert len(log) == total
    assert sorted(log) == list(range(total))
    assert sorted(revisions) == list(range(2, total + 2))
    assert store.instance("i-1").revision == total + 1
    assert len(store.events("i-1")) == total + 1


def test_concurrent_appends_with_one_dedup_key_append_once(store):
    make(store)
    barrier = threading.Barrier(8)

    def append(n: int) -> tuple[list[Any], int]:
        barrier.wait()
        return store.append("i-1", ("log",), n, step("appended"), dedup="same")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(append, range(8)))

    assert len(set(map(repr, answers))) == 1
    assert len(store.instance("i-1").document["log"]) == 1
    assert store.instance("i-1").revision == 2


def appending(instance_id: str, path: tuple[str, ...], value: Any) -> AppendRecord:
    return AppendRecord(instance_id, path, value, step("appended"))


def test_append_many_commits_each_append_as_its_own_step_in_order(store):
    make(store, "i-1")
    make(store, "i-2", document={"log": ["x"], "node": {"items": []}})

    outcomes = store.append_many(
        [
            appending("i-2", ("log",), "a"),
            appending("i-1", ("log",), 1),
            appending("i-2", ("node", "items"), {"b": [2]}),
            appending("i-2", ("log",), "c"),
        ]
    )

    assert outcomes == [
        (["x", "a"], 2, 2),
        ([1], 1, 2),
        ([{"b": [2]}], 1, 3),
        (["x", "a", "c"], 3, 4),
    ]
    document = {"log": ["x", "a", "c"], "node": {"items": [{"b": [2]}]}}
    assert store.instance("i-2").document == document
    assert store.instance("i-2").revision == 4
    events = store.events("i-2")
    assert [(e.revision, e.kind) for e in events] == [
        (1, "started"),
        (2, "appended"),
        (3, "appended"),
        (4, "appended"),
    ]
    assert [e.patch for e in events[1:]] == [
        [{"op": "add", "path": "/log/-", "value": "a"}],
        [{"op": "add", "path": "/node/items/-", "value": {"b": [2]}}],
        [{"op": "add", "path": "/log/-", "value": "c"}],
    ]
    assert [e.revision for e in store.events("i-1")] == [1, 2]


def test_append_many_answers_a_refused_append_with_its_error_and_commits_the_rest(store):
    make(store, "i-1", document={"log": [], "text": "x"})
    make(store, "i-2")

    outcomes = store.append_many(
        [
            appending("i-1", ("log",), "kept"),
            appending("nope", ("log",), 1),
            appending("i-1", ("missing",), 1),
            appending("i-1", ("text",), 1),
            appending("i-2", ("log",), "x" * 200),  # over max_bytes: changed its row
            appending("i-2", ("log",), "small"),
        ],
        max_bytes=100,
    )

    assert outcomes[0] == (["kept"], 1, 2)
    assert isinstance(outcomes[1], InstanceNotFoundError)
    assert isinstance(outcomes[2], KeyError)
    assert isinstance(outcomes[3], TypeError)
    assert str(outcomes[3]) == "string"
    assert isinstance(outcomes[4], LimitExceededError)
    assert outcomes[5] == (["small"], 1, 2)
    assert store.instance("i-1").document == {"log": ["kept"], "text": "x"}
    assert store.instance("i-1").revision == 2
    assert [e.revision for e in store.events("i-2")] == [1, 2]
    assert store.instance("i-2").document == {"log": ["small"]}


def test_append_many_without_values_answers_the_length_only(store):
    make(store, document={"log": ["x"], "node": {"items": []}})

    outcomes = store.append_many(
        [
            AppendRecord("i-1", ("log",), "a", step("appended"), with_values=False),
            AppendRecord("i-1", ("node", "items"), 1, step("appended"), with_values=False),
            appending("i-1", ("log",), "b"),
        ]
    )

    assert outcomes == [(None, 2, 2), (None, 1, 3), (["x", "a", "b"], 3, 4)]
    assert store.instance("i-1").document == {"log": ["x", "a", "b"], "node": {"items": [1]}}


def test_append_many_of_nothing_commits_nothing(store):
    assert store.append_many([]) == []


def test_concurrent_batches_over_the_same_instances_keep_every_value_once(store):
    ids = [f"i-{n}" for n in range(6)]
    for instance_id in ids:
        make(store, instance_id)
    threads, rounds = 8, 25
    barrier = threading.Barrier(threads)

    def batches(t: int) -> None:
        barrier.wait()
        for r in range(rounds):
            # Each thread lists the instances in another order: locks taken in
            # that order would wait on each other in a cycle.
            order = ids[t % len(ids) :] + ids[: t % len(ids)]
            if t % 2:
                order.reverse()
            batch = [appending(i, ("log",), [t, r]) for i in order]
            for one, (values, _, revision) in zip(batch, store.append_many(batch), strict=True):
                assert values[revision - 2] == one.value

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(batches, range(threads)))

    expected = sorted([t, r] for t in range(threads) for r in range(rounds))
    for instance_id in ids:
        found = store.instance(instance_id)
        assert sorted(found.document["log"]) == expected
        assert found.revision == threads * rounds + 1


# --- history --------------------------------------------------------------------------


def test_events_come_in_revision_order_from_a_revision_up_to_a_limit(store):
    make(store)
    for n in range(5):
        store.commit("i-1", n + 1, {"log": [n]}, step(), None)

    assert [e.revision for e in store.events("i-1")] == [1, 2, 3, 4, 5, 6]
    assert [e.revision for e in store.events("i-1", 3)] == [3, 4, 5, 6]
    assert [e.revision for e in store.events("i-1", 3, 2)] == [3, 4]
    assert store.events("i-1", 7) == []
    assert store.oldest_revision("i-1") == 1


def test_events_of_an_unknown_instance_are_not_found(store):
    with pytest.raises(InstanceNotFoundError):
        store.events("nope")
    with pytest.raises(InstanceNotFoundError):
        store.oldest_revision("nope")


# --- errors ---------------------------------------------------------------------------


def failure(work_item_id: str, attempts: int = 1, item=None) -> ErrorRecord:
    return ErrorRecord(
        work_item_id,
        "door.busy",
        "ValueError",
        f"boom {attempts}",
        "Traceback (most recent call last):\n  ...\nValueError: boom",
        attempts,
        retrying=attempts < 3,
        item=item,
        update_time=T0 + timedelta(seconds=attempts),
    )


def test_errors_are_put_replaced_and_cleared_per_work_item(store):
    make(store)
    assert store.errors("i-1") == []

    store.put_error("i-1", failure("w-1", 1, Execute("door.busy", {"job": 1})))
    store.put_error("i-1", failure("w-2", 1))
    store.put_error("i-1", failure("w-1", 3, Execute("door.busy", {"job": 1})))

    assert store.errors("i-1") == [
        failure("w-1", 3, Execute("door.busy", {"job": 1})),
        failure("w-2", 1),
    ]
    store.clear_error("i-1", "w-1")
    store.clear_error("i-1", "w-9")
    assert store.errors("i-1") == [failure("w-2", 1)]


def test_committing_a_work_item_forgets_its_failures_unless_it_failed_for_good(store):
    make(store, work_ids=("w-1", "w-2"))
    store.put_error("i-1", failure("w-1", 2))
    store.put_error("i-1", failure("w-2", 4))

    first = store.commit("i-1", 1, {"log": [1]}, step(), "w-1")
    last = store.commit("i-1", 2, {"log": [1]}, step(kind="failed"), "w-2")

    assert store.errors("i-1") == [failure("w-2", 4)]
    assert first.errors == (failure("w-2", 4),)  # what the commit left, read in it
    assert last.errors == (failure("w-2", 4),)
    assert (last.next, last.pending) == (None, 0)


def test_errors_of_an_unknown_instance_are_empty(store):
    assert store.errors("nope") == []


# --- request records ------------------------------------------------------------------


def test_the_first_request_record_wins(store):
    first = RequestRecord("req-1", "sha256:aaa", {"instance": {"id": "i-1"}, "n": [1]})
    assert store.request("req-1") is None

    assert store.put_request(first) == first
    assert store.put_request(RequestRecord("req-1", "sha256:bbb", {"other": True})) == first
    assert store.request("req-1") == first
    assert store.request("req-2") is None


# --- durable stores only --------------------------------------------------------------


def test_everything_survives_closing_and_opening_again(database_url):
    store = SqlStore(database_url, retry=TEST_RETRY)
    make(store, work_ids=("w-1", "w-2"))
    store.commit("i-1", 1, {"log": [1]}, step(), "w-1")
    store.append("i-1", ("log",), 2, step("appended"), dedup="k")
    store.put_error("i-1", failure("w-2"))
    store.put_request(RequestRecord("r", "f", {"a": 1}))
    before = (
        store.instance("i-1"),
        store.pending("i-1"),
        store.events("i-1"),
        store.errors("i-1"),
    )
    store.close()

    reopened = SqlStore(database_url, retry=TEST_RETRY)
    try:
        after = (
            reopened.instance("i-1"),
            reopened.pending("i-1"),
            reopened.events("i-1"),
            reopened.errors("i-1"),
        )
        assert after == before
        assert reopened.request("r") == RequestRecord("r", "f", {"a": 1})
        assert reopened.append("i-1", ("log",), 9, step("appended"), dedup="k") == ([1, 2], 3)
        # seq keeps growing across a restart, even after the newest item left.
        store_seq = max(w.seq for w in before[1])
        reopened.discard("i-1", "w-2")
        [queued] = reopened.enqueue("i-1", [work("w-3")])
        assert queued.seq > store_seq
    finally:
        reopened.close()


def test_times_come_back_in_utc_and_naive_times_are_refused(sql_store):
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 5, 6, 9, 8, 7, 654321, tzinfo=paris)
    sql_store.create(instance(at=at), started(), [])

    found = sql_store.instance("i-1")
    assert found.create_time == at
    assert found.create_time.tzinfo == UTC
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        sql_store.create(instance("i-2", at=datetime(2026, 1, 1)), started("i-2"), [])


def test_sqlite_commits_are_on_disk_when_they_return_by_default(sqlite_url):
    store = SqlStore(sqlite_url)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_put_error_of_an_unknown_instance_is_not_found(sql_store):
    with pytest.raises(InstanceNotFoundError):
        sql_store.put_error("nope", failure("w-1"))


def test_the_schema_is_what_the_migrations_create(sql_store):
    with sql_store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert migrations.current(conn) == migrations.head()


def _stamp(url: str, revision: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    engine.dispose()


def _empty_database(request, sql_backend, tmp_path) -> str:
    if sql_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("postgres_database"))


def test_open_upgrades_an_empty_database_and_refuses_another_revision(
    request, sql_backend, tmp_path
):
    url = _empty_database(request, sql_backend, tmp_path)
    with pytest.raises(migrations.SchemaVersionError):
        SqlStore(url, upgrade=False)

    SqlStore(url).close()  # upgrades
    SqlStore(url, upgrade=False).close()  # at head: fine
    _stamp(url, "0000")

    with pytest.raises(migrations.SchemaVersionError) as caught:
        SqlStore(url)
    assert (caught.value.found, caught.value.needed) == ("0000", migrations.head())


def test_upgrade_brings_an_empty_database_to_head(request, sql_backend, tmp_path):
    url = _empty_database(request, sql_backend, tmp_path)

    migrations.upgrade(url)
    migrations.upgrade(url)  # again: nothing to do

    store = SqlStore(url, upgrade=False)
    try:
        make(store)
        assert store.instance("i-1").revision == 1
    finally:
        store.close()


def test_urls_the_store_cannot_use_are_refused():
    with pytest.raises(ValueError, match="in-memory SQLite"):
        SqlStore("sqlite://")
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        SqlStore("mysql://localhost/db")


def test_sqlite_json_paths_quote_keys_and_refuse_what_sqlite_cannot_name():
    assert SqliteDialect.json_path(()) == "$"
    assert SqliteDialect.json_path(("a.b", "c")) == '$."a.b"."c"'
    assert SqliteDialect.json_path(('x"y',)) == '$.x\\"y'
    with pytest.raises(ValueError, match="cannot name"):
        SqliteDialect.json_path(('x".y',))


# --- retrying ---------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _hold_sqlite_write_lock(url: str, seconds: float) -> threading.Thread:
    """Takes the write lock of the file from another connection; releases it after `seconds`."""
    locker = sqlite3.connect(_sqlite_path(url), isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(seconds)
        locker.rollback()
        locker.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_sqlite_rows_of_appends_are_those_sqlalchemy_writes(sqlite_url):
    # Appends go to the sqlite3 connection itself, their values converted by the
    # columns' SQLAlchemy types: the file must hold what SQLAlchemy writes (a commit).
    store = SqlStore(sqlite_url)
    for instance_id in ("i-commit", "i-append", "i-batch"):
        make(store, instance_id)
    at = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    value = {"v": "é"}
    event = replace(
        step("appended"),
        create_time=at,
        error={"e": [1, "é"]},
        patch=[{"op": "add", "path": "/log/-", "value": value}],
    )
    store.commit("i-commit", 1, {"log": [value]}, event, None)
    store.append("i-append", ("log",), value, event)
    store.append_many([AppendRecord("i-batch", ("log",), value, event)])
    store.close()

    def raw(instance_id: str) -> tuple[Any, ...]:
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            event_row = db.execute(
                "SELECT kind, item, patch, fired, error, rejection, request_id, create_time, "
                "typeof(create_time) FROM flou_events WHERE instance_id = ? AND revision = 2",
                (instance_id,),
            ).fetchone()
            document, *instance_row = db.execute(
                "SELECT document, revision, typeof(update_time), length(update_time) "
                "FROM flou_instances WHERE id = ?",
                (instance_id,),
            ).fetchone()
        return (*event_row, json.loads(document), *instance_row)

    assert raw("i-append") == raw("i-batch") == raw("i-commit")
    assert raw("i-append")[7] == "2026-05-06 07:08:09.123456"


def test_sqlite_locked_database_is_retried_and_logged(sqlite_url, caplog):
    store = SqlStore(sqlite_url, busy_timeout=0.02, retry=TEST_RETRY)
    make(store)
    holder = _hold_sqlite_write_lock(sqlite_url, 0.3)
    try:
        with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
            queued = store.enqueue("i-1", [work("w-2")])
    finally:
        holder.join()
        store.close()

    assert [w.id for w in queued] == ["w-2"]
    logged = retries(caplog)
    assert logged, "no retry was logged"
    assert all("store enqueue" in m and "locked" in m for m in logged)


def test_sqlite_locked_past_the_deadline_is_unavailable(sqlite_url, caplog):
    store = SqlStore(sqlite_url, busy_timeout=0.02, retry=RetryPolicy(deadline=0.2))
    make(store)
    holder = _hold_sqlite_write_lock(sqlite_url, 0.6)
    try:
        started_at = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            store.enqueue("i-1", [work("w-2")])
        elapsed = time.monotonic() - started_at
        with deadline(0.1), pytest.raises(StoreUnavailableError):
            store.enqueue("i-1", [work("w-3")])  # the caller's shorter deadline
    finally:
        holder.join()

    assert elapsed < 0.5
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert [w.id for w in store.pending("i-1")] == ["w-1"]
    store.close()


def test_non_transient_errors_are_not_retried(sql_store, caplog):
    make(sql_store)
    with caplog.at_level(logging.DEBUG, logger=STORE_LOGGER):
        with pytest.raises(InstanceAlreadyExistsError):
            make(sql_store)
        with pytest.raises(RevisionConflictError):
            sql_store.commit("i-1", 5, {}, step(), None)
        with pytest.raises(InstanceNotFoundError):
            sql_store.put_error("nope", failure("w-1"))
    assert [r for r in caplog.records if r.name == STORE_LOGGER] == []


def test_run_retrying_retries_real_transient_errors_only(sqlite_url):
    store = SqlStore(sqlite_url, busy_timeout=0.0)
    dialect_transient = SqliteDialect().is_transient
    calls: list[int] = []
    holder = _hold_sqlite_write_lock(sqlite_url, 0.2)

    def write(attempt: int) -> int:
        calls.append(attempt)
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM flou_requests"))
        return attempt

    try:
        assert run_retrying("t", write, dialect_transient, TEST_RETRY) > 1
    finally:
        holder.join()
    assert calls == list(range(1, len(calls) + 1))

    calls.clear()

    def duplicate(attempt: int) -> None:
        calls.append(attempt)
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} VALUES ('x')"))
            conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} VALUES ('x')"))

    with pytest.raises(sa.exc.IntegrityError):
        run_retrying("t", duplicate, dialect_transient, TEST_RETRY)
    assert calls == [1]
    store.close()


def _killed_while_waiting_for_the_row_lock(postgres_url: str, call: Any) -> Any:
    """Runs `call()` while another transaction holds i-1's row lock, kills the connection
    `call` waits on, then lets the lock go; returns what `call` returned."""
    dsn = _libpq(postgres_url)
    with psycopg.connect(dsn) as blocker, psycopg.connect(dsn, autocommit=True) as admin:
        blocker.execute("SELECT 1 FROM flou_instances WHERE id = 'i-1' FOR UPDATE")
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(call)
            waiting = None
            for _ in range(200):
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting:
                    break
                time.sleep(0.01)
            assert waiting, "the call never waited for the row lock"
            admin.execute("SELECT pg_terminate_backend(%s)", waiting)
            time.sleep(0.1)
            blocker.rollback()
            return running.result(timeout=10)


@pytest.mark.postgres
def test_postgres_connection_killed_mid_transaction_is_retried(postgres_url, caplog):
    store = SqlStore(postgres_url, retry=TEST_RETRY)
    make(store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        queued = _killed_while_waiting_for_the_row_lock(
            postgres_url, lambda: store.enqueue("i-1", [work("w-2")])
        )

    assert [w.id for w in queued] == ["w-2"]
    assert [w.id for w in store.pending("i-1")] == ["w-1", "w-2"]
    assert retries(caplog), "no retry was logged"
    store.close()


@pytest.mark.postgres
def test_postgres_connection_killed_mid_batch_of_appends_is_retried(postgres_url, caplog):
    # The batch's statements go through psycopg's pipeline, not SQLAlchemy: its
    # errors must still be seen as transient, and the dead connection dropped.
    store = SqlStore(postgres_url, retry=TEST_RETRY)
    make(store, "i-0")
    make(store, "i-1")
    batch = [appending("i-0", ("log",), "a"), appending("i-1", ("log",), "b")]
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        outcomes = _killed_while_waiting_for_the_row_lock(
            postgres_url, lambda: store.append_many(batch)
        )

    assert outcomes == [(["a"], 1, 2), (["b"], 1, 2)]
    assert store.instance("i-0").document == {"log": ["a"]}
    assert store.instance("i-1").document == {"log": ["b"]}
    assert retries(caplog), "no retry was logged"
    assert store.append_many([appending("i-1", ("log",), "c")]) == [(["b", "c"], 2, 3)]
    store.close()


# --- answers lost after the commit -------------------------------------------------------


def _lose_the_next_commit_answer(store: SqlStore) -> None:
    """Commits the next transaction for real, then fails as a dropped connection would."""

    def commit_then_fail(conn: sa.Connection) -> None:
        sa.event.remove(store.engine, "commit", commit_then_fail)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.commit()
        raise sa.exc.OperationalError(
            "COMMIT", None, Exception("connection lost"), connection_invalidated=True
        )

    sa.event.listen(store.engine, "commit", commit_then_fail)


def test_a_create_whose_answer_was_lost_is_not_an_error(sql_store, caplog):
    _lose_the_next_commit_answer(sql_store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        created = make(sql_store)
    assert created.revision == 1
    assert len(sql_store.events("i-1")) == 1
    assert retries(caplog)


def test_a_commit_whose_answer_was_lost_is_applied_once(sql_store, caplog):
    make(sql_store)
    _lose_the_next_commit_answer(sql_store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        snapshot = sql_store.commit("i-1", 1, {"log": [1]}, step(), "w-1", [work("w-2")])
    record = snapshot.instance
    assert snapshot.next is not None
    assert snapshot.next.id == "w-2"
    assert record.revision == 2
    assert record.document == {"log": [1]}
    assert [e.revision for e in sql_store.events("i-1")] == [1, 2]
    assert [w.id for w in sql_store.pending("i-1")] == ["w-2"]
    assert retries(caplog)


def test_a_chained_commit_whose_answer_was_lost_is_applied_once(sql_store, caplog):
    make(sql_store)
    _lose_the_next_commit_answer(sql_store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        snapshot = sql_store.commit("i-1", 1, {"log": [1]}, step(), "w-1", chained=[step()])
    assert snapshot.instance.revision == 3
    assert snapshot.next is None
    assert [e.revision for e in sql_store.events("i-1")] == [1, 2, 3]
    assert retries(caplog)


def test_a_batch_of_appends_whose_answer_was_lost_is_applied_once(sql_store, caplog):
    make(sql_store, "i-1")
    make(sql_store, "i-2")
    _lose_the_next_commit_answer(sql_store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        outcomes = sql_store.append_many(
            [appending("i-1", ("log",), "a"), appending("i-2", ("log",), "b")]
        )
    assert outcomes == [(["a"], 1, 2), (["b"], 1, 2)]
    assert sql_store.instance("i-1").document == {"log": ["a"]}
    assert sql_store.instance("i-2").document == {"log": ["b"]}
    assert retries(caplog)


def test_a_batch_run_again_without_an_append_over_the_limit_rolled_that_one_back(
    sql_store, caplog
):
    make(sql_store, "i-1")
    outcomes = sql_store.append_many(
        [
            appending("i-1", ("log",), "a"),
            appending("i-1", ("log",), "x" * 200),
            appending("i-1", ("log",), "b"),
        ],
        max_bytes=100,
    )
    assert outcomes[0] == (["a"], 1, 2)
    assert isinstance(outcomes[1], LimitExceededError)
    assert outcomes[2] == (["a", "b"], 2, 3)
    assert [e.revision for e in sql_store.events("i-1")] == [1, 2, 3]


@pytest.mark.parametrize("dedup", ["", "k"])
def test_an_append_whose_answer_was_lost_is_applied_once(sql_store, caplog, dedup):
    make(sql_store)
    _lose_the_next_commit_answer(sql_store)
    with caplog.at_level(logging.WARNING, STORE_LOGGER):
        answer = sql_store.append("i-1", ("log",), "x", step("appended"), dedup=dedup)
    assert answer == (["x"], 2)
    assert sql_store.instance("i-1").document == {"log": ["x"]}
    assert retries(caplog)
