"""Which Airflow processes a test stack runs, and how many of each: the one parameter of `AirflowStack`.

Two profiles exist:

- `STANDALONE`: ``airflow standalone`` (LocalExecutor inside the scheduler, one of each component), the kill
  matrix K1-K13 of the README;
- `CELERY`: CeleryExecutor on a private Redis, two Celery workers (separate hostnames), two triggerers, two
  schedulers (Airflow's HA mode on PostgreSQL), a dag-processor and an api-server, each started as its own
  process, so a test can stop, stall or kill any one of them the way a machine dies.

A component is named ``<kind>-<n>`` (``scheduler-2``, ``triggerer-1``, ``worker-2``); `AirflowStack.components`
maps each name to its pid.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """The components of one stack. ``standalone``: one ``airflow standalone`` process starts them all."""

    name: str
    executor: str = "LocalExecutor"
    schedulers: int = 1
    triggerers: int = 1
    workers: int = 0  # Celery workers; LocalExecutor runs tasks in pool processes of the scheduler
    worker_concurrency: int = 4
    standalone: bool = False

    def __post_init__(self) -> None:
        if self.standalone and (self.schedulers, self.triggerers, self.workers) != (1, 1, 0):
            raise ValueError("airflow standalone runs one scheduler and one triggerer and no Celery worker")
        if self.executor == "CeleryExecutor" and self.workers < 1:
            raise ValueError("a CeleryExecutor stack needs at least one worker")

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"

    def component_names(self) -> list[str]:
        """Every component in start order: the API first (the others talk to it), triggerers one by one (so
        ``triggerer-1`` holds the lower job id), workers last."""
        if self.standalone:
            return ["standalone"]
        return [
            "api-server",
            *(f"scheduler-{n}" for n in range(1, self.schedulers + 1)),
            "dag-processor",
            *(f"triggerer-{n}" for n in range(1, self.triggerers + 1)),
            *(f"worker-{n}" for n in range(1, self.workers + 1)),
        ]


STANDALONE = Topology("standalone", standalone=True)
CELERY = Topology("celery", executor="CeleryExecutor", schedulers=2, triggerers=2, workers=2)
