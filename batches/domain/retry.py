"""Retry policy for upstream calls, pure: randomness and the clock are passed in."""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Transient answers, as the openai SDK sees them; other 4xx will fail the same way again."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5  # fraction of the delay that may be taken off at random


def is_retryable_status(code: int) -> bool:
    return code in RETRYABLE_STATUSES


def should_retry(policy: RetryPolicy, attempt: int, status_code: int | None) -> bool:
    """After attempt number ``attempt`` (1-based) failed: try again?

    ``status_code`` None means no HTTP answer (timeout, connection refused): retryable.
    """
    if attempt >= policy.max_attempts:
        return False
    return status_code is None or is_retryable_status(status_code)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        if now is None:
            return None  # an HTTP-date needs the clock, which the caller did not give
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - now, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    retry_after: str | None,
    rand: float,
    *,
    now: float | None = None,
) -> float:
    """Seconds to sleep after attempt number ``attempt`` (1-based) failed.

    A usable Retry-After wins (the server knows best), capped by ``max_delay``;
    otherwise ``base_delay * 2**(attempt-1)``, capped, minus up to ``jitter`` of it
    (``rand`` in [0, 1)) so that many clients do not retry in lockstep.
    """
    hinted = parse_retry_after(retry_after, now)
    if hinted is not None:
        return min(hinted, policy.max_delay)
    exponent = min(max(attempt - 1, 0), 62)  # bounded: 2**huge would overflow a float
    delay = min(policy.base_delay * 2.0**exponent, policy.max_delay)
    return delay * (1.0 - policy.jitter * min(max(rand, 0.0), 1.0))
