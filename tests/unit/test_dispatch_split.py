"""Splitting a chunk over a model's replicas keeps every item once, in order; an
upstream's concurrency limit split over several executors still sums to the limit."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.dispatch import executor_count, share, split
from batches.settings import Settings


@given(st.integers(0, 200), st.integers(1, 8))
def test_split_keeps_every_item_in_order(n: int, parts: int) -> None:
    items = [{"line": i} for i in range(n)]
    pieces = split(items, parts)
    assert [x for piece in pieces for x in piece] == items
    assert all(pieces) and len(pieces) == min(parts, n)
    if pieces:
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


@pytest.mark.parametrize(("limit", "count"), [(64, 1), (64, 2), (64, 3), (5, 4), (3, 3)])
def test_executor_shares_sum_to_the_global_limit(limit: int, count: int) -> None:
    parts = [share(limit, i, count) for i in range(count)]
    assert sum(parts) == limit and min(parts) >= 1 and max(parts) - min(parts) <= 1


def test_executor_count_never_leaves_an_executor_without_a_slot() -> None:
    assert executor_count(Settings(upstream_executors=3)) == 3
    assert executor_count(Settings(upstream_executors=8, upstream_max_concurrency=2)) == 2
    assert 1 <= executor_count(Settings()) <= 4  # auto: by this node's cores
