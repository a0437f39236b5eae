"""Splitting a chunk over a model's replicas keeps every item once, in order."""

from hypothesis import given
from hypothesis import strategies as st

from actors.dispatch import split


@given(st.integers(0, 200), st.integers(1, 8))
def test_split_keeps_every_item_in_order(n: int, parts: int) -> None:
    items = [{"line": i} for i in range(n)]
    pieces = split(items, parts)
    assert [x for piece in pieces for x in piece] == items
    assert all(pieces) and len(pieces) == min(parts, n)
    if pieces:
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
