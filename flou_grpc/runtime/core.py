"""`AsyncRuntime`: runs instances on an asyncio loop, over a `Store`.

Every instance has a FIFO mailbox of work items in the store. A dispatcher
claims instances with pending work (a lease in the store, so several runtimes
may share one database) and starts one worker task per claimed instance,
which takes its work items one at a time, in order:
- `Execute`: binds the node, runs its code outside any transaction (a sync
  `run` in a thread, an `async def run` awaited), then applies what the code
  queued to the instance's *latest* document and commits one step. A raising
  `run` is retried with jittered exponential backoff up to the node class's
  `retries`, then its node's status becomes `error` (a `failed` event) and
  the mailbox moves on. `atomic_state_append` inside `run` commits at once, as
  its own step, deduplicated per (work item, call number) so a re-run does not
  append twice.
- `Transition` / `UpdateState`: one pure step; if it cannot apply (nothing
  fires, a conflict on `expected_revision`, a missing key) it is recorded as a
  `rejected` event and its caller gets the error.
Every commit is fenced by the lease. Different instances run concurrently.
Store calls run in a thread pool of their own: the loop never waits on I/O.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import re
import socket
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Final, ParamSpec, TypeVar

from flou_grpc.engine.document import JsonObject, append_op, apply_patch, json_copy, json_size
from flou_grpc.engine.hosting import Hosted
from flou_grpc.engine.ltm import LTM, state_key_path
from flou_grpc.engine.machine import ACTIVE, ERROR, QUEUED, Fired, Step
from flou_grpc.engine.registry import Registry
from flou_grpc.engine.requests import payload_of, transition_item, update_item
from flou_grpc.engine.work import Execute, Transition, UpdateState, WorkItem, to_json
from flou_grpc.errors import (
    DeadlineExceededError,
    FlouError,
    InternalError,
    InvalidFieldError,
    LimitExceededError,
    NodeNotFoundError,
    RequestIdReusedError,
    RevisionConflictError,
    RevisionOutOfRangeError,
    ShuttingDownError,
    StateKeyNotFoundError,
    StateKeyNotListError,
)
from flou_grpc.runtime.group_commit import GroupCommit
from flou_grpc.runtime.model import (
    AppendResult,
    Event,
    EventKind,
    Instance,
    InstanceStatus,
    StepError,
    TransitionResult,
    WaitMode,
)
from flou_grpc.runtime.observer import Observer
from flou_grpc.runtime.stores import open_store
from flou_grpc.store.base import (
    EVENTS_CHANNEL,
    RECONNECTED,
    WORK_CHANNEL,
    LeaseLostError,
    MailboxNotEmptyError,
    Store,
)
from flou_grpc.store.records import (
    Appended,
    AppendRecord,
    ErrorRecord,
    EventRecord,
    InstanceRecord,
    RequestRecord,
    Snapshot,
    WorkRecord,
    utcnow,
)

__all__ = ["AsyncRuntime"]

_log = logging.getLogger(__name__)
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
T = TypeVar("T")
P = ParamSpec("P")
_KNOWN_INSTANCES = 65_536
"""How many instances' machines and revisions a runtime remembers (`_locate`)."""


@dataclass(slots=True)
class _Recent:
    """The newest events of a followed instance, revisions `first` to `end` with no gap.

    Its followers read from it instead of the store: local commits extend it
    as they happen (`AsyncRuntime._publish`), store reads extend it when they
    continue it.
    """

    first: int
    end: int
    """The revision of the last event held (`first - 1` when none is)."""
    generation: int
    """The instance's count of unexplained changes when a store read last found
    nothing after `end`: while it is still the count, nothing is missing."""
    events: list[Event] = field(default_factory=list)

    def add(self, events: Sequence[Event]) -> None:
        """Keeps the events that continue the run (revision `end + 1`, and so on)."""
        for event in events:
            if event.revision == self.end + 1:
                self.events.append(event)
                self.end += 1
        if len(self.events) > _RECENT_EVENTS:
            del self.events[: len(self.events) - _RECENT_EVENTS]
            self.first = self.events[0].revision

    def since(self, start: int, page: int) -> list[Event]:
        """Up to `page` held events from revision `start` on."""
        return self.events[start - self.first : start - self.first + page]


_RECENT_EVENTS: Final = 256
"""Events kept per followed instance for its followers to share."""

_EVICTED_AT_ONCE: Final = 4
"""Lingering workers asked to go per dispatch that found no free slot (`_make_room`)."""

_CHAIN_LIMIT: Final = 64
"""At most this many steps chained to one (`AsyncRuntime._chain`): one transaction stays short."""


def _no_appends(fqn: str, key: str, value: Any) -> list[Any]:
    """The append hook of a chained execute: its node has no code that could call it."""
    raise InternalError()


def _pure_step(
    hosted: Hosted, instance_id: str, document: JsonObject, item: WorkItem
) -> tuple[EventKind, Step | None] | None:
    """The step of a queued item of a pure machine; None if it would run code.

    The step None: an execute whose node no longer needs it (the worker
    discards such an item). Raises what the step raises (a transition that
    cannot fire).
    """
    if isinstance(item, Transition):
        return EventKind.TRANSITIONED, hosted.transition(instance_id, document, item)
    if not isinstance(item, Execute):
        return None  # an update comes from outside only; the worker takes it
    execution = hosted.prepare(instance_id, document, item, _no_appends)
    if execution is None:
        return EventKind.EXECUTED, None
    if execution.runs_code:
        return None
    return EventKind.EXECUTED, hosted.execute(instance_id, document, item, execution.effects)


@dataclass(slots=True)
class _Outcome:
    """What a processed work item answers to the caller waiting for it."""

    snapshot: Snapshot
    fired: list[JsonObject]


def _fired_json(fired: Sequence[Fired]) -> list[JsonObject]:
    return [
        {
            "machine": f.machine,
            "label": f.label,
            "namespace": f.namespace,
            "sources": list(f.sources),
            "targets": list(f.targets),
        }
        for f in fired
    ]


def _fingerprint(*parts: object) -> str:
    body = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _new_id() -> str:
    return str(uuid.uuid4())


