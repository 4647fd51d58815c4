"""The kill rows that differ between Airflow lines, one DAG per vendor; each Airflow line runs one vendor's DAG
(tests/e2e/test_version_kill_rows.py), against the emulator (the scenario rides in the request)."""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import import_module

from airflow.sdk import DAG

from airflow_provider_cancel.emulator.testing import operator_args
from airflow_provider_cancel.registry import VENDORS

TIMEOUT = timedelta(seconds=30)
FAST = {"poll_interval": 1, "max_poll_interval": 2, "retries": 0}

# task id -> (scenario, deferrable, execution_timeout, extra arguments)
SCENARIOS: dict[str, tuple[str, bool, timedelta | None, dict]] = {
    "k1_sync_markfail": ("forever", False, None, {}),
    "k4_sync_timeout": ("forever", False, TIMEOUT, {}),
    # A retry, for the lines where SIGTERM to the worker leaves the task running until a SIGKILL (3.4)
    "k5_sync_sigterm": ("forever", False, None, {"retries": 1, "retry_delay": timedelta(seconds=1)}),
    "k6_defer_markfail": ("forever", True, None, {}),
    "k7_defer_timeout": ("forever", True, TIMEOUT, {}),
    "k12_defer_restart": ("succeed:40", True, None, {}),  # long enough to live through a triggerer restart
    "k13_sync_success": ("succeed:3", False, None, {}),
    "k13_defer_success": ("succeed:3", True, None, {}),
}

for vendor in VENDORS:
    operator = getattr(import_module(vendor.module), vendor.operator)
    with DAG(dag_id=f"versions_{vendor.conn_type}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
             max_active_tasks=len(SCENARIOS)) as dag:
        for task_id, (scenario, deferrable, timeout, extra) in SCENARIOS.items():
            operator(task_id=task_id, deferrable=deferrable, execution_timeout=timeout,
                     **operator_args(vendor.conn_type, scenario, tag=task_id.replace("_", "-")), **{**FAST, **extra})
    globals()[dag.dag_id] = dag
