"""What a batch actor does next: a pure function of the batch's state and the time.

The actor loops: ask `next_step`, perform it (validate, send lines, write the result
files), append what the decider says, ask again. `done` holds the steps already taken
in this pass, so no step runs twice in one pass: a batch that cannot move on (lines
still open, window not over, no cancel) ends the pass, and the coordinator re-admits it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from batches.domain.decider import BatchState, unfinished_count

Step = Literal["validate", "process", "finalize", "expire", "complete", "finish_cancel"]


def next_step(state: BatchState, now: float, done: Collection[str] = ()) -> Step | None:
    step: Step | None
    status = state.status
    overdue = now >= state.expires_at
    if status == "validating":
        step = "validate" if "validate" not in done else ("expire" if overdue else None)
    elif status == "in_progress":
        if unfinished_count(state) == 0:
            step = "finalize"
        elif overdue:
            step = "expire"  # unfinished lines are reported as batch_expired
        else:
            step = "process"
    elif status == "finalizing":
        step = "complete"
    elif status == "cancelling":
        step = "finish_cancel"  # unfinished lines are reported as batch_cancelled
    else:
        step = None  # terminal: the actor is let go
    return None if step in done else step
