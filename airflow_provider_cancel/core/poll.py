"""How often to ask a vendor about an execution: quick at first, then in proportion to how long it has run."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from airflow_provider_cancel.core.http import RateLimit

# The lag between the remote end and the task noticing stays under this share of the run time,
# while a 30-minute run costs ~10x fewer requests than polling every 2 s.
LAG_RATIO = 0.1
MAX_RATE_LIMIT_WAIT = 600.0


@dataclass(frozen=True)
class PollSchedule:
    initial: float = 1.0
    maximum: float = 30.0

    def delay(self, elapsed: float, rate_limit: RateLimit | None = None, *, now: float | None = None) -> float:
        """Seconds to wait before the next status read of an execution that has run `elapsed` seconds."""
        delay = min(self.maximum, max(self.initial, elapsed * LAG_RATIO))
        delay *= random.uniform(0.9, 1.0)  # spread many tasks on one API key; never past the 10% lag bound
        if rate_limit is not None:
            now = time.time() if now is None else now
            if rate_limit.retry_after is not None:
                delay = max(delay, rate_limit.retry_after)
            elif rate_limit.exhausted and rate_limit.reset_at is not None:
                # Out of budget: every task on this key waits for the window to reset, instead of failing.
                delay = max(delay, min(rate_limit.reset_at - now, MAX_RATE_LIMIT_WAIT))
        return max(0.0, delay)
