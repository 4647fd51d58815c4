"""The B3OS operator, sensor, hook and trigger over real HTTP against the emulator: every lifecycle path,
plus what is B3OS's own: the response envelope, the idempotent client-chosen runId, `waiting`, failed nodes,
409 on cancelling a finished run, inline definition checks."""

from __future__ import annotations

import json
import re
import threading
import uuid

import pytest

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome
from airflow_provider_cancel.core.http import ApiCall, ClientTimeouts, RetryPolicy
from airflow_provider_cancel.core.operator import XCOM_EXECUTION_URL
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.b3os import (
    B3osHook,
    B3osRunSensor,
    B3osRunWorkflowOperator,
    idempotent_run_id,
    unwrap,
)

from .conftest import API_KEY, FakeStore, FakeTI, defer, drive_trigger, make_context

CONN = "b3os_emu"
WORKFLOW = "wf_prices"
DEFINITION = {
    "nodes": {
        "root": {"type": "manual", "payload": {}, "children": ["log_message"]},
        "log_message": {"type": "log", "payload": {"message": "{{$trigger.body.message}}"}, "children": []},
    }
}


def op(scenario: str = "succeed:2", *, workflow_id: str | None = WORKFLOW, **kw) -> B3osRunWorkflowOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    payload = {**kw.pop("payload", {}), "emulate": scenario}
    if kw.get("definition") is not None:
        workflow_id = None
    return B3osRunWorkflowOperator(task_id=kw.pop("task_id", "run"), conn_id=CONN, workflow_id=workflow_id,
                                   payload=payload, **kw)


def context(task_id: str = "t", try_number: int = 1, store: FakeStore | None = None) -> dict:
    """A task context of its own: the runId derives from dag/run/task/try, so tests must not share one."""
    ti = FakeTI(task_id, try_number)
    ti.run_id = f"manual__{uuid.uuid4().hex[:12]}"
    return make_context(ti, store)


def creates(emu) -> list[dict]:
    return emu.journal(vendor="b3os", action="create")


def b3os_runs(emu) -> list[dict]:
    return emu.executions(vendor="b3os")


def statuses(emu, run_id: str) -> list[dict]:
    return emu.journal(action="status", execution_id=run_id)


# -- sync lifecycle ---------------------------------------------------------------------------------------
def test_success_returns_each_nodes_output_and_the_run_id_is_the_clients(emu):
    task = op("succeed:3")
    ctx = context()
    result = task.execute(ctx)
    run_id = result["run_id"]
    assert run_id == idempotent_run_id(task.idempotency_key(ctx))  # the client-chosen, idempotent runId
    assert result["status"] == "success" and result["totalCu"] > 0
    assert set(result["outputs"]) == {"root", "fetch_price", "notify"}
    assert result["outputs"]["root"] == {"emulate": "succeed:3"}  # the payload is the trigger's output
    assert result["outputs"]["notify"]["node"] == "notify"
    assert ctx["ti"].xcoms[XCOM_EXECUTION_URL] == f"https://b3os.org/workflows/{WORKFLOW}"
    polls = statuses(emu, run_id)
    assert len(polls) >= 4 and "summary=true" in polls[0]["query"]
    assert "summary" not in polls[-1]["query"]  # the one full read for outputs


def test_progress_counts_nodes_and_shows_compute_units(emu):
    hook = B3osHook(CONN)
    run_id = hook.run_workflow(WORKFLOW, payload={"emulate": "forever"})
    summary = hook.get_status(run_id)
    assert summary.state is ExecutionState.RUNNING and summary.progress.startswith("totalCu ")
    later = hook.get_status(run_id)
    assert float(later.progress.split()[-1]) > float(summary.progress.split()[-1])  # CU grows
    full = hook.run_status(run_id, hook.get_run(run_id))
    assert re.fullmatch(r"[12]/3 nodes done, totalCu [\d.]+", full.progress), full.progress
    hook.cancel(run_id)


def test_output_node_ids_are_fetched_and_returned_alone(emu):
    task = op("succeed:1", output_node_ids="notify")
    result = task.execute(context())
    assert list(result["outputs"]) == ["notify"]
    assert "nodeIds=notify" in statuses(emu, result["run_id"])[-1]["query"]


def test_inline_definition_runs_and_has_no_link(emu):
    definition = {"nodes": {**DEFINITION["nodes"], "root": {**DEFINITION["nodes"]["root"],
                                                             "payload": {"note": "emulate:succeed:1"}}}}
    task = B3osRunWorkflowOperator(task_id="inline", conn_id=CONN, definition=definition,
                                   payload={"message": "hi"}, prop_values={"chain": "base"},
                                   poll_interval=0.05, max_poll_interval=0.2, deferrable=False)
    ctx = context()
    result = task.execute(ctx)
    assert set(result["outputs"]) == {"root", "log_message"}
    assert XCOM_EXECUTION_URL not in ctx["ti"].xcoms  # no page for an ephemeral run; none invented
    record = emu.execution(result["run_id"])
    assert record["data"]["workflowId"] == "" and record["data"]["propValues"] == {"chain": "base"}


