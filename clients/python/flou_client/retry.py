"""When the client tries a call again: only on UNAVAILABLE, with jittered backoff.

Every mutation the client sends carries a `request_id` (generated once per
call when the caller gives none), so a retry that follows a lost answer
returns the first answer and changes nothing. Other codes are never retried:
they are answers, not accidents. Attempts are bounded by the policy and by the
call's deadline: a retry whose backoff would end after the deadline is not made.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

from flou_client.errors import FlouError

__all__ = ["NO_RETRY", "Deadline", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for UNAVAILABLE answers.

    The n-th retry waits a random time between half and all of
    `min(max_backoff, initial_backoff * multiplier ** (n - 1))` seconds, and at
    least the server's `RetryInfo` delay (capped at `max_backoff`) when it sent one.
    """

    max_attempts: int = 5
    """Attempts in all, the first included; 1 disables retries."""

    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before the `retry`-th retry (1 for the first), jittered."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)

    def delay(
        self, attempts: int, error: FlouError, deadline: Deadline, rng: random.Random | None = None
    ) -> float | None:
        """How long to wait before trying a call again after `attempts` failed ones.

        None means give up: `error` is not UNAVAILABLE, or the attempts or the
        deadline are spent.
        """
        if error.code is not grpc.StatusCode.UNAVAILABLE:
            return None
        return self.wait(attempts, error, deadline, rng)

    def wait(
        self, attempts: int, error: FlouError, deadline: Deadline, rng: random.Random | None = None
    ) -> float | None:
        """`delay` for an error already known to be worth retrying, whatever its code."""
        if attempts >= self.max_attempts:
            return None
        wait = self.backoff(attempts, rng)
        if error.retry_delay is not None:
            wait = max(wait, min(error.retry_delay, self.max_backoff))
        remaining = deadline.remaining()
        if remaining is not None and wait >= remaining:
            return None
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries."""


class Deadline:
    """The absolute end of a call, for its attempts to share: None means none."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (at least a millisecond, so that grpc fails it itself), or None."""
        if self._end is None:
            return None
        return max(self._end - time.monotonic(), 0.001)
