"""The application core: use cases over injected ports (event log, file store, clock, ids).

Ray-free, so it is unit-tested against a real file-backed log in a temp dir with a
fixed clock (tests/unit/test_core.py). `actors.coordinator` is a thin shell around it.
"""

from batches.core.coordination import Coordination, CoreConfig, page
from batches.core.ports import BatchService, Clock, Ids, RandomIds

__all__ = ["BatchService", "Clock", "Coordination", "CoreConfig", "Ids", "RandomIds", "page"]
