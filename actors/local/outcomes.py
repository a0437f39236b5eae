"""Outcomes of the embedded models: the executor contract's builders
(``batches.domain.executor``) with this package's clock and ``RequestError``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from actors.local.requests import RequestError
from batches.domain import executor
from batches.domain.executor import LineError, Outcome, WorkItem, make_outcome

__all__ = ["Outcome", "WorkItem", "failed_outcomes", "make_outcome", "rejected_outcomes"]


def failed_outcomes(items: Iterable[Any], error: LineError) -> list[Outcome]:
    """One transport-style failure (``status_code: None``) per item; ``error`` from
    ``batches.domain.line_errors``."""
    return executor.failed_outcomes(items, error["code"], error["message"], at=time.time())


def rejected_outcomes(items: Iterable[Any], err: RequestError) -> list[Outcome]:
    """One HTTP-style failure (``status_code`` and an error body) per item."""
    return executor.rejected_outcomes(items, err.status_code, err.body(), at=time.time())
