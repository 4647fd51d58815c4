"""Request economy, in simulated time: status requests per execution, and how late the task notices the end.

No waiting: a virtual clock drives the real `core.poll.PollSchedule` exactly as the trigger and the operator
use it (read the status at once, then `schedule.delay(elapsed)` between reads, each read taking `latency`),
for executions that end remotely after 10 s, 2 min and 30 min. The baseline polls at a fixed 2 s.
`lag` = when the first status read that sees the end is answered, minus the moment the execution ended.
The schedule's ±10% jitter is random: each case is simulated `runs` times (seeded) and reported as
median (and worst) over them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from _common import median

DURATIONS = {"10 s": 10.0, "2 min": 120.0, "30 min": 1800.0}
FIXED_INTERVAL = 2.0
LATENCY = 0.05  # seconds per status read (loopback ~0.002; a real API more)


@dataclass
class Outcome:
    requests: int
    lag: float


def simulate(duration: float, next_delay: Any, *, latency: float = LATENCY) -> Outcome:
    """Poll an execution that ends at `duration` (virtual seconds since it started)."""
    now = 0.0
    requests = 0
    while True:
        requests += 1
        now += latency  # the read is answered; it sees the state as of its arrival (~ now)
        if now >= duration:
            return Outcome(requests, now - duration)
        now += next_delay(now)


def measure(runs: int = 200, seed: int = 1) -> list[dict[str, Any]]:
    from airflow_provider_cancel.core.http import RateLimit
    from airflow_provider_cancel.core.poll import PollSchedule

    random.seed(seed)  # PollSchedule's jitter draws from the random module
    schedule = PollSchedule()  # the operator's and trigger's defaults: 1 s, stretching to 30 s
    no_limit = RateLimit()
    rows = []
    for name, duration in DURATIONS.items():
        ours = [simulate(duration, lambda elapsed: schedule.delay(elapsed, no_limit, now=0.0)) for _ in range(runs)]
        fixed = simulate(duration, lambda elapsed: FIXED_INTERVAL)
        rows.append({
            "case": name,
            "duration_s": duration,
            "ours_requests": median([o.requests for o in ours]),
            "ours_requests_max": max(o.requests for o in ours),
            "ours_lag_s": median([o.lag for o in ours]),
            "ours_lag_max_s": max(o.lag for o in ours),
            "fixed_requests": fixed.requests,
            "fixed_lag_s": fixed.lag,
            "schedule": f"PollSchedule(initial={schedule.initial:g}, maximum={schedule.maximum:g})",
        })
    return rows


if __name__ == "__main__":
    import json

    for row in measure():
        print(json.dumps(row))
