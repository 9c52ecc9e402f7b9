"""Retries: only UNAVAILABLE, jittered exponential backoff, bounded by attempts and deadline."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from flou_client import FlouError, RetryPolicy, UnavailableError
from flou_client.retry import NO_RETRY, Deadline


def test_backoff_grows_exponentially_within_its_jitter_band_and_is_capped():
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not constant


def test_only_unavailable_is_retried():
    policy = RetryPolicy()
    forever = Deadline(None)
    assert policy.delay(1, UnavailableError("down"), forever) is not None
    for code in (
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    ):
        assert policy.delay(1, FlouError("x", code=code), forever) is None


def test_attempts_are_bounded():
    policy = RetryPolicy(max_attempts=3)
    error = UnavailableError("down")
    assert policy.delay(2, error, Deadline(None)) is not None
    assert policy.delay(3, error, Deadline(None)) is None
    assert NO_RETRY.delay(1, error, Deadline(None)) is None


def test_no_retry_ends_after_the_deadline():
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=1.0)
    assert policy.delay(1, UnavailableError("down"), Deadline(0.2)) is None
    assert policy.delay(1, UnavailableError("down"), Deadline(5)) is not None


def test_the_servers_retry_delay_is_a_floor_capped_by_max_backoff():
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.3)
    slow = UnavailableError("down", retry_delay=0.25)
    assert policy.delay(1, slow, Deadline(None)) == pytest.approx(0.25)
    slower = UnavailableError("down", retry_delay=10)
    assert policy.delay(1, slower, Deadline(None)) == pytest.approx(0.3)


def test_deadline_remaining_shrinks_and_never_reaches_zero():
    deadline = Deadline(0.05)
    first = deadline.remaining()
    assert first is not None
    assert 0 < first <= 0.05
    time.sleep(0.06)
    assert deadline.remaining() == pytest.approx(0.001)
    assert Deadline(None).remaining() is None


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)