class AsyncRuntime:
    """Hosts instances of registered machines; use it inside one asyncio loop.

    Args:
        database_url: Where instances are kept: `sqlite:///file.db`,
            `postgresql+psycopg://user@host/db`, or `memory://` (nothing kept).
            None: `FLOU_DATABASE_URL`, else the embedded `sqlite:///flou.db`.
        machines: Root LTM classes to register.
        registry: A registry to use (the machines are added to it).
        store: A store to use instead of opening `database_url`.
        retry_delay: The first backoff, in seconds, after a failing `run`.
        max_retry_delay: The longest backoff.
        lease_seconds: How long a claimed instance stays this runtime's
            without renewal (renewed every `poll_interval`).
        max_workers: How many instances this runtime works on at once. An
            instance it starts is leased to it at birth, and worked on with no
            claim, while one of these is free.
        poll_interval: How often, in seconds, to look for work committed by
            other runtimes sharing the database, and to renew leases. None: 5 s
            where the store notifies changes (PostgreSQL LISTEN/NOTIFY), else 1 s.
        linger: How long, in seconds, a worker keeps the lease of an instance
            whose mailbox it emptied, waiting for more work (at most a quarter
            of `lease_seconds`). The next event then needs no claim. When all
            `max_workers` are taken, lingering workers give their slots up.
        user_threads: The threads that run sync `run` methods (a bounded pool
            of their own, apart from the store's calls).
        store_threads: The threads that make the store's calls (each holds
            one database connection while it runs). Few: they contend with the
            event loop for the interpreter lock, and with 16 instead of 4 a
            server on 2 cores did about 40% fewer transitions/s.
        observer: Told of every committed step and failed run (metrics).
        max_state_bytes: The largest state (as compact JSON) a step may commit:
            a transition or update over it is rejected, a run over it fails
            (and is retried), an append over it is refused; None: no limit.
    """

    def __init__(
        self,
        database_url: str | None = None,
        machines: Iterable[type[LTM]] = (),
        *,
        registry: Registry | None = None,
        store: Store | None = None,
        retry_delay: float = 0.1,
        max_retry_delay: float = 10.0,
        lease_seconds: float = 30.0,
        max_workers: int = 64,
        poll_interval: float | None = None,
        linger: float = 0.5,
        user_threads: int = 16,
        store_threads: int = 4,
        observer: Observer | None = None,
        max_state_bytes: int | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        for cls in machines:
            self.registry.register(cls)
        self.store: Store = store if store is not None else open_store(database_url)
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        self.lease_seconds, self.max_workers = lease_seconds, max_workers
        self._poll_setting = poll_interval
        self.poll_interval = 1.0 if poll_interval is None else poll_interval
        self.linger = max(0.0, min(linger, lease_seconds / 4))
        self._stop_listening: Callable[[], None] | None = None
        self._listening_asked = False
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This runtime's name in the store's leases."""
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._nudges: dict[str, asyncio.Event] = {}
        self._births = 0
        """Instances being started with a worker slot promised (`start`)."""
        self._lingering: dict[str, bool] = {}
        """Instances whose worker has nothing to do and lingers, oldest first; True once
        asked to go (`_make_room`)."""
        self._handoffs: dict[str, tuple[WorkRecord, asyncio.Future[bool]]] = {}
        """Items handed to a worker without the mailbox, with their fate: True once
        committed or queued, False if dropped (`_hand_over`)."""
        self._known: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, int] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._following: Counter[str] = Counter()
        self._generations: dict[str, int] = {}
        self._recent: dict[str, _Recent] = {}
        self.observer = observer or Observer()
        self.max_state_bytes = max_state_bytes
        self._waiters: dict[str, asyncio.Future[_Outcome]] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self._inflight: dict[str, tuple[str, asyncio.Future[JsonObject]]] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._calls = 0
        self._calls_lock = threading.Lock()
        self._user_threads = ThreadPoolExecutor(user_threads, thread_name_prefix="flou-run")
        self._store_threads = ThreadPoolExecutor(store_threads, thread_name_prefix="flou-store")
        self._appends = GroupCommit(self._append_batch)
        self._closed = False

    async def __aenter__(self) -> AsyncRuntime:
        self._ensure_dispatcher()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float = 1.0) -> None:
        """Stops the dispatcher and the workers, giving steps in progress `grace` seconds.

        No new step starts. A worker whose step commits within `grace` seconds,
        and an idle one, give their leases back; a step still running then is
        abandoned: its lease runs out and another runtime takes the instance
        over (the step runs again there: user code runs at least once).
        """
        self._closed = True
        if self._stop_listening is not None:
            await asyncio.to_thread(self._stop_listening)
        for nudged in self._nudges.values():  # lingering workers: stop waiting, release
            nudged.set()
        if self._workers:
            await asyncio.wait(list(self._workers.values()), timeout=max(grace, 0.01))
        tasks = [*self._workers.values(), *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._appends.wait_idle()
        for future in self._waiters.values():
            future.cancel()
        for _ in range(500):  # store calls of cancelled tasks finish in their threads
            if not self._calls:
                break
            await asyncio.sleep(0.01)
        self._user_threads.shutdown(wait=False, cancel_futures=True)
        self._store_threads.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs a store operation in a thread, so the loop never blocks on I/O."""

        def counted() -> T:
            # Counted in the thread itself: cancelling the awaiting task does not stop it,
            # and `close` must not close the store under a call still running.
            with self._calls_lock:
                self._calls += 1
            try:
                return call(*args, **kwargs)
            finally:
                with self._calls_lock:
                    self._calls -= 1

        # The caller's context goes along: a retry deadline, a request id for the logs.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._store_threads, context.run, counted
        )

    @property
    def pending_work(self) -> int:
        """Work items waiting in the mailboxes of the instances this runtime holds."""
        return sum(self._pending.values())

    @property
    def leased_instances(self) -> int:
        """Instances this runtime holds a lease on (working, or lingering)."""
        return len(self._workers)

    # --- mutations ------------------------------------------------------------------------

    async def start(
        self,
        machine: str,
        payload: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
        instance_id: str = "",
        wait: WaitMode = WaitMode.PROCESSED,
        timeout: float | None = None,
    ) -> Instance:
        """Creates an instance of a registered machine and queues its root with `payload`.

        `timeout`: seconds a SETTLED wait may last; past them the call raises
        DeadlineExceededError (accepted: the instance exists and runs on).

        Raises:
            MachineNotFoundError, InstanceAlreadyExistsError, InvalidFieldError,
            RequestIdReusedError: as their names say.
        """
        hosted = self.registry.get(machine)
        owned = payload_of(payload)
        if instance_id and not _INSTANCE_ID.fullmatch(instance_id):
            raise InvalidFieldError.of(
                "instance_id",
                "1 to 128 characters of [A-Za-z0-9._:-], starting with a letter or digit",
            )

        async def create() -> tuple[JsonObject, Instance]:
            new_id = instance_id or _new_id()
            step = await self._step(hosted, hosted.start, new_id, owned)
            now = utcnow()
            work = [WorkRecord(_new_id(), item) for item in step.work]
            # A worker slot is free: the instance is born leased to us, and worked on at once.
            keep = bool(work) and not self._closed and self._free_slots() > 0
            self._births += keep  # its slot is taken from now on
            try:
                created = await self._db(
                    self.store.create,
                    InstanceRecord(new_id, hosted.name, 1, step.document, now, now),
                    EventRecord(
                        new_id,
                        1,
                        EventKind.STARTED,
                        {"payload": owned},
                        step.patch,
                        request_id=request_id,
                        create_time=now,
                    ),
                    work,
                    self.owner if keep else "",
                    self.lease_seconds,
                )
            finally:
                self._births -= keep
            self._remember(created)
            self._changed(new_id)
            born = Snapshot(created, work[0] if work else None, len(work), ())
            # No claim, no first read. (Closing meanwhile: its lease runs out, then any
            # runtime may claim it.)
            if keep and not self._closed and new_id not in self._workers:
                self._ensure_dispatcher()
                self._start_worker(new_id, born)
            else:
                self._kick()
            if wait is WaitMode.SETTLED:
                try:
                    view = await self.settle(new_id, timeout)
                except TimeoutError:
                    raise DeadlineExceededError(True, new_id) from None
            else:  # as the create left it: no read needed
                view = _view(self.registry, born)
            return {"instance_id": new_id}, view

        async def replay(response: JsonObject) -> Instance:
            return await self.get(str(response["instance_id"]))

        return await self._once(request_id, ("start", machine, owned, instance_id), create, replay)

    async def transition(
        self,
        instance_id: str,
        label: str,
        payload: Mapping[str, Any] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        namespace: str | None = None,
        *,
        request_id: str = "",
        expected_revision: int = 0,
        wait: WaitMode = WaitMode.PROCESSED,
        timeout: float | None = None,
    ) -> TransitionResult:
        """Sends a labelled event to an instance, behind its pending work.

        Args:
            instance_id: The instance.
            label: The label, a template as declared (`done_{id}`).
            payload: Passed to `run` of every state the transition queues.
            params: One map per lane, binding the `{param}` fields.
            namespace: Default: the root's name.
            request_id: Makes the call idempotent.
            expected_revision: When not 0, reject unless the instance is still
                at this revision when the transition's turn comes.
            wait: When to answer.
            timeout: Seconds the wait may last once the event is enqueued.

        Raises:
            TransitionNotAllowedError, MissingParamError, RevisionConflictError
            (once processed); InstanceNotFoundError, InvalidFieldError,
            RequestIdReusedError; DeadlineExceededError (accepted: the event
            is enqueued and will be processed; a repeat of the request_id
            answers its work item id, without the fired transitions).
        """
        machine, since = await self._locate(instance_id)
        item = transition_item(label, namespace or machine, params, payload)
        return await self._once(
            request_id,
            ("transition", instance_id, to_json(item), expected_revision),
            lambda: self._submit(
                instance_id, item, request_id, expected_revision, wait, since, timeout
            ),
            self._replay_submit,
        )

    async def update_state(
        self,
        instance_id: str,
        updates: Mapping[str, Any],
        fqn: str | None = None,
        *,
        request_id: str = "",
        expected_revision: int = 0,
        wait: WaitMode = WaitMode.PROCESSED,
        timeout: float | None = None,
    ) -> Instance:
        """Sets dotted keys of a node's state (the root's by default), behind pending work.

        Raises:
            NodeNotFoundError, StateKeyNotFoundError, RevisionConflictError (once
            processed); InstanceNotFoundError, InvalidFieldError, RequestIdReusedError.
        """
        result = await self.submit_update(
            instance_id,
            updates,
            fqn,
            request_id=request_id,
            expected_revision=expected_revision,
            wait=wait,
            timeout=timeout,
        )
        return result.instance

    async def submit_update(
        self,
        instance_id: str,
        updates: Mapping[str, Any],
        fqn: str | None = None,
        *,
        request_id: str = "",
        expected_revision: int = 0,
        wait: WaitMode = WaitMode.PROCESSED,
        timeout: float | None = None,
    ) -> TransitionResult:
        """`update_state`, answering the work item id too (`fired` is always empty)."""
        _, since = await self._locate(instance_id)
        item = update_item(fqn or "", updates)
        return await self._once(
            request_id,
            ("update_state", instance_id, to_json(item), expected_revision),
            lambda: self._submit(
                instance_id, item, request_id, expected_revision, wait, since, timeout
            ),
            self._replay_submit,
        )

    async def atomic_append(
        self,
        instance_id: str,
        key: str,
        value: Any,
        fqn: str | None = None,
        *,
        request_id: str = "",
        values: bool = True,
    ) -> AppendResult:
        """Appends `value` to the list at `key` of a node, at once, as one atomic step.

        `values`: answer the whole list after the append (else only its
        length, and the list is not read back: the cost stays flat as it grows).

        Raises:
            NodeNotFoundError, StateKeyNotFoundError, StateKeyNotListError,
            InstanceNotFoundError, InvalidFieldError, RequestIdReusedError.
        """
        try:
            owned = json_copy(value, "value")
        except ValueError as exc:
            raise InvalidFieldError.of("value", str(exc)) from None

        machine, _ = await self._locate(instance_id)

        async def append() -> tuple[JsonObject, AppendResult]:
            try:
                one = self._append_record(
                    instance_id, machine, fqn or "", key, owned, request_id, values=values
                )
            except NodeNotFoundError:  # a node below the root: its path needs the document
                result, committed = await self._db(
                    self._append, instance_id, machine, fqn or "", key, owned, request_id, ""
                )
                self._changed(instance_id, committed)
                if not values:
                    result = replace(result, values=[])
            else:  # with the appends that arrive meanwhile, in one transaction
                result = await self._appends.submit(one)
            answer = {
                "values": result.values,
                "revision": result.revision,
                "length": result.length,
            }
            return answer, result

        async def replay(response: JsonObject) -> AppendResult:
            kept = list(response["values"])
            length = int(response.get("length", len(kept)))  # kept before `length` was
            return AppendResult(kept, int(response["revision"]), length)

        # Only a request without the values says so: earlier fingerprints stay valid.
        body = (
            "atomic_append",
            instance_id,
            fqn or "",
            key,
            owned,
            *(() if values else ("basic",)),
        )
        return await self._once(request_id, body, append, replay)

    async def retry_errors(
        self, instance_id: str, work_item_ids: Sequence[str] = ()
    ) -> tuple[Instance, list[str]]:
        """Schedules again the steps that exhausted their retries; returns the retried ids."""
        record = await self._db(self.store.instance, instance_id)
        hosted = self.registry.get(record.machine)
        retried: list[str] = []
        for error in await self._db(self.store.errors, instance_id):
            if error.retrying or error.item is None:
                continue
            if work_item_ids and error.work_item_id not in work_item_ids:
                continue
            latest = await self._db(self.store.instance, instance_id)
            step = hosted.set_status(instance_id, latest.document, error.fqn, QUEUED)
            await self._db(self.store.clear_error, instance_id, error.work_item_id)
            await self._db(
                self.store.commit,
                instance_id,
                latest.revision,
                step.document,
                EventRecord(
                    instance_id,
                    0,
                    EventKind.RETRIED,
                    {"work_item_id": error.work_item_id, "fqn": error.fqn},
                    step.patch,
                ),
                None,
                [WorkRecord(error.work_item_id, error.item)],
            )
            retried.append(error.work_item_id)
        self._changed(instance_id)
        self._kick()
        return await self.get(instance_id), retried

    # --- reads --------------------------------------------------------------------------------

    async def get(self, instance_id: str) -> Instance:
        """The instance at its current revision."""
        return _view(self.registry, await self._db(self.store.head, instance_id))

    async def list_instances(
        self, machine: str = "", status: InstanceStatus | None = None
    ) -> list[Instance]:
        """Instances, newest first, optionally of one machine and in one status."""
        views = [await self.get(r.id) for r in await self._db(self.store.instances, machine)]
        return [v for v in views if status is None or v.status is status]

    async def history(
        self, instance_id: str, from_revision: int = 1, limit: int = 0
    ) -> list[Event]:
        """The instance's events from `from_revision` on, in revision order."""
        events = await self._db(self.store.events, instance_id, from_revision, limit)
        return [_event(e) for e in events]

    async def revisions(self, instance_id: str) -> tuple[int, int]:
        """The oldest revision whose event is kept, and the current revision."""
        record = await self._db(self.store.instance, instance_id)
        return await self._db(self.store.oldest_revision, instance_id), record.revision

    async def settle(self, instance_id: str, timeout: float | None = None) -> Instance:
        """Waits until the instance has no pending work, and returns it.

        Raises:
            TimeoutError: `timeout` seconds passed first.
        """
        async with asyncio.timeout(timeout):
            while True:
                signal = self._signal(instance_id)
                snapshot = await self._db(self.store.head, instance_id)
                if snapshot.next is None:
                    return _view(self.registry, snapshot)
                await self._until(signal)

    async def watch(
        self, instance_id: str, from_revision: int = 0
    ) -> AsyncGenerator[Instance | Event]:
        """Yields the instance at `from_revision` (0: the current one), then every later event.

        Raises:
            RevisionOutOfRangeError: `from_revision` is not a kept revision.
        """
        async for item in self.follow(instance_id, from_revision):
            if isinstance(item, Instance):
                yield item
            else:
                for event in item:
                    yield event

    async def follow(
        self, instance_id: str, from_revision: int = 0, page: int = 256
    ) -> AsyncGenerator[Instance | list[Event]]:
        """`watch`, by pages: the instance, then lists of up to `page` events in order.

        An empty list says the follower has caught up and now waits for the
        next change (a local commit, a notification from another runtime, or
        the poll): a streaming server uses it to tell a live watcher from one
        still reading history.

        Raises:
            RevisionOutOfRangeError: `from_revision` is not a kept revision.
        """
        snapshot = await self._db(self.store.head, instance_id)
        record = snapshot.instance
        start = from_revision or record.revision
        oldest = await self._db(self.store.oldest_revision, instance_id)
        if not oldest <= start <= record.revision:
            raise RevisionOutOfRangeError(instance_id, start, oldest, record.revision)
        if start == record.revision:
            yield _view(self.registry, snapshot)
        else:
            yield await self._view_at(record, start)
        after = start
        self._following[instance_id] += 1
        try:
            fresh = False
            while True:
                signal = self._signal(instance_id)
                events = await self._events_after(instance_id, after + 1, page, fresh)
                if events:
                    after = events[-1].revision
                    yield events
                if len(events) < page:
                    yield []
                    fresh = not await self._until(signal)  # a poll: maybe another process's
        finally:
            self._following[instance_id] -= 1
            if not self._following[instance_id]:
                del self._following[instance_id]
                self._recent.pop(instance_id, None)
                self._generations.pop(instance_id, None)

    async def _events_after(
        self, instance_id: str, start: int, page: int, fresh: bool = False
    ) -> list[Event]:
        """Up to `page` events from `start`, shared by the followers of an instance.

        Followers read the instance's recent events (`_Recent`), which local
        commits extend as they happen: N watchers of an instance cost no store
        read per local change, and one per change made elsewhere (announced,
        or found by a poll: `fresh` skips the sharing).
        """
        recent = self._recent.get(instance_id)
        generation = self._generations.get(instance_id, 0)
        if recent is not None and recent.first <= start <= recent.end:
            return recent.since(start, page)
        if (
            not fresh
            and recent is not None
            and start == recent.end + 1
            and recent.generation == generation
        ):
            return []  # nothing happened that it misses
        events = [_event(e) for e in await self._db(self.store.events, instance_id, start, page)]
        if instance_id in self._following:
            recent = self._recent.get(instance_id)
            if recent is None or start > recent.end + 1:
                recent = self._recent[instance_id] = _Recent(start, start - 1, generation)
            if recent.first <= start <= recent.end + 1:
                recent.add(events)
                if len(events) < page:  # all there was, as of `generation`
                    recent.generation = generation
        return events

    async def _until(self, signal: asyncio.Event) -> bool:
        """Waits for a local change (True), or `poll_interval` (False: another runtime's?)."""
        try:
            async with asyncio.timeout(self.poll_interval):
                await signal.wait()
        except TimeoutError:
            return False
        return True

    # --- the mailbox ------------------------------------------------------------------------

    async def _locate(self, instance_id: str) -> tuple[str, int]:
        """The instance's machine, and a revision it has reached (read if not known here).

        An instance never changes machine and its revision only grows, so a
        remembered pair stays true enough: callers need the machine, and a
        revision at or below the current one.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        known = self._known.get(instance_id)
        if known is None:
            record = await self._db(self.store.instance, instance_id)
            known = self._remember(record)
        return known

    def _remember(self, record: InstanceRecord) -> tuple[str, int]:
        if len(self._known) >= _KNOWN_INSTANCES:
            self._known.clear()  # a bound, not a cache policy: reads refill what is used
        known = self._known[record.id] = (record.machine, record.revision)
        return known

    async def _submit(
        self,
        instance_id: str,
        item: WorkItem,
        request_id: str,
        expected_revision: int,
        wait: WaitMode,
        since: int,
        timeout: float | None = None,
    ) -> tuple[JsonObject, TransitionResult]:
        """Enqueues one work item and waits as asked; `since` is a revision read before.

        Raises:
            DeadlineExceededError: `timeout` seconds passed after the enqueue.
        """
        if expected_revision < 0:
            raise InvalidFieldError.of("expected_revision", "must be 0 (no check) or positive")
        record = WorkRecord(_new_id(), item, request_id, expected_revision)
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[record.id] = future
        try:
            # Made before the enqueue: a commit of the item, wherever it happens, sets it.
            first_signal = self._signal(instance_id)
            handed = self._hand_over(instance_id, record, wait)
            if handed is None:
                earlier = self._handoffs.pop(instance_id, None)
                if earlier is not None:  # handed over before this one: it queues first
                    await self._queue_handed(instance_id, *earlier)
                await self._enqueue(instance_id, record)
            if wait is WaitMode.ENQUEUED:
                result = TransitionResult(await self.get(instance_id), [], record.id)
                return self._submitted(result), result
            try:
                async with asyncio.timeout(timeout):
                    outcome = await self._processed(
                        instance_id, record.id, since, future, first_signal
                    )
                    instance = (
                        await self.settle(instance_id)
                        if wait is WaitMode.SETTLED
                        else _view(self.registry, outcome.snapshot)
                    )
            except TimeoutError:
                accepted = True
                if handed is not None:  # accepted once committed or queued
                    waiting = self._handoffs.get(instance_id)
                    if waiting is not None and waiting[0] is record:  # not taken yet: queue it
                        del self._handoffs[instance_id]
                        await self._queue_handed(instance_id, record, handed)
                    accepted = await asyncio.shield(handed)  # else its pure step ends soon
                raise DeadlineExceededError(accepted, instance_id, record.id) from None
        finally:
            self._waiters.pop(record.id, None)
        result = TransitionResult(instance, outcome.fired, record.id)
        return self._submitted(result), result

    async def _enqueue(self, instance_id: str, record: WorkRecord) -> None:
        """Puts an item in the mailbox and wakes our worker of the instance, or claims it."""
        await self._db(self.store.enqueue, instance_id, [record])
        if not self._nudge(instance_id):  # no worker of ours holds it: claim it
            self._kick()

    def _hand_over(
        self, instance_id: str, record: WorkRecord, wait: WaitMode
    ) -> asyncio.Future[bool] | None:
        """Gives an item straight to the instance's worker here, if it has one; else None.

        If the worker's mailbox is empty once its step in progress is done, it
        takes the item's step with no enqueue first: one transaction instead of
        two, and no mailbox read. The commit checks, holding the instance's
        row, that nothing was queued meanwhile (by another process); if
        something was, or the instance moved on, or the mailbox was not empty,
        the item is queued after all and taken in turn. One item at a time;
        only for pure steps (a slow one would leave the item unaccepted for
        long) and for callers that wait for the step. Returns the item's fate:
        True once committed or queued.
        """
        known = self._known.get(instance_id)
        if (
            wait is WaitMode.ENQUEUED
            or known is None
            or instance_id not in self._workers
            or instance_id in self._handoffs
            or self.registry.get(known[0]).user_code_in_steps
        ):
            return None
        fate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._handoffs[instance_id] = (record, fate)
        self._nudge(instance_id)
        return fate

    async def _process_handed(
        self, snapshot: Snapshot, record: WorkRecord, fate: asyncio.Future[bool]
    ) -> Snapshot | None:
        """Takes the step of an item handed over; None if it was queued instead."""
        try:
            after = await self._process(snapshot, record, alone=True)
        except (MailboxNotEmptyError, RevisionConflictError):
            pass  # work came in, or the instance moved on: the item queues like any other
        except asyncio.CancelledError:
            self._rescue(snapshot.instance.id, record, fate)
            raise
        except BaseException:
            await self._queue_handed(snapshot.instance.id, record, fate)
            raise
        else:
            _decide(fate, True)
            return after
        await self._queue_handed(snapshot.instance.id, record, fate)
        return None

    async def _queue_handed(
        self, instance_id: str, record: WorkRecord, fate: asyncio.Future[bool]
    ) -> None:
        """Queues a handed-over item that could not take its step; its waiter hears failures."""
        try:
            await self._enqueue(instance_id, record)
        except Exception as exc:
            _decide(fate, False)
            self._resolve(record.id, exc)
            return
        _decide(fate, True)

    def _rescue(self, instance_id: str, record: WorkRecord, fate: asyncio.Future[bool]) -> None:
        """A worker stopped holding a handed-over item: queue it (or, closing, drop it)."""
        if self._closed:
            _decide(fate, False)
            self._resolve(record.id, ShuttingDownError())
            return
        asyncio.get_running_loop().create_task(self._queue_handed(instance_id, record, fate))

    async def _processed(
        self,
        instance_id: str,
        work_item_id: str,
        since: int,
        future: asyncio.Future[_Outcome],
        signal: asyncio.Event,
    ) -> _Outcome:
        """Waits until a work item's step is committed, by this runtime or another one.

        This runtime's own worker answers through `future`; a step another
        runtime committed is found in the history (its event names the item).
        The history is read only while no worker of this runtime holds the
        instance: one that does answers through `future`, or, if it loses the
        lease, ends and wakes this wait to look.

        Raises:
            FlouError: The item was rejected (the error it was rejected with).
        """
        scan = False  # this runtime usually processes the item itself: wait for that first
        while not future.done():
            if scan:
                signal = self._signal(instance_id)
                scan = instance_id not in self._workers
            for event in await self._db(self.store.events, instance_id, since + 1) if scan else ():
                since = event.revision
                if event.item.get("work_item_id") != work_item_id:
                    continue
                if event.rejection is not None:
                    info = event.rejection
                    raise FlouError.from_json(info)
                return _Outcome(await self._db(self.store.head, instance_id), event.fired)
            waiting: asyncio.Future[Any] = asyncio.ensure_future(signal.wait())
            either: set[asyncio.Future[Any]] = {future, waiting}
            try:
                await asyncio.wait(
                    either,
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiting.cancel()
            scan = True
        return future.result()

    @staticmethod
    def _submitted(result: TransitionResult) -> JsonObject:
        return {
            "instance_id": result.instance.id,
            "work_item_id": result.work_item_id,
            "fired": result.fired,
        }

    async def _replay_submit(self, response: JsonObject) -> TransitionResult:
        instance = await self.get(str(response["instance_id"]))
        return TransitionResult(instance, list(response["fired"]), str(response["work_item_id"]))

    def _ensure_dispatcher(self) -> None:
        if (self._dispatcher is None or self._dispatcher.done()) and not self._closed:
            loop = asyncio.get_running_loop()
            if not self._listening_asked:
                self._listening_asked = True

                def heard(channel: str, payload: str) -> None:  # in the store's listener thread
                    loop.call_soon_threadsafe(self._notified, channel, payload)

                self._stop_listening = self.store.listen(heard)
                if self._poll_setting is None and self._stop_listening is not None:
                    self.poll_interval = 5.0  # notifications wake us; polling is a safety net
            self._dispatcher = loop.create_task(self._dispatch(), name="flou-dispatcher")

    def _notified(self, channel: str, instance_id: str) -> None:
        """Another process committed a change: new work to claim, or new events to watch."""
        if channel == RECONNECTED or (channel == WORK_CHANNEL and not self._nudge(instance_id)):
            self._wake.set()  # work for an instance none of our workers holds: claim it
        if channel == EVENTS_CHANNEL:
            self._changed(instance_id)
        elif channel == RECONNECTED:  # notifications may have been lost: everyone looks again
            for waiting in list(self._signals):
                self._changed(waiting)

    def _kick(self) -> None:
        """There is new work: claim it now rather than at the next poll."""
        self._wake.set()
        self._ensure_dispatcher()

    async def _dispatch(self) -> None:
        """Claims instances with pending work and starts a worker for each (renews leases)."""
        woken = True  # by new work (`_kick`, a notice), not by the poll's timer
        while not self._closed:
            self._wake.clear()
            try:
                free = self._free_slots()
                if free <= 0 and woken:  # work waits: a poll alone evicts no worker
                    self._make_room()
                claimed = (
                    await self._db(self.store.claim, self.owner, self.lease_seconds, free)
                    if free > 0
                    else []
                )
            except Exception:
                _log.exception("claiming work failed; trying again")
                claimed = []
            for instance_id in claimed:
                if instance_id in self._workers:  # renewed: its worker looks again
                    self._nudge(instance_id)
                else:
                    self._start_worker(instance_id)
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
                woken = True
            except TimeoutError:
                woken = False

    def _signal(self, instance_id: str) -> asyncio.Event:
        return self._signals.setdefault(instance_id, asyncio.Event())

    def _changed(self, instance_id: str, *committed: EventRecord) -> None:
        """Wakes whoever waits on the instance, and tells the change listeners.

        `committed`: the events this runtime just committed, in revision
        order, which its followers then read without the store.
        """
        if instance_id in self._following and not self._publish(instance_id, committed):
            # A change its followers' recent events do not hold: they read the store.
            self._generations[instance_id] = self._generations.get(instance_id, 0) + 1
        signal = self._signals.pop(instance_id, None)
        if signal is not None:
            signal.set()
        for listener in self._listeners:
            listener(instance_id)

    def _publish(self, instance_id: str, committed: Sequence[EventRecord]) -> bool:
        """Adds committed events to the followers' recent events, if they continue them."""
        recent = self._recent.get(instance_id)
        if not committed or recent is None or committed[0].revision != recent.end + 1:
            return False
        recent.add([_event(e) for e in committed])
        return True

    def on_change(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Calls `listener(instance_id)`, on the loop, whenever an instance may have changed.

        Changes committed here, and those other runtimes sharing the
        database announce (PostgreSQL); calls may come with nothing new.
        Returns a function that removes the listener.
        """
        self._ensure_dispatcher()
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def machine_of(self, instance_id: str) -> str:
        """The machine an instance runs.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        return (await self._locate(instance_id))[0]

    def _resolve(self, work_item_id: str, outcome: _Outcome | BaseException) -> None:
        future = self._waiters.get(work_item_id)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _start_worker(self, instance_id: str, snapshot: Snapshot | None = None) -> None:
        """Starts the worker of an instance this runtime holds the lease of.

        Its nudge exists from now on, before the task first runs: what comes
        meanwhile wakes it.
        """
        self._nudges[instance_id] = asyncio.Event()
        self._workers[instance_id] = asyncio.get_running_loop().create_task(
            self._work(instance_id, snapshot), name=f"flou-worker:{instance_id}"
        )

    async def _work(self, instance_id: str, snapshot: Snapshot | None = None) -> None:
        """Works through one claimed instance's mailbox, then keeps it for `linger` seconds.

        Holding the lease a while longer spares the next burst a claim and a
        release: a caller driving the instance step by step finds its worker
        still there. New work wakes the worker through `_nudge` (an enqueue
        here, a notification from another runtime, a claim that found it).
        `snapshot`: the instance as known (just created), else read first.
        """
        nudged = self._nudges[instance_id]
        try:
            if snapshot is None:
                snapshot = await self._db(self.store.head, instance_id)
            while not self._closed:
                self._pending[instance_id] = snapshot.pending
                work = snapshot.next
                handed = self._handoffs.pop(instance_id, None)
                if handed is not None and work is None:  # nothing queued before it
                    nudged.clear()
                    after = await self._process_handed(snapshot, *handed)
                    if after is not None:
                        snapshot = after
                        continue
                elif work is not None:
                    if handed is not None:  # work was queued before it: it queues behind
                        await self._queue_handed(instance_id, *handed)
                    nudged.clear()  # what the step's snapshot misses wakes us again
                    after = await self._process(snapshot, work)
                    if after is not None:
                        snapshot = after
                        continue
                else:
                    self._lingering[instance_id] = False
                    try:
                        async with asyncio.timeout(self.linger):
                            await nudged.wait()
                    except TimeoutError:
                        pass
                    finally:
                        evicted = self._lingering.pop(instance_id, False)
                    if instance_id in self._handoffs:
                        continue  # taken above, on this snapshot: no read needed
                    if evicted or not nudged.is_set():
                        break  # lingered long enough, or its slot is needed
                nudged.clear()
                snapshot = await self._db(self.store.head, instance_id)
            await self._db(self.store.release, self.owner, instance_id)
        except LeaseLostError:
            _log.warning("instance %s: lease lost to another runtime; step abandoned", instance_id)
        except FlouError as exc:  # the instance itself is gone or unreadable
            _log.error("instance %s: cannot process work: %s", instance_id, exc)
        finally:
            if self._workers.get(instance_id) is asyncio.current_task():
                del self._workers[instance_id]
                del self._nudges[instance_id]
                self._pending.pop(instance_id, None)
                handed = self._handoffs.pop(instance_id, None)
                if handed is not None:
                    self._rescue(instance_id, *handed)
            self._changed(instance_id)
            if not self._closed:
                self._kick()  # its mailbox may have grown since the last look

    def _free_slots(self) -> int:
        """Worker slots neither taken nor promised to an instance being started."""
        return self.max_workers - len(self._workers) - self._births

    def _make_room(self) -> None:
        """Every worker slot is taken: the oldest lingering workers go, and free theirs.

        A worker lingers to spare its instance's next event a claim; work
        that waits for a slot comes first. An evicted worker releases its
        lease, and its exit wakes the dispatcher to claim again (and, if
        every slot is taken again, to make room again): a few at a time, so
        that the instances driven right now keep theirs.
        """
        asked = 0
        for instance_id, evicted in self._lingering.items():
            if asked == _EVICTED_AT_ONCE:
                break
            if not evicted:
                self._lingering[instance_id] = True
                self._nudge(instance_id)
                asked += 1

    def _nudge(self, instance_id: str) -> bool:
        """Wakes this runtime's worker of the instance, if it has one."""
        nudged = self._nudges.get(instance_id)
        if nudged is not None:
            nudged.set()
        return nudged is not None

    async def _process(
        self, snapshot: Snapshot, work: WorkRecord, alone: bool = False
    ) -> Snapshot | None:
        """Takes one step; returns the instance as it left it, or None to read it afresh.

        `alone`: the item was handed over, not queued (`_hand_over`); then
        MailboxNotEmptyError or RevisionConflictError say nothing was committed.
        """
        instance = snapshot.instance
        instance_id = instance.id
        hosted = self.registry.get(instance.machine)
        if work.expected_revision and work.expected_revision != instance.revision:
            return await self._reject(
                instance,
                work,
                RevisionConflictError(instance_id, work.expected_revision, instance.revision),
                alone,
            )
        item = work.item
        if isinstance(item, Execute):
            return await self._execute(snapshot, hosted, work, item)
        try:
            if isinstance(item, Transition):
                step = await self._step(
                    hosted, hosted.transition, instance_id, instance.document, item
                )
                kind = EventKind.TRANSITIONED
            else:
                assert isinstance(item, UpdateState)
                step = hosted.update_state(instance_id, instance.document, item)
                kind = EventKind.STATE_UPDATED
            self._check_size(step.document)
        except FlouError as exc:
            return await self._reject(instance, work, exc, alone)
        except Exception:
            _log.exception("instance %s: work item %s failed unexpectedly", instance_id, work.id)
            return await self._reject(instance, work, InternalError(), alone)
        fired = _fired_json(step.fired)
        last = alone or snapshot.pending == 1  # nothing queued behind it: chain what it makes
        after = await self._commit(
            instance, step, kind, work, fired=fired, alone=alone, chain=last
        )
        answer = after  # as the step left the instance, before the steps chained to it
        if after.instance.revision != instance.revision + 1:
            at = replace(after.instance, revision=instance.revision + 1, document=step.document)
            answer = Snapshot(at, None, len(step.work), after.errors)
        self._resolve(work.id, _Outcome(answer, fired))
        return after

    async def _step(
        self, hosted: Hosted, step: Callable[P, Step], *args: P.args, **kwargs: P.kwargs
    ) -> Step:
        """Takes a step: on the loop when it is pure, else in the user-code threads."""
        if not hosted.user_code_in_steps:
            return step(*args, **kwargs)
        call = functools.partial(step, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._user_threads, call)

    async def _commit(
        self,
        instance: InstanceRecord,
        step: Step,
        kind: EventKind,
        work: WorkRecord,
        *,
        fired: list[JsonObject] | None = None,
        error: JsonObject | None = None,
        alone: bool = False,
        chain: bool = False,
    ) -> Snapshot:
        """Commits a step; with `chain`, and the steps of the work it made that run no code.

        `chain` says that the mailbox held nothing but `work` (nothing, for a
        handed-over step): the new work would come next. The store checks it.
        If work came in meanwhile, the step commits again without the chained
        steps; a handed-over step raises MailboxNotEmptyError instead, and its
        item queues.
        """
        event = _item_event(instance.id, kind, work, step.patch, fired=fired or [], error=error)
        document, queued = step.document, list(step.work)
        chained: list[EventRecord] = []
        if chain:
            document, queued, chained = self._chain(instance, step)
        try:
            after = await self._db(
                self.store.commit,
                instance.id,
                instance.revision,
                document,
                event,
                None if alone else work.id,
                [WorkRecord(_new_id(), new) for new in queued],
                self.owner,
                alone,
                chained,
            )
        except MailboxNotEmptyError:
            if alone or not chained:
                raise
            return await self._commit(instance, step, kind, work, fired=fired, error=error)
        self._remember(after.instance)
        self.observer.step_committed(kind)
        for chained_event in chained:
            self.observer.step_committed(chained_event.kind)
        committed = (event, *chained)
        self._changed(
            instance.id,
            *(replace(e, revision=instance.revision + n) for n, e in enumerate(committed, 1)),
        )
        return after

    def _chain(
        self, instance: InstanceRecord, step: Step
    ) -> tuple[JsonObject, list[WorkItem], list[EventRecord]]:
        """Takes now the steps of the work a step made, while what comes first runs no code.

        The execute of a node with no `run`, and a transition its code queued,
        are pure steps: they can go in the transaction of the step that queued
        them, each at the next revision with its own event, as if taken from
        the mailbox (`Store.commit`'s `chained`). A transition into a state
        with no code is then one transaction, not two; a `run` that moves on
        with `self.transition` commits with the move. Returns the document
        after the chained steps, the work left to queue and their events.
        Anything else (code to run, a rejected transition, a limit, an error)
        ends the chain: that item queues, and the worker takes it as usual.
        """
        hosted = self.registry.get(instance.machine)
        document, queued, chained = step.document, list(step.work), list[EventRecord]()
        if hosted.user_code_in_steps:
            return document, queued, chained
        while queued and len(chained) < _CHAIN_LIMIT:
            item = queued[0]
            try:
                taken = _pure_step(hosted, instance.id, document, item)
                if taken is not None and taken[1] is not None:
                    self._check_size(taken[1].document)
            except Exception:  # the worker takes it again, and reports it
                break
            if taken is None:
                break
            del queued[0]
            kind, taken_step = taken
            if taken_step is None:  # an execute no longer needed: discarded, as the worker would
                continue
            taken_work, fired = WorkRecord(_new_id(), item), _fired_json(taken_step.fired)
            chained.append(
                _item_event(instance.id, kind, taken_work, taken_step.patch, fired=fired)
            )
            document = taken_step.document
            queued += taken_step.work
        return document, queued, chained

    async def _reject(
        self, instance: InstanceRecord, work: WorkRecord, error: FlouError, alone: bool = False
    ) -> Snapshot:
        event = _item_event(instance.id, EventKind.REJECTED, work, [], rejection=error.to_info())
        after = await self._db(
            self.store.commit,
            instance.id,
            instance.revision,
            instance.document,
            event,
            None if alone else work.id,
            (),
            self.owner,
            alone,
        )
        self.observer.step_committed(EventKind.REJECTED)
        self._changed(instance.id, replace(event, revision=instance.revision + 1))
        self._resolve(work.id, error)
        return after

    async def _execute(
        self, snapshot: Snapshot, hosted: Hosted, work: WorkRecord, item: Execute
    ) -> Snapshot | None:
        instance = snapshot.instance
        calls = 0
        loop = asyncio.get_running_loop()

        def append_hook(fqn: str, key: str, value: Any) -> list[Any]:
            # Called by the node's code: in a worker thread for a sync `run`.
            nonlocal calls
            calls += 1
            dedup = f"{work.id}:{calls}"  # a retried run's appends answer the first ones'
            result, _ = self._append(instance.id, instance.machine, fqn, key, value, "", dedup)
            loop.call_soon_threadsafe(self._changed, instance.id)
            return result.values

        execution = hosted.prepare(instance.id, instance.document, item, append_hook)
        if execution is None:
            await self._db(self.store.discard, instance.id, work.id)
            after = await self._db(self.store.head, instance.id)
            self._resolve(work.id, _Outcome(after, []))
            return after
        try:
            if not execution.runs_code:
                pass  # no thread for a run that does nothing
            elif inspect.iscoroutinefunction(type(execution.node).run):
                await _awaited(execution.run())
            else:
                # Its own bounded pool: user code that blocks cannot starve the store's calls.
                result = await loop.run_in_executor(self._user_threads, execution.run)
                if inspect.isawaitable(result):
                    await result
            last = snapshot.pending == 1  # nothing queued behind it: chain what it makes
            after = await self._apply(instance, hosted, work, item, execution.effects, last)
        except (LeaseLostError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the user's code, or what it queued, failed
            return await self._failed(snapshot, hosted, work, item, exc)
        self._resolve(work.id, _Outcome(after, []))  # its commit forgot its failures
        return after

    async def _apply(
        self,
        read: InstanceRecord,
        hosted: Hosted,
        work: WorkRecord,
        item: Execute,
        effects: Any,
        chain: bool = False,
    ) -> Snapshot:
        """Applies a run's effects to the document it read; to the latest if that moved on.

        Only atomic appends commit while a run runs (the mailbox serializes the
        rest), so the compare-and-set nearly always holds on the first try.
        `chain`: as `_commit`'s.
        """
        latest = read
        while True:
            step = hosted.execute(latest.id, latest.document, item, effects)
            self._check_size(step.document)  # too big: the run failed (retried, then error)
            try:
                return await self._commit(latest, step, EventKind.EXECUTED, work, chain=chain)
            except RevisionConflictError:  # an append committed meanwhile: apply to its result
                latest = await self._db(self.store.instance, latest.id)

    async def _failed(
        self, snapshot: Snapshot, hosted: Hosted, work: WorkRecord, item: Execute, exc: Exception
    ) -> Snapshot | None:
        """Records a failed run; retries it after a backoff, or marks its node `error`.

        The snapshot's errors are current: only the lease holder writes them.
        """
        instance_id = snapshot.instance.id
        previous = {e.work_item_id: e for e in snapshot.errors}
        attempts = (previous[work.id].attempts if work.id in previous else 0) + 1
        instance = await self._db(self.store.instance, instance_id)  # appends may have moved it
        _, cls = hosted.path_of(instance_id, instance.document, item.fqn)
        retrying = attempts <= cls.retries
        error = ErrorRecord(
            work.id,
            item.fqn,
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            str(exc),
            "".join(traceback.format_exception(exc)),
            attempts,
            retrying,
            item,
        )
        await self._db(self.store.put_error, instance_id, error)
        self.observer.run_failed(instance.machine, item.fqn)
        _log.warning(
            "instance %s: %s failed (attempt %d of %d): %r",
            instance_id,
            item.fqn,
            attempts,
            cls.retries + 1,
            exc,
        )
        self._changed(instance_id)
        if retrying:
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (attempts - 1))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            return None
        step = hosted.set_status(instance_id, instance.document, item.fqn, ERROR)
        after = await self._commit(
            instance, step, EventKind.FAILED, work, error=_error_json(error)
        )
        self._resolve(work.id, _Outcome(after, []))
        return after

    def _check_size(self, document: JsonObject) -> None:
        """Raises LimitExceededError when a document would be over `max_state_bytes`."""
        if self.max_state_bytes is None:
            return
        size = json_size(document)
        if size > self.max_state_bytes:
            raise LimitExceededError("state", "max_state_bytes", self.max_state_bytes, size)

    def _append(
        self,
        instance_id: str,
        machine: str,
        fqn: str,
        key: str,
        value: Any,
        request_id: str,
        dedup: str,
    ) -> tuple[AppendResult, EventRecord]:
        """Appends in one statement; answers the result and the event (if `dedup` was new).

        The root's lists need no read first; another node's path and class
        come from the current document. The store measures the state the
        append leaves against `max_state_bytes`.
        """
        try:
            one = self._append_record(instance_id, machine, fqn, key, value, request_id)
        except NodeNotFoundError:
            document = self.store.instance(instance_id).document
            one = self._append_record(instance_id, machine, fqn, key, value, request_id, document)
        try:
            listed, revision = self.store.append(
                instance_id, one.path, value, one.event, dedup, self.max_state_bytes
            )
            outcome: Appended | Exception = Appended(listed, len(listed), revision)
        except (KeyError, TypeError) as exc:
            outcome = exc
        appended = _appended(one, outcome)
        if isinstance(appended, Exception):
            raise appended
        return appended

    def _append_record(
        self,
        instance_id: str,
        machine: str,
        fqn: str,
        key: str,
        value: Any,
        request_id: str,
        document: JsonObject | None = None,
        *,
        values: bool = True,
    ) -> AppendRecord:
        """The append of `value` to `key` of node `fqn`, for the store (`values`: with the list).

        Raises:
            NodeNotFoundError: No such node; without `document`, also any node
                below the root (where it is, and its class, need the document).
            InvalidFieldError: `key` names no state key of the node.
        """
        hosted = self.registry.get(machine)
        path, cls = hosted.path_of(instance_id, {} if document is None else document, fqn)
        node_fqn = ".".join((hosted.name, *path))
        event = EventRecord(
            instance_id,
            0,
            EventKind.APPENDED,
            {"fqn": node_fqn, "key": key, "value": value},
            [],
            request_id=request_id,
        )
        target = state_key_path(cls, path, key, "key")
        return AppendRecord(instance_id, target, value, event, with_values=values)

    async def _append_batch(self, batch: Sequence[AppendRecord]) -> list[AppendResult | Exception]:
        """Commits appends together (`GroupCommit`); tells of each, in revision order."""
        outcomes = await self._db(self.store.append_many, batch, self.max_state_bytes)
        # Committed: nothing may raise from here, or GroupCommit would make the calls again.
        results: list[AppendResult | Exception] = []
        for one, outcome in zip(batch, outcomes, strict=True):
            try:
                appended = _appended(one, outcome)
                if isinstance(appended, Exception):
                    results.append(appended)
                    continue
                result, committed = appended
                self._changed(one.instance_id, committed)
                results.append(result)
            except Exception:
                _log.exception("after the commit of an append to %s", one.instance_id)
                results.append(InternalError())
        return results

    async def _once(
        self,
        request_id: str,
        body: tuple[Any, ...],
        compute: Callable[[], Awaitable[tuple[JsonObject, T]]],
        replay: Callable[[JsonObject], Awaitable[T]],
    ) -> T:
        """Runs a mutation once per request id; a repeat answers from the first outcome.

        The first outcome is stored as JSON (`compute` gives it with the
        result); a repeat rebuilds its answer with `replay`, from the current
        state where the answer holds an instance (AIP-155 allows it), or raises
        the first error again.
        """
        self._ensure_dispatcher()
        if not request_id:
            return (await compute())[1]
        if len(request_id) > 128:
            raise InvalidFieldError.of("request_id", "at most 128 characters")
        fingerprint = _fingerprint(*body)
        inflight = self._inflight.get(request_id)
        if inflight is not None:  # a duplicate of a call still running here: share its answer
            if inflight[0] != fingerprint:
                raise RequestIdReusedError(request_id)
            return await self._answer(await asyncio.shield(inflight[1]), replay)
        # Registered before any await, so that a concurrent duplicate finds it.
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._inflight[request_id] = (fingerprint, future)
        try:
            stored = await self._db(self.store.request, request_id)
            if stored is not None:
                response = (
                    stored.response
                    if stored.fingerprint == fingerprint
                    else {"error": RequestIdReusedError(request_id).to_info()}
                )
            else:
                try:
                    response, result = await compute()
                except DeadlineExceededError as exc:
                    if exc.accepted:  # it happened: a repeat answers it, and enqueues nothing
                        accepted = {"instance_id": exc.instance_id, "fired": []}
                        accepted["work_item_id"] = exc.work_item_id
                        await self._db(
                            self.store.put_request,
                            RequestRecord(request_id, fingerprint, accepted),
                        )
                    raise
                except FlouError as exc:
                    response = {"error": exc.to_info()}
                    await self._db(
                        self.store.put_request, RequestRecord(request_id, fingerprint, response)
                    )
                    raise
                await self._db(
                    self.store.put_request, RequestRecord(request_id, fingerprint, response)
                )
                future.set_result(response)
                return result
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, DeadlineExceededError):  # this caller's deadline only
                    future.set_exception(exc)
                    future.exception()
                elif isinstance(exc, FlouError):
                    future.set_result({"error": exc.to_info()})
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: duplicates waiting on it get it too
            raise
        finally:
            del self._inflight[request_id]
        future.set_result(response)
        return await self._answer(response, replay)

    @staticmethod
    async def _answer(response: JsonObject, replay: Callable[[JsonObject], Awaitable[T]]) -> T:
        """The answer to a repeated request: the first error again, or `replay`'s."""
        if "error" in response:
            error = response["error"]
            raise FlouError.from_json(error)
        return await replay(response)

    # --- views ----------------------------------------------------------------------------------

    async def _view_at(self, record: InstanceRecord, revision: int) -> Instance:
        document: JsonObject = {}
        update_time = record.create_time
        for event in await self._db(self.store.events, record.id, 1, revision):
            document = apply_patch(document, event.patch)
            update_time = event.create_time
        at = replace(record, revision=revision, document=document, update_time=update_time)
        return _view(self.registry, Snapshot(at, None, 0, ()), InstanceStatus.RUNNING)