# -- B3OS specifics ------------------------------------------------------------------------------------------
def test_the_envelope_is_unwrapped_and_error_envelopes_become_api_errors(emu):
    hook = B3osHook(CONN)
    run_id = hook.run_workflow(WORKFLOW, payload={"emulate": "forever"})
    data = hook.call_api(hook.run_call(run_id, summary=True))
    assert data["id"] == run_id and "code" not in data and "requestId" not in data
    with pytest.raises(ExecutionApiError) as err:
        hook.run_workflow("wf_archived")
    assert (err.value.status_code, err.value.code, err.value.message) == (400, "400", "workflow is archived")
    assert err.value.request_id  # from the envelope's requestId
    # An error envelope inside an HTTP 200 is an error too, with its code and request id.
    call = ApiCall("GET", "/v1/runs/run_x", "status")
    with pytest.raises(ExecutionApiError) as err:
        unwrap({"code": 400228, "message": "invalid definition", "requestId": "abc-123"}, vendor="B3OS", call=call)
    assert (err.value.code, err.value.message, err.value.request_id) == ("400228", "invalid definition", "abc-123")
    assert unwrap({"code": 0, "data": {"runId": "run_1"}, "message": "success"}, vendor="B3OS", call=call) == {
        "runId": "run_1"}
    hook.cancel(run_id)


def test_insufficient_cu_is_a_clear_error_and_starts_nothing(emu):
    before = len(b3os_runs(emu))
    with pytest.raises(ExecutionApiError) as err:
        op(workflow_id="wf_no_cu").execute(context())
    assert err.value.status_code == 402 and "Insufficient CU balance" in str(err.value)
    assert len(b3os_runs(emu)) == before


def test_a_duplicate_run_id_is_adopted_not_started_twice(emu):
    hook = B3osHook(CONN)
    before = len(b3os_runs(emu))
    first = hook.run_workflow(WORKFLOW, run_id="run_adopt_me", payload={"emulate": "forever"})
    again = hook.run_workflow(WORKFLOW, run_id="run_adopt_me", payload={"emulate": "forever"})
    assert first == again == "run_adopt_me"
    assert len(b3os_runs(emu)) == before + 1
    answers = [(e["status_code"]) for e in creates(emu) if e["execution_id"] == "run_adopt_me"]
    assert answers == [200, 400]  # the second create was refused as a duplicate (400079), then adopted
    assert statuses(emu, "run_adopt_me")  # ... after reading the run to confirm it exists
    # A run id taken by another workflow's run is not adopted.
    with pytest.raises(ExecutionApiError, match="not adopting"):
        hook.run_workflow("wf_other", run_id="run_adopt_me")
    with pytest.raises(ExecutionApiError, match="not of an inline definition: not adopting"):
        hook.run_definition(DEFINITION, run_id="run_adopt_me")
    hook.cancel("run_adopt_me")


def test_the_operator_starting_again_in_the_same_try_reuses_the_run(emu):
    ctx = context("same_try")
    task = op("forever", task_id="same_try")
    before = len(b3os_runs(emu))
    first = task.start_execution(task.hook, ctx)
    again = op("forever", task_id="same_try").start_execution(task.hook, ctx)
    assert first == again and len(b3os_runs(emu)) == before + 1
    retry_ti = FakeTI("same_try", try_number=2)
    retry_ti.run_id = ctx["ti"].run_id
    next_try = op("forever", task_id="same_try").start_execution(task.hook, {**ctx, "ti": retry_ti})
    assert next_try != first  # a new try is a new run
    task.hook.cancel(first)
    task.hook.cancel(next_try)


def test_a_create_retried_after_a_slow_answer_makes_exactly_one_run(emu):
    hook = B3osHook(CONN, timeouts=ClientTimeouts(connect=2, read=0.4), retry=RetryPolicy(initial_backoff=0.05))
    before = len(b3os_runs(emu))
    emu.add_fault(vendor="b3os", action="create", kind="slow", delay=1.0, count=1)
    run_id = hook.run_workflow(WORKFLOW, run_id="run_slow_create", payload={"emulate": "forever"})
    assert run_id == "run_slow_create"
    # Wait until the slow first attempt has been answered too (nobody listens to it any more).
    def answered() -> list[dict] | None:
        found = [e for e in creates(emu) if e["execution_id"] == run_id and e["status_code"]]
        return found if len(found) >= 2 else None

    attempts = wait_for(answered, 20)
    assert sorted(e["status_code"] for e in attempts) == [200, 400]  # one made it, the other was a duplicate
    assert [r["id"] for r in b3os_runs(emu)[before:]] == [run_id]
    hook.cancel(run_id)


