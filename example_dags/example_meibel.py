"""Meibel: run an agent over a datasource as a batch (legacy batch spec, or a saved batch definition), wait for a
batch started elsewhere, report failed items, and a timeout that cancels.

Runs against the real Meibel API with a `meibel_default` connection (host https://api.meibel.ai/v2, password =
API key), or offline against the bundled emulator (`airflow-provider-cancel-emulator`; the `"emulate"` keys in the
batch specs choose the emulator's scenario, an extra key of the batch spec otherwise). Against the emulator any
batch definition id runs with its default scenario (success). Docs: docs/meibel.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cancel.vendors.meibel import MeibelBatchExecutionSensor, MeibelRunBatchOperator

with DAG(
    dag_id="example_meibel",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "agent": Param("agent-invoice-extractor", type="string", description="AgentDefinition id"),
        "concurrency": Param(8, type="integer", minimum=1, maximum=999),
        "batch_definition_id": Param("5b0c7f5e-3a59-4c36-9d36-8a8f3c6f0e11", type="string"),
    },
    tags=["example", "meibel"],
) as dag:

    @task
    def todays_upload_datasource(ds: str | None = None) -> str:
        """Stands in for whatever produced today's documents (an ingest task, a sensor on a bucket...)."""
        return f"ds-invoices-{ds}"

    datasource = todays_upload_datasource()

    # A legacy batch spec built from params and the upstream task's XCom; deferrable: waits in the triggerer.
    # Items that fail do not fail the task: the summary lists them for the next task.
    extract = MeibelRunBatchOperator(
        task_id="extract_invoice_totals",
        batch_spec={
            "name": "invoice-totals-{{ ds_nodash }}",
            "agent": "{{ params.agent }}",
            "user_message": "Extract the invoice number, date and total amount of each document.",
            "input": {
                "datasource_id": "{{ ti.xcom_pull(task_ids='todays_upload_datasource') }}",
                "filters": {"media_types": ["application/pdf"]},
            },
            "execution": {"concurrency": "{{ params.concurrency }}", "retry_limit": 2},
            "emulate": "partial:3,rows=12",
        },
        deferrable=True,
        max_items=200,
    )
    datasource >> extract

    @task
    def report_failed_items(summary: dict) -> int:
        failed = [item for item in summary["items"] if item.get("status") == "failed"]
        for item in failed:
            print(f"{item['filename']}: {item['error']}")
        print(f"{summary['succeeded']}/{summary['total_items']} documents done; "
              f"output in datasource {summary['output_datasource_id']}")
        return len(failed)

    report_failed_items(extract.output)

    # A saved batch definition, by id from the DAG's params; waits in the worker; any failed item fails the task.
    nightly = MeibelRunBatchOperator(
        task_id="run_nightly_definition",
        batch_definition_id="{{ params.batch_definition_id }}",
        fail_on_item_errors=True,
        deferrable=False,
        poll_interval=2,
    )

    # Wait for an execution started by another task (its id from XCom), without owning it: never cancels it.
    watch = MeibelBatchExecutionSensor(
        task_id="watch_extraction",
        execution_id="{{ ti.xcom_pull(task_ids='extract_invoice_totals', key='execution_id') }}",
        poke_interval=5,
        mode="reschedule",
    )
    extract >> watch

# The demo job: a batch that runs longer than the task may. At execution_timeout the task fails and the Meibel
# batch execution is cancelled (one POST .../cancel), instead of running on and spending agent runs.
with DAG(
    dag_id="example_meibel_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "meibel", "cancel"],
) as timeout_dag:
    MeibelRunBatchOperator(
        task_id="long_batch",
        batch_spec={
            "name": "reprocess-archive",
            "agent": "agent-invoice-extractor",
            "input": {"datasource_id": "ds-archive"},
            "emulate": "forever",
        },
        execution_timeout=timedelta(seconds=8),
        poll_interval=1,
        max_poll_interval=2,
        deferrable=False,
        retries=0,
    )