def _view(
    registry: Registry, snapshot: Snapshot, status: InstanceStatus | None = None
) -> Instance:
    """What callers see of an instance; `status` None: from its nodes and mailbox."""
    record = snapshot.instance
    nodes = registry.get(record.machine).nodes(record.document)  # one walk for both uses
    if status is None:
        if any(node_status == ERROR for _, node_status in nodes):
            status = InstanceStatus.FAILED
        elif snapshot.pending:
            status = InstanceStatus.RUNNING
        else:
            status = InstanceStatus.WAITING
    return Instance(
        id=record.id,
        machine=record.machine,
        revision=record.revision,
        status=status,
        state=json_copy(record.document),
        active_states=tuple(fqn for fqn, node_status in nodes if node_status == ACTIVE),
        pending_work_count=snapshot.pending,
        errors=tuple(_step_error(e) for e in snapshot.errors),
        create_time=record.create_time,
        update_time=record.update_time,
    )


def _item_event(
    instance_id: str, kind: EventKind, work: WorkRecord, patch: list[JsonObject], **fields: Any
) -> EventRecord:
    """The event of a work item's step: the item, with its id, is the event's `item`."""
    item = {"work_item_id": work.id, **to_json(work.item)}
    return EventRecord(instance_id, 0, kind, item, patch, request_id=work.request_id, **fields)