def test_without_a_run_id_a_create_is_never_retried(emu):
    before = len(creates(emu))
    emu.add_fault(vendor="b3os", action="create", kind="502", count=1)
    with pytest.raises(ExecutionApiError, match="HTTP 502"):
        B3osHook(CONN).run_workflow(WORKFLOW)
    assert len(creates(emu)) == before + 1


def test_waiting_is_not_terminal(emu):
    hook = B3osHook(CONN)
    run_id = hook.run_workflow("wf_approval", payload={"emulate": "forever"})
    status = hook.get_status(run_id)
    assert status.state is ExecutionState.RUNNING and not status.state.is_terminal
    assert status.vendor_status == "waiting" and "paused on a wait node" in status.progress
    detailed = hook.run_status(run_id, hook.get_run(run_id))
    assert "paused on node approval" in detailed.progress
    # The operator keeps waiting through `waiting` and finishes when the run does.
    task = op("succeed:3", workflow_id="wf_approval")
    result = task.execute(context())
    assert result["status"] == "success"
    assert [e["status_code"] for e in statuses(emu, result["run_id"])].count(200) >= 4
    assert emu.cancels(result["run_id"]) == []
    assert hook.cancel(run_id) is CancelOutcome.REQUESTED  # a waiting run can be cancelled
    assert emu.execution(run_id)["state"] == "cancelled"


def test_on_kill_while_waiting_cancels_once(emu):
    task = op("forever", workflow_id="wf_approval")
    outcome: dict = {}

    def run() -> None:
        try:
            task.execute(context())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: task.execution_id and statuses(emu, task.execution_id), 20)
    task.on_kill()
    worker.join(20)
    assert isinstance(outcome.get("error"), ExecutionKilled), outcome
    assert len(emu.cancels(task.execution_id)) == 1


def test_cancel_after_success_is_409_and_means_already_finished(emu):
    result = op("succeed:0").execute(context())
    assert B3osHook(CONN).cancel(result["run_id"]) is CancelOutcome.ALREADY_FINISHED
    assert [e["status_code"] for e in emu.cancels(result["run_id"])] == [409]
    assert B3osHook(CONN).cancel("run_never_existed") is CancelOutcome.NOT_FOUND


def test_org_id_from_the_connection_is_sent_as_x_org_id(emu, emulator, monkeypatch):
    conn = {"conn_type": "b3os", "host": emulator.base_url("b3os"), "password": API_KEY,
            "extra": {"org_id": "org_acme"}}
    monkeypatch.setenv("AIRFLOW_CONN_B3OS_ORG", json.dumps(conn))
    run_id = B3osHook("b3os_org").run_definition(DEFINITION, payload={"emulate": "succeed:0"})
    assert emu.execution(run_id)["data"]["organizationId"] == "org_acme"
    monkeypatch.setenv("AIRFLOW_CONN_B3OS_BADORG", json.dumps({**conn, "extra": {"org_id": "acme; x"}}))
    seen = len(emu.journal(vendor="b3os"))
    with pytest.raises(ProviderConfigError, match="org_id"):
        B3osHook("b3os_badorg").run_definition(DEFINITION)
    assert len(emu.journal(vendor="b3os")) == seen


# -- bad input: clear errors before any request ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of workflow_id or definition"),
        ({"workflow_id": WORKFLOW, "definition": DEFINITION}, "exactly one of workflow_id or definition"),
        ({"workflow_id": WORKFLOW, "simulate": True, "dust_test": True}, "mutually exclusive"),
        ({"workflow_id": WORKFLOW, "simulate": "yes"}, "simulate must be True or False"),
        ({"definition": DEFINITION, "simulate": True}, "apply to a saved workflow"),
        ({"workflow_id": WORKFLOW, "prop_values": {"a": 1}}, "prop_values apply to an inline definition"),
        ({"workflow_id": "prices"}, "workflow id like 'wf_abc123'"),
        ({"workflow_id": "wf_a/../b"}, "workflow id like 'wf_abc123'"),
        ({"workflow_id": WORKFLOW, "version": 0}, "version must be a positive integer"),
        ({"workflow_id": WORKFLOW, "payload": [1, 2]}, "payload must be a mapping"),
        ({"workflow_id": WORKFLOW, "output_node_ids": []}, "output_node_ids"),
        ({"definition": {"nodes": {"start": {"type": "manual"}}}}, 'no "root" node'),
        ({"definition": {"nodes": {"root": {"type": "cron", "children": []}}}}, 'node "root" must have type "manual"'),
        ({"definition": {"nodes": {"root": {"type": "manual", "children": ["ghost"]}}}},
         "node 'root' lists child 'ghost', which is not a node"),
        ({"definition": {"nodes": {"root": {"type": "manual", "children": ["a"]}, "a": {"type": "log",
                                                                                           "children": ["b"]}}}},
         "node 'a' lists child 'b'"),
        ({"definition": {"nodes": {}}}, "non-empty mapping"),
        ({"definition": "{not json"}, "not JSON"),
    ],
)
def test_bad_arguments_are_refused_at_dag_parse(emu, kwargs, match):
    before = len(creates(emu))
    with pytest.raises(ProviderConfigError, match=re.escape(match)):
        B3osRunWorkflowOperator(task_id="x", conn_id=CONN, **kwargs)
    assert len(creates(emu)) == before


