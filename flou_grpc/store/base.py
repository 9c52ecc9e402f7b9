"""`Store`: the operations the runtime needs from persistence, and what each guarantees.

Every operation is one transaction: it happens whole or not at all, and a
caller that sees it return knows it is durable (for a durable store). The
methods are synchronous: the runtime calls them from worker threads
(`asyncio.to_thread`), so they must be thread-safe. Implementations:
`MemoryStore` (process memory, for tests and `memory://`) and `SqlStore`
(SQLAlchemy: SQLite and PostgreSQL), both held to one contract suite.

Mailbox order: work items of one instance are processed in `seq` order; `seq`
is assigned by the store when the item is enqueued and only grows.

Leases: with several runtimes sharing a database, an instance is worked on by
the runtime that holds its lease (`claim`); `commit` with an `owner` is fenced:
it fails with `LeaseLostError` when the lease was taken over meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from flou_grpc.engine.document import JsonObject, Path
from flou_grpc.store.records import (
    Appended,
    AppendRecord,
    ErrorRecord,
    EventRecord,
    InstanceRecord,
    RequestRecord,
    Snapshot,
    WorkRecord,
)

__all__ = ["EVENTS_CHANNEL", "RECONNECTED", "WORK_CHANNEL", "LeaseLostError", "Store"]

WORK_CHANNEL: Final = "flou_work"
"""Notified with an instance id when the instance gets new work (`Store.listen`)."""

EVENTS_CHANNEL: Final = "flou_events"
"""Notified with an instance id when the instance gets a new event (`Store.listen`)."""

RECONNECTED: Final = "reconnected"
"""Passed to a listener after a lost connection: notifications may have been missed."""


class LeaseLostError(Exception):
    """A fenced commit found the instance leased to another owner: the step is abandoned."""

    def __init__(self, instance_id: str, owner: str) -> None:
        super().__init__(f"instance {instance_id!r} is no longer leased to {owner!r}")
        self.instance_id, self.owner = instance_id, owner


class MailboxNotEmptyError(Exception):
    """A step taken `alone` found work in the mailbox: nothing is committed."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"instance {instance_id!r} has queued work")
        self.instance_id = instance_id


