"""Real tasks for the secrets test: per vendor a success, a vendor-reported failure, a timeout that cancels and a
deferred success, all with the session's recognizable API key (tests/e2e/test_secrets.py searches for it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_cancel.emulator.testing import operator_args
from airflow_provider_cancel.vendors.b3os import B3osRunWorkflowOperator
from airflow_provider_cancel.vendors.bctrl import BctrlInvokeOperator
from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator
from airflow_provider_cancel.vendors.izieroma import IzieromaRunOperator
from airflow_provider_cancel.vendors.meibel import MeibelRunBatchOperator

OPERATORS = {
    "dune": DuneRunQueryOperator, "izieroma": IzieromaRunOperator, "bctrl": BctrlInvokeOperator,
    "meibel": MeibelRunBatchOperator, "b3os": B3osRunWorkflowOperator,
}
# task suffix -> (scenario, deferrable, execution_timeout)
TASKS = {
    "succeed": ("succeed:2", False, None),
    "fail": ("fail:2", False, None),
    "timeout": ("forever", False, timedelta(seconds=6)),
    "deferred": ("succeed:3", True, None),
}

# Five at a time: twenty task starts at once can hold the SQLite metadata database past the task runner's 30 s
# request timeout on a loaded 2-core machine (PATCH /run took 31 s once), failing tasks before they run.
with DAG("e2e_secrets", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=5,
         default_args={"retries": 0}):
    for vendor, operator in OPERATORS.items():
        for name, (scenario, deferrable, timeout) in TASKS.items():
            task_id = f"{vendor}_{name}"
            operator(task_id=task_id, deferrable=deferrable, execution_timeout=timeout, poll_interval=1,
                     max_poll_interval=2, **operator_args(vendor, scenario, task_id))
