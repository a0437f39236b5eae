"""The test harness itself: a picked port that something else binds first (Ray's own
processes bind random ports while `batchlog serve` starts) costs a retry, not a test."""

from __future__ import annotations

import socket

import pytest

from batches.testing import FakeUpstream, Service

pytestmark = pytest.mark.e2e


def test_a_port_taken_before_serve_binds_it_is_replaced(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    svc = Service(tmp_path_factory.mktemp("harness") / "data", {"BATCHLOG_UPSTREAM": upstream.url})
    taken = svc.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with svc:
            assert svc.port != taken
            assert svc.client().models.list() is not None
