"""For benchmarks/e2e_cancel.py: tasks that run (or stay deferred) until they are killed, on the emulator's Dune."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

PER_KIND = int(os.environ.get("BENCH_E2E_PER_RUN", "4"))  # tasks of each kind per DAG run

with DAG(dag_id="bench_cancel", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
         max_active_tasks=2 * PER_KIND) as dag:
    for kind, deferrable in (("running", False), ("deferred", True)):
        for i in range(PER_KIND):
            DuneRunQueryOperator(task_id=f"{kind}_{i}", sql=f"SELECT {i} -- {kind} emulate:forever",
                                 deferrable=deferrable, poll_interval=1, max_poll_interval=2, retries=0)
