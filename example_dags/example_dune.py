"""Dune: run a saved query and a raw SQL query, wait for a query started elsewhere, and a timeout that cancels.

Runs against the real Dune API with a `dune_default` connection, or offline against the bundled emulator
(`airflow-provider-cancel-emulator`; the `-- emulate:...` SQL comments choose the emulator's scenario and
are plain comments to Dune).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_cancel.vendors.dune import DuneExecutionSensor, DuneRunQueryOperator

with DAG(
    dag_id="example_dune",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"min_block": Param(21_000_000, type="integer"), "performance": Param("medium", enum=["medium", "large"])},
    tags=["example", "dune"],
) as dag:
    # A saved query with parameters from the DAG's params; deferrable: waits in the triggerer.
    saved = DuneRunQueryOperator(
        task_id="saved_query",
        query_id=3493826,
        query_parameters={"min_block": "{{ params.min_block }}", "emulate": "succeed:3"},
        performance="{{ params.performance }}",
        deferrable=True,
        max_rows=500,
    )

    # Raw SQL, templated with the run's date; waits in the worker.
    adhoc = DuneRunQueryOperator(
        task_id="adhoc_sql",
        sql="SELECT count(*) FROM ethereum.blocks WHERE time > DATE '{{ ds }}' - INTERVAL '1' day -- emulate:succeed:2",
        deferrable=False,
    )

    # Wait for an execution started by the upstream task (its id from XCom), without owning it.
    watch = DuneExecutionSensor(
        task_id="watch_saved_query",
        execution_id="{{ ti.xcom_pull(task_ids='saved_query', key='execution_id') }}",
        poke_interval=2,
        mode="reschedule",
    )
    saved >> watch

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
