"""Assertions shared by the analytics tests."""

from __future__ import annotations

from typing import Any

# The Batch's timestamps, which the `batches` view carries as TIMESTAMPTZ columns.
TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


def assert_counts_and_usage_match(row: dict[str, Any], batch: dict[str, Any]) -> None:
    """A `batches` view row carries the wire Batch's request counts and token usage."""
    counts = batch["request_counts"]
    assert (row["requests_total"], row["requests_completed"], row["requests_failed"]) == (
        counts["total"],
        counts["completed"],
        counts["failed"],
    )
    usage = batch["usage"]
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["total_tokens"],
    )