class Store(Protocol):
    """Persistence of instances, mailboxes, history, errors and request records."""

    def create(
        self,
        instance: InstanceRecord,
        event: EventRecord,
        work: Sequence[WorkRecord],
        owner: str = "",
        lease_seconds: float = 0.0,
    ) -> InstanceRecord:
        """Stores a new instance at revision 1, its start event (revision 1) and first work.

        With `owner`, the instance starts leased to it for `lease_seconds`:
        its creator works on it at once, with no claim (`claim`).

        Raises:
            InstanceAlreadyExistsError: The id is taken.
        """
        ...

    def instance(self, instance_id: str) -> InstanceRecord:
        """The instance at its current revision.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        ...

    def instances(self, machine: str = "") -> list[InstanceRecord]:
        """Every instance (of one machine, if given), newest first (create_time, then id)."""
        ...

    def enqueue(self, instance_id: str, work: Sequence[WorkRecord]) -> list[WorkRecord]:
        """Appends work at the end of the mailbox; returns it with `seq` assigned.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        ...

    def pending(self, instance_id: str) -> list[WorkRecord]:
        """The mailbox, in `seq` order (empty for an unknown instance)."""
        ...

    def head(self, instance_id: str) -> Snapshot:
        """The instance, the head of its mailbox, its size and the kept errors, in one read.

        Raises:
            InstanceNotFoundError: No instance has that id.
        """
        ...

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
        """Commits one step: the document at `revision + 1`, its event, the done item, new work.

        The event's `instance_id` and `revision` are set by the store. `done`
        (a work item id, the first of the mailbox: items are processed in
        order) leaves the mailbox, and its failures are forgotten
        unless the event is the `failed` one; `work` joins its end. Returns
        the instance as the commit left it, read in the same transaction.
        `alone`: the step's item never entered the mailbox (`done` is None),
        so it may only go first if the mailbox is empty when the step holds
        the instance's row.
        `chained`: the events of steps taken right after this one, on work it
        made that never entered the mailbox (executes that run no code). They
        take the next revisions, `document` is the one after the last, and
        `work` is what is left to queue. Their items would have come next only
        if the mailbox holds nothing but `done`: else MailboxNotEmptyError.

        Raises:
            RevisionConflictError: The instance is no longer at `revision`.
            LeaseLostError: `owner` is given and no longer holds the lease, or
                `done` is no longer in the mailbox: another runtime processed it
                while this one had lost the lease (it may hold it again since).
                Nothing is committed.
            MailboxNotEmptyError: `alone` or `chained`, and work other than
                `done` is queued. Nothing is committed.
        """
        ...

    def discard(self, instance_id: str, work_item_id: str) -> None:
        """Removes a work item that needs no step (its node is no longer queued)."""
        ...

    def append(
        self,
        instance_id: str,
        path: Path,
        value: Any,
        event: EventRecord,
        dedup: str = "",
        max_bytes: int | None = None,
    ) -> tuple[list[Any], int]:
        """Appends `value` to the list at `path` (document keys) as one atomic step.

        The append itself is a single statement of the database (never read,
        then written back), committed with its event at the next revision, the
        patch `append_op(path, value)`. With `dedup`, a second append of the
        same key appends nothing and answers the first one's result. With
        `max_bytes`, an append that leaves the document longer than that, as
        the database writes it in JSON, is rolled back.

        Returns:
            The whole list after the append, appends of others included, and
            the revision the append created.

        Raises:
            InstanceNotFoundError: No instance has that id.
            KeyError: Nothing is at `path`.
            TypeError: What is at `path` is not a list; the message is its JSON type.
            LimitExceededError: The document would be over `max_bytes`.
        """
        ...

    def append_many(
        self, appends: Sequence[AppendRecord], max_bytes: int | None = None
    ) -> list[Appended | Exception]:
        """Several appends, in order, committed together (one transaction where durable).

        Each append is what `append` would do alone, with its own event at its
        own revision (appends to one instance follow each other). An append
        that `append` would refuse changes nothing and the others still
        commit; the error is its outcome.

        Returns:
            Per append, in order: its list (if `with_values`), the list's
            length and its revision, or the error `append` would raise for it
            (InstanceNotFoundError, KeyError, TypeError, LimitExceededError).
        """
        ...

    def events(
        self, instance_id: str, from_revision: int = 1, limit: int = 0
    ) -> list[EventRecord]:
        """Events from `from_revision` on, in revision order, at most `limit` (0: all)."""
        ...

    def oldest_revision(self, instance_id: str) -> int:
        """The oldest revision whose event is still kept."""
        ...

    def errors(self, instance_id: str) -> list[ErrorRecord]:
        """The recorded failures of the instance's work items."""
        ...

    def put_error(self, instance_id: str, error: ErrorRecord) -> None:
        """Records, or replaces, the failures of one work item."""
        ...

    def clear_error(self, instance_id: str, work_item_id: str) -> None:
        """Forgets the failures of one work item."""
        ...

    def request(self, request_id: str) -> RequestRecord | None:
        """The stored first answer to a request id, if any."""
        ...

    def put_request(self, record: RequestRecord) -> RequestRecord:
        """Stores the first answer to a request id; returns the record kept (the first)."""
        ...

    def claim(self, owner: str, lease_seconds: float, limit: int) -> list[str]:
        """Leases up to `limit` instances with pending work that nobody else holds.

        An instance is free when it has no lease, its lease expired, or
        `owner` holds it already (the lease is then renewed).
        """
        ...

    def release(self, owner: str, instance_id: str) -> None:
        """Gives up a lease `owner` holds (no-op otherwise)."""
        ...

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None] | None:
        """Calls `callback(channel, instance_id)` for changes committed by other processes.

        Returns a function that stops listening, or None when the store has
        no way to hear other processes (then only polling finds their work).
        """
        ...

    def close(self) -> None:
        """Releases the store's resources (connections)."""
        ...
