"""Fixtures for integration tests: the fake OpenAI-compatible upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batches.testing import FakeUpstream


@pytest.fixture(scope="module")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    """One fake upstream subprocess per test module."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream, with a clean request log and default switches."""
    fake_upstream_server.reset()
    return fake_upstream_server
