"""izieroma (the hosted ROMA API): multi-agent runs on a goal built from params and an upstream task, a sensor on
a run started by another task, and a deferred run whose timeout cancels it.

Runs against api.izieroma.xyz with an `izieroma_default` connection (API key in the password field), or
offline against the bundled emulator (`airflow-provider-cancel-emulator`, connection host
http://127.0.0.1:8765/izieroma). The `emulate` metadata entries choose the emulator's scenario; to ROMA they
are ordinary metadata kept with the run. Docs: docs/izieroma.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cancel.vendors.izieroma import IzieromaExecutionSensor, IzieromaRunOperator

with DAG(
    dag_id="example_izieroma",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "audience": Param("data engineers", type="string"),
        "max_depth": Param(2, type="integer", minimum=1, maximum=10),
        "profile": Param("general", enum=["general", "high_quality", "fast", "crypto_agent"]),
    },
    tags=["example", "izieroma", "roma"],
) as dag:

    @task
    def pick_topic() -> str:
        return "what changed in Apache Airflow 3"

    topic = pick_topic()

    # The goal from the upstream task's XCom and the params; waits in the triggerer. Returns ROMA's answer
    # plus run metadata ({"execution_id", "status", "result", "metadata", "completed_at"}).
    research = IzieromaRunOperator(
        task_id="research",
        goal="Explain {{ ti.xcom_pull(task_ids='pick_topic') }} to {{ params.audience }}, in five bullet points.",
        max_depth="{{ params.max_depth }}",
        config_profile="{{ params.profile }}",
        config_overrides={"temperature": 0.2, "max_tokens": 2000},
        metadata={"dag_run": "{{ run_id }}", "emulate": "succeed:3"},
        deferrable=True,
    )
    topic >> research

    # Waits in the worker, using the previous answer; a fixed profile is checked when the DAG is parsed.
    summary = IzieromaRunOperator(
        task_id="one_line_summary",
        goal="Summarise in one sentence: {{ ti.xcom_pull(task_ids='research')['result'] }}",
        max_depth=1,
        config_profile="fast",
        metadata={"emulate": "succeed:2"},
        deferrable=False,
    )
    research >> summary

    # Start a long market scan without waiting (the task returns the execution id) ...
    scan = IzieromaRunOperator(
        task_id="start_market_scan",
        goal="Scan prediction markets for questions about {{ ti.xcom_pull(task_ids='pick_topic') }}.",
        config_profile="crypto_agent",
        metadata={"emulate": "succeed:4"},
        wait_for_completion=False,
    )
    topic >> scan

    # ... and wait for it elsewhere, by its id. A sensor never cancels a run it did not start.
    IzieromaExecutionSensor(
        task_id="wait_for_market_scan",
        execution_id="{{ ti.xcom_pull(task_ids='start_market_scan') }}",
        poke_interval=2,
        mode="reschedule",
    ).set_upstream(scan)

# A deferrable run that goes on longer than the task may. Airflow 3.3 does not enforce execution_timeout while a
# task is deferred; the provider's trigger does: at the deadline it cancels the ROMA run (one POST .../cancel)
# and the task fails with a timeout.
with DAG(
    dag_id="example_izieroma_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "izieroma", "cancel"],
) as timeout_dag:
    IzieromaRunOperator(
        task_id="deep_research",
        goal="Survey every open-source workflow orchestrator and compare their scheduling models.",
        max_depth=10,
        metadata={"emulate": "forever"},
        execution_timeout=timedelta(seconds=8),
        poll_interval=1,
        max_poll_interval=2,
        deferrable=True,
        retries=0,
    )
