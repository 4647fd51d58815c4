"""B3OS: run a saved workflow and an inline definition, wait for a run started elsewhere (one that pauses for a
human approval), and a timeout that cancels.

Runs against the real B3OS API with a `b3os_default` connection (API key `b3sk_...` in the password; extra
`org_id` if your key needs an organisation context), or offline against the bundled emulator
(`airflow-provider-cancel-emulator`; the `"emulate": "..."` payload entries choose the emulator's scenario and are
plain, unused trigger data to B3OS). Against the emulator, `wf_approval` is a workflow that pauses on a wait node.
Docs: docs/b3os.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cancel.vendors.b3os import B3osRunSensor, B3osRunWorkflowOperator

# An inline (ephemeral) workflow: B3OS requires a "root" node of type "manual", and every child to exist.
PRICE_CHECK = {
    "nodes": {
        "root": {"type": "manual", "payload": {}, "children": ["price"]},
        "price": {"type": "coingecko-get-token-price", "payload": {"tokenId": "{{ params.token }}"},
                  "children": ["log"]},
        "log": {"type": "log", "payload": {"message": "price: {{ '{{price.result.price}}' }}"}, "children": []},
    }
}

with DAG(
    dag_id="example_b3os",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "workflow_id": Param("wf_daily_rebalance", type="string", pattern=r"^wf_\w+$"),
        "token": Param("ethereum", type="string"),
    },
    tags=["example", "b3os"],
) as dag:

    @task
    def pick_wallet() -> str:
        """Stands in for whatever upstream logic decides the wallet the workflow acts on."""
        return "0x1111111111111111111111111111111111111111"

    wallet = pick_wallet()

    # A saved workflow, its id from the DAG's params and its trigger payload from upstream XCom; deferrable:
    # waits in the triggerer. The workflow reads the payload as {{root.result.wallet}}.
    rebalance = B3osRunWorkflowOperator(
        task_id="rebalance",
        workflow_id="{{ params.workflow_id }}",
        payload={
            "wallet": "{{ ti.xcom_pull(task_ids='pick_wallet') }}",
            "token": "{{ params.token }}",
            "emulate": "succeed:3",
        },
        deferrable=True,
        execution_timeout=timedelta(minutes=30),
    )
    wallet >> rebalance

    # An inline definition, nothing saved on B3OS; waits in the worker and returns only the price node's result.
    price_check = B3osRunWorkflowOperator(
        task_id="price_check",
        definition=PRICE_CHECK,
        payload={"requested_by": "{{ dag.dag_id }}", "emulate": "succeed:2"},
        output_node_ids=["price"],
        deferrable=False,
    )

    # Start a run that waits for a person's approval, without owning the wait: the sensor watches it by id.
    # Killing the sensor leaves the run alone (it is not the sensor's to cancel).
    start_approval = B3osRunWorkflowOperator(
        task_id="start_approval_run",
        workflow_id="wf_approval",
        payload={"amount_usd": 250, "emulate": "succeed:3"},
        wait_for_completion=False,  # returns the run id as soon as the run has started
    )
    approved = B3osRunSensor(
        task_id="wait_for_approval",
        execution_id="{{ ti.xcom_pull(task_ids='start_approval_run') }}",
        poke_interval=5,
        timeout=int(timedelta(days=1).total_seconds()),
        deferrable=True,
    )
    start_approval >> approved

# The demo job: a run that goes on longer than the task may. At execution_timeout the task fails and the B3OS
# run is cancelled (one POST /v1/runs/{id}/cancel), instead of running on and spending compute units.
with DAG(
    dag_id="example_b3os_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "b3os", "cancel"],
) as timeout_dag:
    B3osRunWorkflowOperator(
        task_id="long_run",
        workflow_id="wf_market_maker",
        payload={"emulate": "forever"},
        execution_timeout=timedelta(seconds=8),
        poll_interval=1,
        max_poll_interval=2,
        deferrable=False,
        retries=0,
    )
