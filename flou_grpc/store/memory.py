"""`MemoryStore`: the store kept in process memory.

A real implementation of the store's operations, with their guarantees within
one process: every operation is atomic (one lock), commits are
compare-and-set on the revision, appends are deduplicated by their key. It
keeps nothing across restarts: it serves the embedded Runtime until the
durable SQL store lands, and tests.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from flou_grpc.engine.document import (
    DocWriter,
    JsonObject,
    Path,
    json_copy,
    json_size,
)
from flou_grpc.errors import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LimitExceededError,
    RevisionConflictError,
)
from flou_grpc.store.base import LeaseLostError, MailboxNotEmptyError
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

__all__ = ["MemoryStore"]


class MemoryStore:
    """Instances, mailboxes, history, errors and request records in memory; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._instances: dict[str, InstanceRecord] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._mailboxes: dict[str, list[WorkRecord]] = {}
        self._errors: dict[str, dict[str, ErrorRecord]] = {}
        self._requests: dict[str, RequestRecord] = {}
        self._appends: dict[str, tuple[list[Any], int]] = {}
        self._seq = itertools.count(1)
        self._leases: dict[str, tuple[str, float]] = {}

    # --- instances ----------------------------------------------------------------------

    def create(
        self,
        instance: InstanceRecord,
        event: EventRecord,
        work: Sequence[WorkRecord],
        owner: str = "",
        lease_seconds: float = 0.0,
    ) -> InstanceRecord:
        """Stores a new instance at revision 1 with its start event and first work.

        With `owner`, leased to it for `lease_seconds`.

        Raises:
            InstanceAlreadyExistsError: The id is taken.
        """
        with self._lock:
            if instance.id in self._instances:
                raise InstanceAlreadyExistsError(instance.id)
            if owner:
                self._leases[instance.id] = (owner, time.monotonic() + lease_seconds)
            record = replace(instance, revision=1)
            self._instances[instance.id] = record
            self._events[instance.id] = [replace(event, revision=1)]
            self._mailboxes[instance.id] = []
            self._errors[instance.id] = {}
            self._enqueue(instance.id, work)
            return record

    def instance(self, instance_id: str) -> InstanceRecord:
        """The instance at its current revision.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        with self._lock:
            record = self._instances.get(instance_id)
            if record is None:
                raise InstanceNotFoundError(instance_id)
            return record

    def instances(self, machine: str = "") -> list[InstanceRecord]:
        """Every instance (of one machine, if given), newest first."""
        with self._lock:
            found = [r for r in self._instances.values() if not machine or r.machine == machine]
        return sorted(found, key=lambda r: (r.create_time, r.id), reverse=True)

    # --- mailboxes ----------------------------------------------------------------------

    def _enqueue(self, instance_id: str, work: Sequence[WorkRecord]) -> list[WorkRecord]:
        queued = [replace(record, seq=next(self._seq)) for record in work]
        self._mailboxes[instance_id].extend(queued)
        return queued

    def enqueue(self, instance_id: str, work: Sequence[WorkRecord]) -> list[WorkRecord]:
        """Appends work at the end of an instance's mailbox; returns it with its `seq`.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        with self._lock:
            self.instance(instance_id)
            return self._enqueue(instance_id, work)

    def head(self, instance_id: str) -> Snapshot:
        """The instance, the head of its mailbox, its size and the kept errors, read together."""
        with self._lock:
            return self._snapshot(self.instance(instance_id))

    def _snapshot(self, record: InstanceRecord) -> Snapshot:
        mailbox = self._mailboxes.get(record.id, [])
        errors = tuple(self._errors.get(record.id, {}).values())
        return Snapshot(record, mailbox[0] if mailbox else None, len(mailbox), errors)

    def pending(self, instance_id: str) -> list[WorkRecord]:
        """The instance's mailbox, oldest first."""
        with self._lock:
            return list(self._mailboxes.get(instance_id, ()))

    # --- steps ------------------------------------------------------------------------------

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
        """Commits one step (and `chained` ones): document, revisions, events, done, new work.

        Returns the instance as the commit left it.

        Raises:
            RevisionConflictError: The instance is no longer at `revision`.
            LeaseLostError: `owner` is given and does not hold the lease.
            MailboxNotEmptyError: `alone` or `chained`, and work is queued (but `done`).
        """
        with self._lock:
            current = self.instance(instance_id)
            if current.revision != revision:
                raise RevisionConflictError(instance_id, revision, current.revision)
            if owner and self._lease_owner(instance_id) != owner:
                raise LeaseLostError(instance_id, owner)
            mailbox = self._mailboxes[instance_id]
            if done is not None and all(r.id != done for r in mailbox):
                raise LeaseLostError(instance_id, owner)  # processed elsewhere: a stale step
            if done is not None and mailbox[0].id != done:
                raise ValueError(f"work item {done!r} is not the first of the mailbox")
            if (alone or chained) and len(mailbox) > (done is not None):
                raise MailboxNotEmptyError(instance_id)
            last = revision + 1 + len(chained)
            record = replace(current, revision=last, document=document, update_time=utcnow())
            self._instances[instance_id] = record
            self._events[instance_id].extend(
                replace(e, instance_id=instance_id, revision=revision + 1 + n)
                for n, e in enumerate((event, *chained))
            )
            if done is not None:
                self._remove(instance_id, done)
                if event.kind != "failed":  # the item is resolved
                    self._errors[instance_id].pop(done, None)
            self._enqueue(instance_id, work)
            return self._snapshot(record)

    def discard(self, instance_id: str, work_item_id: str) -> None:
        """Removes a work item that needs no step (a node no longer queued)."""
        with self._lock:
            self._remove(instance_id, work_item_id)

    def _remove(self, instance_id: str, work_item_id: str) -> None:
        mailbox = self._mailboxes[instance_id]
        self._mailboxes[instance_id] = [r for r in mailbox if r.id != work_item_id]

    def append(
        self,
        instance_id: str,
        path: Path,
        value: Any,
        event: EventRecord,
        dedup: str = "",
        max_bytes: int | None = None,
    ) -> tuple[list[Any], int]:
        """Appends to the list at `path` in one atomic step; see `Store.append`."""
        with self._lock:
            if dedup and dedup in self._appends:
                return self._appends[dedup]
            current = self.instance(instance_id)
            writer = DocWriter(current.document)
            writer.list_at(path)  # KeyError / TypeError, as `Store.append` says
            writer.append(path, json_copy(value))
            if max_bytes is not None:
                size = json_size(writer.doc)
                if size > max_bytes:
                    raise LimitExceededError("state", "max_state_bytes", max_bytes, size)
            record = self.commit(
                instance_id,
                current.revision,
                writer.doc,
                replace(event, patch=writer.ops),
                None,
            )
            answer = (json_copy(writer.get(path)), record.instance.revision)
            if dedup:
                self._appends[dedup] = answer
            return answer

    def append_many(
        self, appends: Sequence[AppendRecord], max_bytes: int | None = None
    ) -> list[Appended | Exception]:
        """Appends in order, under one hold of the lock; see `Store.append_many`."""
        outcomes: list[Appended | Exception] = []
        with self._lock:
            for one in appends:
                try:
                    values, revision = self.append(
                        one.instance_id, one.path, one.value, one.event, "", max_bytes
                    )
                except (InstanceNotFoundError, KeyError, TypeError, LimitExceededError) as exc:
                    outcomes.append(exc)
                    continue
                kept = values if one.with_values else None
                outcomes.append(Appended(kept, len(values), revision))
        return outcomes

    # --- history ----------------------------------------------------------------------------

    def events(
        self, instance_id: str, from_revision: int = 1, limit: int = 0
    ) -> list[EventRecord]:
        """Events from `from_revision` on, in revision order (at most `limit` if not 0)."""
        with self._lock:
            self.instance(instance_id)
            events = self._events[instance_id]
            start = max(from_revision, 1) - 1
            return events[start : start + limit] if limit else events[start:]

    def oldest_revision(self, instance_id: str) -> int:
        """The oldest revision whose event is kept (this store keeps them all)."""
        self.instance(instance_id)
        return 1

    # --- failures -----------------------------------------------------------------------------

    def errors(self, instance_id: str) -> list[ErrorRecord]:
        """The failures of the instance's work items, oldest first."""
        with self._lock:
            return list(self._errors.get(instance_id, {}).values())

    def put_error(self, instance_id: str, error: ErrorRecord) -> None:
        """Records (or updates) the failures of a work item."""
        with self._lock:
            self._errors[instance_id][error.work_item_id] = error

    def clear_error(self, instance_id: str, work_item_id: str) -> None:
        """Forgets the failures of a work item (it succeeded, or is retried)."""
        with self._lock:
            self._errors[instance_id].pop(work_item_id, None)

    # --- idempotency --------------------------------------------------------------------------

    def request(self, request_id: str) -> RequestRecord | None:
        """The stored first answer to a request id, if any."""
        with self._lock:
            return self._requests.get(request_id)

    def put_request(self, record: RequestRecord) -> RequestRecord:
        """Stores the first answer to a request id; returns the one kept (the first)."""
        with self._lock:
            return self._requests.setdefault(record.request_id, record)

    # --- leases -------------------------------------------------------------------------------

    def _lease_owner(self, instance_id: str) -> str:
        owner, expiry = self._leases.get(instance_id, ("", 0.0))
        return owner if expiry > time.monotonic() else ""

    def claim(self, owner: str, lease_seconds: float, limit: int) -> list[str]:
        """Leases up to `limit` instances with pending work that nobody else holds."""
        with self._lock:
            claimed: list[str] = []
            for instance_id, mailbox in self._mailboxes.items():
                if len(claimed) >= limit:
                    break
                if mailbox and self._lease_owner(instance_id) in ("", owner):
                    self._leases[instance_id] = (owner, time.monotonic() + lease_seconds)
                    claimed.append(instance_id)
            return claimed

    def release(self, owner: str, instance_id: str) -> None:
        """Gives up a lease `owner` holds."""
        with self._lock:
            if self._lease_owner(instance_id) == owner:
                del self._leases[instance_id]

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None] | None:
        """None: only this process uses this store, and its runtime wakes itself."""
        return None

    def close(self) -> None:
        """Nothing to release: the data goes with the object."""