def _appended(
    one: AppendRecord, outcome: Appended | Exception
) -> tuple[AppendResult, EventRecord] | Exception:
    """The store's outcome of an append: its result and committed event, or its error."""
    if isinstance(outcome, KeyError):
        return StateKeyNotFoundError(one.instance_id, one.event.item["fqn"], one.event.item["key"])
    if isinstance(outcome, TypeError):
        return StateKeyNotListError(
            one.instance_id, one.event.item["fqn"], one.event.item["key"], str(outcome)
        )
    if isinstance(outcome, Exception):
        return outcome
    committed = replace(
        one.event, revision=outcome.revision, patch=[append_op(one.path, one.value)]
    )
    return AppendResult(outcome.values or [], outcome.revision, outcome.length), committed


def _decide(fate: asyncio.Future[bool], accepted: bool) -> None:
    """Settles a handed-over item's fate, unless it is settled already."""
    if not fate.done():
        fate.set_result(accepted)


async def _awaited(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


def _event(record: EventRecord) -> Event:
    return Event(
        instance_id=record.instance_id,
        revision=record.revision,
        kind=EventKind(record.kind),
        item=record.item,
        patch=record.patch,
        create_time=record.create_time,
        fired=record.fired,
        error=record.error,
        rejection=record.rejection,
        request_id=record.request_id,
    )


def _error_json(error: ErrorRecord) -> JsonObject:
    return {
        "work_item_id": error.work_item_id,
        "fqn": error.fqn,
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "attempts": error.attempts,
        "retrying": error.retrying,
    }


def _step_error(error: ErrorRecord) -> StepError:
    return StepError(
        work_item_id=error.work_item_id,
        fqn=error.fqn,
        type=error.type,
        message=error.message,
        traceback=error.traceback,
        attempts=error.attempts,
        retrying=error.retrying,
        update_time=error.update_time,
    )
