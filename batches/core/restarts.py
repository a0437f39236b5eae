"""When a batch whose actor failed may run again, and when to stop trying (pure).

The coordinator counts failures in a row per batch, backs off (doubling from `base_s`,
at most a minute; the slot goes to other batches meanwhile), and after `max_restarts`
gives up: the batch ends `failed`, never a loop. A failed log write (disk full) is the
store's fault, not the batch's: it backs off but does not count. The clock is an
argument (monotonic seconds); the counts live as long as the coordinator incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batches.domain import messages as msg

MAX_DELAY_S = 60.0


@dataclass
class RestartBudget:
    max_restarts: int
    base_s: float
    crashes: dict[str, int] = field(default_factory=dict)  # failures in a row
    not_before: dict[str, float] = field(default_factory=dict)  # next try, monotonic

    def succeeded(self, batch_id: str) -> None:
        self.crashes.pop(batch_id, None)
        self.not_before.pop(batch_id, None)

    def failed(self, batch_id: str, error: str, now: float, storage: bool = False) -> str | None:
        """Count a failure and set the back-off; the reason to give up, if it is time."""
        crashes = self.crashes.get(batch_id, 0) + (0 if storage else 1)
        self.crashes[batch_id] = crashes
        self.not_before[batch_id] = now + self.delay(crashes)
        if crashes <= self.max_restarts:
            return None
        self.crashes.pop(batch_id, None)
        return msg.batch_gave_up(crashes, error)

    def delay(self, crashes: int) -> float:
        return min(self.base_s * 2 ** max(crashes - 1, 0), MAX_DELAY_S)

    def backing_off(self, now: float) -> set[str]:
        """Batches not to admit yet."""
        return {b for b, t in self.not_before.items() if t > now}