def test_xcom_args_are_accepted_at_dag_parse():
    from datetime import datetime

    from airflow.sdk import DAG, task

    @task
    def build() -> dict:
        return DEFINITION

    with DAG("b3os_xcomarg", schedule=None, start_date=datetime(2025, 1, 1)):
        inline = B3osRunWorkflowOperator(task_id="inline", definition=build(), payload=build())
        saved = B3osRunWorkflowOperator(task_id="saved", workflow_id=build(), version=build())
    assert len(inline.upstream_task_ids) == len(saved.upstream_task_ids) == 2  # resolved at run time


def test_templated_arguments_are_checked_after_rendering_before_any_request(emu):
    before = len(creates(emu))
    for field, value, match in [("workflow_id", "wf_ok/../x", "workflow id"), ("version", "three", "version")]:
        task = B3osRunWorkflowOperator(task_id="t", conn_id=CONN, workflow_id="{{ params.wf }}",
                                       version="{{ params.version }}", deferrable=False)  # fine at DAG parse
        task.workflow_id, task.version = WORKFLOW, "2"
        setattr(task, field, value)  # what rendering produced
        with pytest.raises(ProviderConfigError, match=match):
            task.execute(context())
    # An inline definition rendered from XCom as JSON text: missing root / root not manual / dangling child.
    bad_definitions = [
        ({"nodes": {"log": {"type": "log", "children": []}}}, 'no "root" node'),
        ({"nodes": {"root": {"type": "webhook", "children": []}}}, 'must have type "manual"'),
        ({"nodes": {"root": {"type": "manual", "children": ["ghost"]}}}, "child 'ghost'"),
    ]
    for definition, match in bad_definitions:
        task = B3osRunWorkflowOperator(task_id="t", conn_id=CONN, definition="{{ ti.xcom_pull('build') }}",
                                       deferrable=False)
        task.definition = json.dumps(definition)
        with pytest.raises(ProviderConfigError, match=match):
            task.execute(context())
    task = B3osRunWorkflowOperator(task_id="t", conn_id=CONN, definition=DEFINITION,
                                   output_node_ids="{{ params.nodes }}", deferrable=False)
    task.output_node_ids = "log_message,ghost"
    with pytest.raises(ProviderConfigError, match=r"output_node_ids \['ghost'\]"):
        task.execute(context())
    assert len(creates(emu)) == before


def test_the_hook_refuses_bad_definitions_and_options_before_any_request(emu):
    hook = B3osHook(CONN)
    seen = len(emu.journal(vendor="b3os"))
    with pytest.raises(ProviderConfigError, match='no "root" node'):
        hook.run_definition({"nodes": {"a": {"type": "log"}}})
    with pytest.raises(ProviderConfigError, match="child 'b'"):
        hook.run_definition({"nodes": {"root": {"type": "manual", "children": ["b"]}}})
    with pytest.raises(ProviderConfigError, match="mutually exclusive"):
        hook.run_workflow(WORKFLOW, simulate=True, dust_test=True)
    with pytest.raises(ProviderConfigError, match="execution id"):
        hook.run_workflow(WORKFLOW, run_id="my-run")
    assert len(emu.journal(vendor="b3os")) == seen


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


async def test_deferred_waiting_run_keeps_the_trigger_waiting_until_it_ends(emu):
    ctx = context()
    trigger = defer(op("succeed:4", workflow_id="wf_approval", deferrable=True), ctx)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["vendor_status"] == "success"
    assert len(statuses(emu, trigger.execution_id)) >= 5


# -- retry after a hard worker crash ----------------------------------------------------------------------


# -- sensor --------------------------------------------------------------------------------------------------
def test_sensor_waits_through_a_waiting_run_and_never_cancels(emu):
    good = B3osHook(CONN).run_workflow("wf_approval", payload={"emulate": "succeed:2"})  # waiting, then success
    B3osRunSensor(task_id="s", conn_id=CONN, execution_id=good, poke_interval=0.05,
                  deferrable=False).execute(context())
    assert [e["status_code"] for e in statuses(emu, good)].count(200) >= 3 and emu.cancels(good) == []


