"""Fixtures for integration tests: the fake OpenAI-compatible upstream."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tests` is a namespace package next to the project's packages
    sys.path.insert(0, _ROOT)

from tests.fake_upstream import FakeUpstream  # noqa: E402


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
