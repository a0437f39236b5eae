"""Who gets the next batch slot, and what a tenant may still ask for (issue 10.7).

Pure: the clock is an argument. The coordinator asks; nothing here does I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from batches.domain.decider import BatchState


def admission_order(
    waiting: Sequence[BatchState], running: Iterable[str], now: int
) -> list[BatchState]:
    """Cancelling batches first (they only write their files), then overdue ones, then
    round-robin across tenants: a tenant's i-th waiting batch, counting the r it already
    runs, goes in round r + i, so one tenant's 2,000 creates do not starve the next
    tenant. Oldest first within a round. `waiting` is oldest first; `running` the
    tenants of the running batches, one entry per batch."""
    rounds = Counter(running)
    keyed = []
    for pos, batch in enumerate(waiting):
        round_ = rounds[batch.tenant]
        rounds[batch.tenant] += 1
        keyed.append(((batch.status != "cancelling", now < batch.expires_at, round_, pos), batch))
    keyed.sort(key=lambda item: item[0])
    return [batch for _, batch in keyed]


@dataclass
class CreateRate:
    """A token bucket per tenant: `per_minute` creates, bursting to that many."""

    per_minute: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, tenant: str, now: float) -> float | None:
        """None if allowed (and counted); else seconds until one is."""
        if self.per_minute <= 0:
            return None
        capacity = self.per_minute
        tokens, last = self._buckets.get(tenant, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            return (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[tenant] = (tokens - 1.0, now)
        return None
