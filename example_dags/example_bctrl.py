"""bctrl: invoke browser steps on a runtime, wait for an invocation started elsewhere, and a timeout that cancels.

Runs against the real bctrl API with a `bctrl_default` connection (API key in the password, optional extra
`subaccount_id`), or offline against the bundled emulator (`airflow-provider-cancel-emulator`; the
`"emulate": ...` metadata entries choose the emulator's scenario and are plain metadata to bctrl). Docs: docs/bctrl.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cancel.vendors.bctrl import BctrlInvocationSensor, BctrlInvokeOperator

SPACE_ID = "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01"
RUNTIME_ID = "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7"

with DAG(
    dag_id="example_bctrl",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "space_id": Param(SPACE_ID, type="string", format="uuid"),
        "runtime_id": Param(RUNTIME_ID, type="string", format="uuid"),
        "url": Param("https://shop.example.com/cart", type="string"),
    },
    tags=["example", "bctrl"],
) as dag:

    @task
    def plan_steps(params: dict | None = None) -> list[dict]:
        """Build the steps at run time; the invocation reads them from this task's XCom."""
        url = (params or {}).get("url", "https://shop.example.com/cart")
        return [
            {"call": "browser.goto", "args": [url], "bind": "page1", "ref": "open",
             "options": {"timeoutMs": 30000}},
            {"call": "browser.click", "args": ["#checkout"], "ref": "checkout", "options": {"timeoutMs": 10000}},
            {"call": "browser.extract", "args": [{"selector": ".order-total"}], "options": {"logs": "capture"}},
        ]

    plan = plan_steps()

    # Steps from the upstream XCom, ids from the DAG's params; deferrable: waits in the triggerer.
    # Returns the invocation's result ({"mode", "ok", "runtimeId", "steps": [...]}) as this task's XCom.
    checkout = BctrlInvokeOperator(
        task_id="checkout",
        space_id="{{ params.space_id }}",
        runtime_id="{{ params.runtime_id }}",
        steps="{{ ti.xcom_pull(task_ids='plan_steps') }}",
        metadata={"airflow_run": "{{ run_id }}", "emulate": "succeed:3"},
        deferrable=True,
        execution_timeout=timedelta(minutes=20),
    )
    plan >> checkout

    # Start an invocation and return at once (its id is this task's return value); another task waits for it.
    warmup = BctrlInvokeOperator(
        task_id="start_warmup",
        space_id="{{ params.space_id }}",
        runtime_id="{{ params.runtime_id }}",
        steps=[{"call": "browser.goto", "args": ["{{ params.url }}"], "options": {"dryRun": False}}],
        metadata={"emulate": "succeed:4"},
        wait_for_completion=False,
    )

    # Wait for an invocation started elsewhere, by its id, without owning it (a sensor never cancels).
    # Keeps waiting while bctrl reports it `cancelling`; fails when it ends failed, cancelled or timed out.
    watch = BctrlInvocationSensor(
        task_id="watch_warmup",
        execution_id="{{ ti.xcom_pull(task_ids='start_warmup', key='execution_id') }}",
        poke_interval=2,
        mode="reschedule",
    )
    warmup >> watch

    # Waits in the worker (not deferrable), polling quickly at first.
    smoke = BctrlInvokeOperator(
        task_id="smoke_test",
        space_id="{{ params.space_id }}",
        runtime_id="{{ params.runtime_id }}",
        steps=[{"call": "browser.goto", "args": ["{{ params.url }}"]}, {"call": "browser.screenshot"}],
        metadata={"emulate": "succeed:2"},
        deferrable=False,
        poll_interval=1,
        max_poll_interval=10,
    )
    watch >> smoke

# An invocation that runs longer than the task may: at execution_timeout the task fails and bctrl is asked to
# cancel the invocation (one POST /v1/invocations/{id}/cancel; bctrl answers `cancelling`, then `cancelled`).
with DAG(
    dag_id="example_bctrl_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "bctrl", "cancel"],
) as timeout_dag:
    BctrlInvokeOperator(
        task_id="long_scrape",
        space_id=SPACE_ID,
        runtime_id=RUNTIME_ID,
        steps=[{"call": "browser.goto", "args": ["https://shop.example.com/catalog"]},
               {"call": "browser.scroll", "args": [{"until": "end"}]}],
        metadata={"emulate": "forever"},
        execution_timeout=timedelta(seconds=8),
        poll_interval=1,
        max_poll_interval=2,
        deferrable=False,
        retries=0,
    )
