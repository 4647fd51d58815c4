"""Clean-up: cancel remote executions by id, on any of the five connection types (the connection's type picks
the vendor). Two everyday uses:

- a run that starts executions it does not wait for (``wait_for_completion=False``) cancels what is left at its
  end, whatever happened in between (``trigger_rule="all_done"``);
- on demand: trigger this DAG with ``{"conn_id": "meibel_default", "execution_ids": ["<id>", ...]}`` to stop
  executions someone started by hand. Ids are checked against the vendor's format before any request.

``CancelExecutionOperator`` waits until each execution has stopped (some vendors cancel asynchronously) and
returns ``{execution_id: final state}``. Docs: docs/kill-paths.md.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_cancel.cancel import CancelExecutionOperator
from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

with DAG(
    dag_id="example_cleanup",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "conn_id": Param("dune_default", type="string"),
        "execution_ids": Param([], type="array", items={"type": "string"}),
    },
    render_template_as_native_obj=True,  # "{{ params.execution_ids }}" stays a list
    tags=["example", "cleanup"],
) as dag:
    # Fire and forget: a long refresh whose result nobody waits for in this run.
    start = DuneRunQueryOperator(
        task_id="start_refresh",
        sql="SELECT * FROM dex.trades -- emulate:forever",
        wait_for_completion=False,
    )
    # At the end of the run, cancel whatever is still running (it may have failed to start: None is skipped).
    CancelExecutionOperator(
        task_id="cancel_leftovers",
        conn_id="dune_default",
        execution_ids="{{ ti.xcom_pull(task_ids='start_refresh', key='execution_id') }}",
        trigger_rule="all_done",
        poll_interval=0.5,
    ).set_upstream(start)

    # On demand, any vendor: nothing to do when triggered without ids.
    CancelExecutionOperator(
        task_id="cancel_requested",
        conn_id="{{ params.conn_id }}",
        execution_ids="{{ params.execution_ids }}",
    )
