"""Back-off and give-up after repeated batch failures, with the clock as an argument."""

from __future__ import annotations

from batches.core.restarts import MAX_DELAY_S, RestartBudget


def test_backs_off_doubling_then_gives_up() -> None:
    budget = RestartBudget(max_restarts=2, base_s=2.0)
    assert budget.failed("b", "boom", now=100.0) is None
    assert budget.backing_off(101.0) == {"b"} and budget.backing_off(102.0) == set()
    assert budget.failed("b", "boom", now=200.0) is None  # second: 4 s
    assert budget.backing_off(203.9) == {"b"} and budget.backing_off(204.0) == set()
    reason = budget.failed("b", "RuntimeError: boom", now=300.0)
    assert reason == "The batch failed 3 times in a row and was stopped: RuntimeError: boom"
    assert "b" not in budget.crashes  # counting starts again if it is ever re-admitted


def test_success_resets_and_storage_faults_do_not_count() -> None:
    budget = RestartBudget(max_restarts=1, base_s=1.0)
    budget.failed("b", "x", now=0.0)
    budget.succeeded("b")
    assert budget.crashes == {} and budget.backing_off(0.0) == set()
    for t in range(10):
        assert budget.failed("b", "disk full", now=float(t), storage=True) is None
    assert budget.crashes["b"] == 0 and budget.backing_off(9.5) == {"b"}


def test_delay_is_capped() -> None:
    assert RestartBudget(max_restarts=99, base_s=2.0).delay(30) == MAX_DELAY_S
