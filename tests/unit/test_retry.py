from __future__ import annotations

import email.utils
import itertools

import pytest

from batches.domain.retry import (
    RetryPolicy,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    should_retry,
)

NO_JITTER = RetryPolicy(jitter=0.0)


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
def test_retryable(code: int) -> None:
    assert is_retryable_status(code)


@pytest.mark.parametrize("code", [200, 400, 401, 403, 404, 413, 422, 501])
def test_not_retryable(code: int) -> None:
    assert not is_retryable_status(code)


def test_should_retry_respects_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert should_retry(policy, 1, None) and should_retry(policy, 2, 503)
    assert not should_retry(policy, 3, 503)
    assert not should_retry(policy, 1, 400)


def test_exponential_growth_without_jitter_and_cap() -> None:
    delays = [backoff_delay(NO_JITTER, attempt, None, rand=0.9) for attempt in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) == NO_JITTER.max_delay
    assert backoff_delay(NO_JITTER, 10_000, None, rand=0.0) == NO_JITTER.max_delay


def test_jitter_takes_off_at_most_its_fraction() -> None:
    policy = RetryPolicy(jitter=0.5)
    assert backoff_delay(policy, 3, None, rand=0.0) == 2.0
    assert backoff_delay(policy, 3, None, rand=0.999) == pytest.approx(1.001)
    assert 1.0 <= backoff_delay(policy, 3, None, rand=0.4) <= 2.0


def test_retry_after_seconds_honoured_and_capped() -> None:
    assert backoff_delay(NO_JITTER, 1, "7", rand=0.5) == 7.0
    assert backoff_delay(NO_JITTER, 1, "1.5", rand=0.5) == 1.5
    assert backoff_delay(NO_JITTER, 1, "3600", rand=0.5) == NO_JITTER.max_delay


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 12, usegmt=True)
    assert backoff_delay(NO_JITTER, 1, header, rand=0.5, now=now) == pytest.approx(12.0)
    past = email.utils.formatdate(now - 12, usegmt=True)
    assert backoff_delay(NO_JITTER, 1, past, rand=0.5, now=now) == 0.0


@pytest.mark.parametrize("header", ["soon", "-3", "nan", "inf", ""])
def test_unusable_retry_after_falls_back(header: str) -> None:
    assert parse_retry_after(header, now=0.0) is None
    assert backoff_delay(NO_JITTER, 2, header, rand=0.5, now=0.0) == 1.0


def test_http_date_without_clock_falls_back() -> None:
    header = email.utils.formatdate(1_700_000_000, usegmt=True)
    assert backoff_delay(NO_JITTER, 1, header, rand=0.0) == 0.5
