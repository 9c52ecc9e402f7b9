"""Retrying persistence: each store transaction is one function, retried whole on transient errors.

What is transient is the dialect's call (`SqlDialect.is_transient`: a lost
connection, a serialization failure, a deadlock, a busy SQLite file); every
other error, our own domain errors included, propagates at once. Retries wait
a jittered exponential backoff and stop at a deadline: the policy's, or the
caller's when it set a shorter one with `deadline()` (a context variable, so it
follows the call into `asyncio.to_thread`). Every retry is logged, with its
cause, on the `flou_grpc.store` logger; a transaction still failing at the
deadline raises `StoreUnavailableError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    wait_exponential_jitter,
)

from flou_grpc.errors import StoreUnavailableError

__all__ = ["RetryPolicy", "deadline", "deadline_at", "logger", "on_retry", "run_retrying"]

logger = logging.getLogger("flou_grpc.store")

T = TypeVar("T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "flou_grpc_store_deadline", default=None
)


_listeners: list[Callable[[str], None]] = []


def on_retry(listener: Callable[[str], None]) -> Callable[[], None]:
    """Calls `listener(operation)` at every retry of a transient error, in this process.

    For metrics; returns a function that removes the listener.
    """
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long, and how often, a transaction is retried on transient errors."""

    deadline: float = 30.0
    """Seconds after the first attempt past which no retry starts."""
    initial_backoff: float = 0.01
    """Seconds before the first retry (then doubled each time, plus jitter)."""
    max_backoff: float = 1.0
    """The longest wait between two attempts, in seconds."""
    jitter: float = 0.05
    """Up to this many random seconds added to each wait."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bounds the retries of the store calls made inside the block to `seconds` from now.

    The shorter of this and the store's own policy wins; blocks nest (the
    earliest deadline wins).
    """
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_at() -> float | None:
    """The `time.monotonic()` at which retries stop here, as `deadline()` set it; None: unset."""
    return _deadline.get()


def run_retrying(
    operation: str,
    attempt: Callable[[int], T],
    transient: Callable[[BaseException], bool],
    policy: RetryPolicy,
) -> T:
    """Runs `attempt(n)` (n = 1, 2, ...) until it returns, retrying only transient errors.

    Args:
        operation: What is being done, for the log (e.g. "commit").
        attempt: One whole transaction; called again from scratch after a
            transient error. It gets the attempt number, so it can check
            whether an earlier attempt committed before its answer was lost.
        transient: Whether an error is worth retrying.
        policy: Backoff and deadline.

    Raises:
        StoreUnavailableError: Still failing transiently at the deadline (the
            last error is its `__cause__`).
        Exception: Any non-transient error of `attempt`, unchanged.
    """
    started = time.monotonic()
    until = started + policy.deadline
    caller = _deadline.get()
    if caller is not None:
        until = min(until, caller)

    def stop(state: RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) >= until

    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "store %s: transient error on attempt %d, retrying in %.3fs: %s: %s",
            operation,
            state.attempt_number,
            state.upcoming_sleep,
            type(error).__name__,
            _first_line(error),
        )
        for listener in list(_listeners):
            listener(operation)

    retrying = Retrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
        ),
        retry=retry_if_exception(transient),
        before_sleep=log,
        reraise=False,
    )

    attempts = 0

    def call() -> T:
        nonlocal attempts
        attempts += 1
        return attempt(attempts)

    try:
        return retrying(call)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        logger.error(
            "store %s: giving up after %d attempts in %.3fs: %s: %s",
            operation,
            exc.last_attempt.attempt_number,
            time.monotonic() - started,
            type(last).__name__,
            _first_line(last),
        )
        raise StoreUnavailableError() from last


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().split("\n", 1)[0] if error is not None else ""
