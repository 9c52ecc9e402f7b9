"""`GroupCommit`: calls that arrive together share one store transaction.

A durable commit costs a round trip and a flush of the database's log, and
each store call costs a hop to a store thread; a call that is only a
statement (an append) spends most of its time on those. So calls are queued,
and each batch takes every call queued so far:

- with no batch in flight, a call goes at once, alone: an idle runtime adds
  no wait (no timer, no linger);
- while `in_flight` batches run, calls queue; when one ends, the next takes
  up to `most` of them, in arrival order.

Each call gets its own outcome (a result or an error) from the batch. A batch
that fails as a whole for a reason of its own (not the store being
unavailable) is run again call by call, so that one bad call cannot fail the
others. A batch runs in a context of its own: it carries no caller's request
id, and its store retries stop at the latest deadline of its callers (no
deadline when one of them has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from flou_grpc.errors import StoreUnavailableError
from flou_grpc.store.retry import deadline, deadline_at

__all__ = ["GroupCommit"]

C = TypeVar("C")
R = TypeVar("R")


class GroupCommit(Generic[C, R]):
    """Batches calls of `commit(calls) -> outcomes` (one outcome per call, in order).

    `commit` raises only when it committed nothing: its calls may then be
    made again, one by one. A call that failed alone is an outcome.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[C]], Awaitable[Sequence[R | Exception]]],
        *,
        in_flight: int = 1,
        most: int = 64,
    ) -> None:
        self._commit = commit
        self._in_flight, self._most = in_flight, most
        self._queue: list[tuple[C, asyncio.Future[R], float | None]] = []
        self._drains: set[asyncio.Task[None]] = set()
        """The tasks committing batches; each leaves the set as it finds the queue empty."""

    @property
    def batches_in_flight(self) -> int:
        """Batches being committed now."""
        return len(self._drains)

    async def submit(self, call: C) -> R:
        """Commits `call` in the next batch; its result, or raises its error.

        Cancelling the caller stops the wait, not the commit: a call already
        queued is committed all the same.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future, deadline_at()))
        if len(self._drains) < self._in_flight:
            task = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._drains.add(task)
        return await future

    async def wait_idle(self) -> None:
        """Returns once every queued call has been committed (or has failed)."""
        while self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            await self._commit_queued()
        finally:
            # Left with no await after the queue was found empty: a call queued
            # from here on finds this task gone and starts another.
            self._drains.discard(asyncio.current_task())

    async def _commit_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._most], self._queue[self._most :]
            calls = [call for call, _, _ in batch]
            try:
                outcomes = await self._bounded(calls, [at for _, _, at in batch])
            except StoreUnavailableError as exc:
                outcomes = [exc] * len(batch)
            except Exception as exc:
                if len(batch) == 1:
                    outcomes = [exc]
                else:  # one bad call must not fail the others
                    outcomes = [await self._alone(call, at) for call, _, at in batch]
            for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its caller stopped waiting
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _alone(self, call: C, at: float | None) -> R | Exception:
        try:
            return (await self._bounded([call], [at]))[0]
        except Exception as exc:
            return exc

    async def _bounded(
        self, calls: Sequence[C], deadlines: Sequence[float | None]
    ) -> Sequence[R | Exception]:
        """`commit(calls)`, its store retries stopping at the callers' latest deadline."""
        latest = None if None in deadlines else max(d for d in deadlines if d is not None)
        bound = (
            contextlib.nullcontext()
            if latest is None
            else deadline(max(0.0, latest - time.monotonic()))
        )
        with bound:
            return await self._commit(calls)
