"""Dune: a saved query fed by params and an upstream task, raw SQL, a sensor on a query started by another task,
and a timeout that cancels.

Runs against the real Dune API with a `dune_default` connection, or offline against the bundled emulator
(`airflow-provider-cancel-emulator`; the `emulate` markers choose the emulator's scenario and are a plain SQL
comment or an unused query parameter to Dune). Docs: docs/dune.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cancel.vendors.dune import DuneExecutionSensor, DuneRunQueryOperator

with DAG(
    dag_id="example_dune",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"chain": Param("ethereum", type="string"), "performance": Param("medium", enum=["medium", "large"])},
    tags=["example", "dune"],
) as dag:

    @task
    def first_block() -> int:
        """Stands in for whatever upstream logic decides where today's query starts."""
        return 21_000_000

    # A saved query: parameters from the params and the upstream task's XCom; deferrable, so it waits in the
    # triggerer. Returns {"execution_id", "state", "rows", "metadata", "row_count", "total_row_count", "truncated"}.
    saved = DuneRunQueryOperator(
        task_id="saved_query",
        query_id=3493826,
        query_parameters={
            "chain": "{{ params.chain }}",
            "min_block": "{{ ti.xcom_pull(task_ids='first_block') }}",
            "emulate": "succeed:3",
        },
        performance="{{ params.performance }}",
        max_rows=500,
        deferrable=True,
        execution_timeout=timedelta(minutes=30),  # the query is cancelled if it runs longer
    )
    first_block() >> saved

    # Raw SQL templated with the run's date; waits in the worker.
    adhoc = DuneRunQueryOperator(
        task_id="adhoc_sql",
        sql="SELECT count(*) FROM ethereum.blocks WHERE time > DATE '{{ ds }}' - INTERVAL '1' day -- emulate:succeed:2",
        deferrable=False,
    )

    # Start a query and return its execution id at once ...
    start = DuneRunQueryOperator(
        task_id="start_refresh",
        sql="SELECT * FROM dex.trades WHERE block_date = DATE '{{ ds }}' -- emulate:succeed:4",
        wait_for_completion=False,
    )
    # ... and wait for it elsewhere, by that id. A sensor never cancels an execution it did not start.
    DuneExecutionSensor(
        task_id="wait_for_refresh",
        execution_id="{{ ti.xcom_pull(task_ids='start_refresh') }}",
        poke_interval=2,
        mode="reschedule",
    ).set_upstream(start)

# The demo job: a query that runs longer than the task may. At execution_timeout the task fails and the
# Dune execution is cancelled (one POST .../cancel), instead of running on and spending credits.
with DAG(
    dag_id="example_dune_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dune", "cancel"],
) as timeout_dag:
    DuneRunQueryOperator(
        task_id="long_query",
        sql="SELECT * FROM dex.trades -- emulate:forever",
        execution_timeout=timedelta(seconds=8),
        poll_interval=1,
        max_poll_interval=2,
        deferrable=False,
        retries=0,
    )
