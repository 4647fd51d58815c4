"""The bctrl operator, sensor, hook and trigger over real HTTP against the emulator: every lifecycle path, plus
bctrl's own: asynchronous cancel (cancelling -> cancelled), step errors with hints, idempotent creates."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome
from airflow_provider_cancel.core.operator import STATE_STORE_KEY, XCOM_EXECUTION_ID
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.emulator.bctrl import BUSY_RUNTIME_ID, FORBIDDEN_SUBACCOUNT, MISSING_ID
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.bctrl import (
    GENERATION_2,
    BctrlHook,
    BctrlInvocationSensor,
    BctrlInvokeOperator,
)
from tests.airflow_compat import USER_ACTION_CANCEL_MSG, AirflowFailException, TaskDeferred

from .conftest import API_KEY, FakeStore, FakeTI, defer, drive_trigger, make_context

CONN = "bctrl_emu"
SPACE = "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01"
RUNTIME = "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7"
STEPS = [
    {"call": "browser.goto", "args": ["https://shop.example.com"], "bind": "page1", "ref": "s1",
     "options": {"dryRun": False, "timeoutMs": 30000}},
    {"call": "browser.click", "args": ["#buy"], "options": {"timeoutMs": 5000}},
]


def op(scenario: str = "succeed:2", **kw) -> BctrlInvokeOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    kw.setdefault("space_id", SPACE)
    kw.setdefault("runtime_id", RUNTIME)
    kw.setdefault("steps", STEPS)
    kw.setdefault("metadata", {"emulate": scenario})
    return BctrlInvokeOperator(task_id=kw.pop("task_id", "invoke"), conn_id=kw.pop("conn_id", CONN), **kw)


def ctx(store: FakeStore | None = None, try_number: int = 1) -> dict:
    """A fresh task instance per test: the emulator lives for the session and remembers idempotency keys."""
    return make_context(FakeTI(f"invoke-{uuid.uuid4().hex[:8]}", try_number=try_number), store)


def start(scenario: str) -> str:
    return BctrlHook(CONN).create_invocation(SPACE, RUNTIME, STEPS, metadata={"emulate": scenario})


def creates(emu) -> list[dict]:
    return emu.journal(vendor="bctrl", action="create")


# -- sync lifecycle ---------------------------------------------------------------------------------------
def test_sync_success_returns_the_result_records_the_id_and_sends_no_cancel(emu):
    task = op("succeed:3")
    context = ctx()
    result = task.execute(context)
    eid = task.execution_id
    assert result["ok"] is True and result["mode"] == "fail-fast" and result["runtimeId"] == RUNTIME
    assert [(s["call"], s["ok"]) for s in result["steps"]] == [("browser.goto", True), ("browser.click", True)]
    assert context["ti"].xcoms[XCOM_EXECUTION_ID] == eid
    assert STATE_STORE_KEY not in context["task_state_store"].values  # recorded before polling, forgotten on success
    assert len(emu.journal(action="status", execution_id=eid)) >= 3
    task.on_kill()  # Airflow 3.3 may SIGTERM after success: must not cancel
    assert emu.cancels(eid) == []


def test_progress_names_the_step_and_call(emu):
    hook = BctrlHook(CONN)
    eid = start("succeed:4")
    readings = [hook.get_status(eid) for _ in range(3)]
    assert [r.vendor_status for r in readings] == ["dispatching", "running", "running"]
    assert readings[0].state is ExecutionState.QUEUED and readings[1].state is ExecutionState.RUNNING
    assert readings[1].progress == "step 1/2 browser.goto: Running browser.goto"
    assert readings[2].progress == "step 2/2 browser.click: Running browser.click"
    assert "step 2/2 browser.click" in readings[2].describe()


def test_a_step_failure_surfaces_its_code_message_and_hint_and_sends_no_cancel(emu):
    task = op("fail:2")
    with pytest.raises(ExecutionFailed) as err:
        task.execute(ctx())
    text = str(err.value)
    assert "failed (failed)" in text
    assert "invocation.failed: Step 2 of 2 (browser.click) failed: TIMEOUT" in text  # the top-level error
    assert "steps[1] browser.click failed: TIMEOUT: browser.click timed out after 5000 ms" in text  # the step
    assert "hint: Check that the target exists on the page, or raise options.timeoutMs" in text
    assert "failedStepIndex" in text  # the error's details
    assert "browser.goto" not in text.split("|")[-1]  # the step that passed is not blamed
    assert emu.cancels(task.execution_id) == []


def test_timed_out_is_a_failure_with_bctrls_code(emu):
    with pytest.raises(ExecutionFailed, match=r"\(timed_out\): invocation.timed_out: .*after 1 of 2 steps"):
        op("partial:1").execute(ctx())


def test_cancelled_by_someone_else_fails_without_retry(emu):
    task = op("remote_cancel:2")
    with pytest.raises(ExecutionCancelledRemotely) as err:
        task.execute(ctx())
    assert isinstance(err.value, AirflowFailException)
    assert "cancelled outside this task" in str(err.value)
    assert "invocation.cancelled: Invocation was cancelled by another client" in str(err.value)
    assert emu.cancels(task.execution_id) == []


def test_on_kill_while_polling_requests_cancel_once_and_the_next_read_says_cancelled(emu):
    task = op("forever")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = task.execute(ctx())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: task.execution_id and emu.journal(action="status", execution_id=task.execution_id), 20)
    task.on_kill()  # returns at once: the cancel is requested, not awaited
    task.on_kill()  # Airflow can call it twice (SIGTERM, then the timeout path): still one cancel
    worker.join(20)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), ExecutionKilled), outcome
    eid = task.execution_id
    (cancel,) = emu.cancels(eid)
    assert cancel["status_code"] == 200
    # bctrl's cancel is asynchronous: `cancelling` until the next read (which the dying poll loop may have made).
    assert emu.execution(eid)["state"] in ("cancelling", "cancelled")
    after = BctrlHook(CONN).get_status(eid)
    assert after.state is ExecutionState.CANCELLED and "invocation.cancelled" in (after.error or "")
    record = emu.execution(eid)
    assert (record["state"], record["cancelled_by"]) == ("cancelled", "api")
    assert len(emu.cancels(eid)) == 1


# -- asynchronous cancel and cancel outcomes ---------------------------------------------------------------
def test_cancelling_is_not_terminal_and_cancel_outcomes(emu):
    hook = BctrlHook(CONN)
    eid = start("forever")
    call = hook.cancel_call(eid)
    answer = hook.parse_status(eid, hook.client.request(call), call)  # the emulator's real cancel answer
    assert answer.vendor_status == "cancelling" and answer.state is ExecutionState.CANCELLING
    assert not answer.state.is_terminal and "cancel requested at" in (answer.progress or "")
    assert hook.get_status(eid).state is ExecutionState.CANCELLED
    assert hook.cancel(eid) is CancelOutcome.ALREADY_FINISHED  # 409 invocation.not_cancellable
    assert hook.cancel("3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f") is CancelOutcome.NOT_FOUND
    assert [c["status_code"] for c in emu.cancels(eid)] == [200, 409]


def test_sensor_keeps_waiting_while_cancelling_then_fails_when_cancelled(emu):
    hook = BctrlHook(CONN)
    eid = start("forever")
    sensor = BctrlInvocationSensor(task_id="s", conn_id=CONN, execution_id=eid, poke_interval=0.05,
                                   deferrable=False)
    assert sensor.poke(ctx()) is False  # dispatching
    call = hook.cancel_call(eid)
    cancelling = hook.parse_status(eid, hook.client.request(call), call)  # what bctrl answers to a cancel
    assert sensor._evaluate(hook, cancelling) is False  # not terminal: the sensor keeps waiting
    with pytest.raises(AirflowFailException, match=r"ended cancelled \(cancelled\): invocation.cancelled"):
        sensor.poke(ctx())  # the next read: cancelled
    assert len(emu.cancels(eid)) == 1  # only the one this test sent: a sensor never cancels


# -- start exactly once ------------------------------------------------------------------------------------
def test_a_create_slower_than_the_read_timeout_is_retried_and_starts_one_invocation(emu, monkeypatch):
    conn = {"conn_type": "bctrl", "host": emu.url + "/bctrl", "password": API_KEY, "extra": {"timeout": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_SLOW", json.dumps(conn))
    emu.add_fault(vendor="bctrl", action="create", kind="slow", delay=3, count=1)
    task = op("succeed:1", conn_id="bctrl_slow")
    context = ctx()
    key = task.idempotency_key(context)
    before = len(creates(emu))
    result = task.execute(context)
    assert result["ok"] is True
    # Let the slow first request finish too: the emulator answers it with the same invocation.

    def settled() -> list[dict] | None:
        attempts = creates(emu)[before:]
        return attempts if len(attempts) >= 2 and all(e["status_code"] for e in attempts) else None

    attempts = wait_for(settled, timeout=20)
    assert len(attempts) >= 2 and [e["fault"] for e in attempts].count("slow") == 1
    assert {e["execution_id"] for e in attempts} == {task.execution_id}
    same_key = [x for x in emu.executions(vendor="bctrl") if x["idempotency_key"] == key]
    assert [x["id"] for x in same_key] == [task.execution_id]
    assert same_key[0]["data"]["request"]["idempotencyKey"] == key


def test_a_create_answered_502_is_retried_with_its_key_and_starts_once(emu):
    emu.add_fault(vendor="bctrl", action="create", kind="502", count=1)
    task = op("succeed:1")
    context = ctx()
    before = len(creates(emu))
    assert task.execute(context)["ok"] is True
    assert [e["status_code"] for e in creates(emu)[before:]] == [502, 202]
    key = task.idempotency_key(context)
    assert len([x for x in emu.executions(vendor="bctrl") if x["idempotency_key"] == key]) == 1


def test_429_storm_with_retry_after_is_ridden_out(emu):
    emu.add_fault(vendor="bctrl", action="status", kind="429", count=4, retry_after=0)
    emu.add_fault(vendor="bctrl", action="status", kind="429", count=1, retry_after=1)
    task = op("succeed:1")
    assert task.execute(ctx())["ok"] is True
    reads = emu.journal(vendor="bctrl", action="status", execution_id=task.execution_id)
    limited = [i for i, e in enumerate(reads) if e["fault"] == "429"]
    assert len(limited) == 5
    waited = reads[limited[-1] + 1]["ts"] - reads[limited[-1]]["ts"]
    assert waited >= 0.9, f"Retry-After: 1 was not honoured (next read after {waited:.2f}s)"
    assert emu.cancels(task.execution_id) == []


# -- vendor errors at create ---------------------------------------------------------------------------------
def test_unknown_runtime_is_a_clear_404_with_bctrls_code_hint_and_request_id(emu):
    before = len(creates(emu))
    with pytest.raises(ExecutionApiError) as err:
        op(runtime_id=MISSING_ID).execute(ctx())
    assert err.value.status_code == 404 and err.value.code == "runtime.not_found"
    assert "Runtime not found; hint: Check the space and runtime ids" in str(err.value)
    assert err.value.request_id and err.value.request_id.startswith("req_")
    assert len(creates(emu)) == before + 1  # not retried


def test_a_busy_runtime_is_not_retried(emu):
    before = len(creates(emu))
    with pytest.raises(ExecutionApiError, match=r"HTTP 409 runtime\.controller_busy"):
        op(runtime_id=BUSY_RUNTIME_ID).execute(ctx())
    assert len(creates(emu)) == before + 1


# -- bad input: clear errors before any request ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space_id": "space-1"}, "space_id must be a UUID"),
        ({"runtime_id": "../runtimes"}, "runtime_id must be a UUID"),
        ({"steps": []}, "steps must be a non-empty list"),
        ({"steps": {"call": "browser.goto"}}, "steps must be a non-empty list"),
        ({"steps": ["browser.goto"]}, r"steps\[0\] must be a mapping"),
        ({"steps": [{"args": ["https://x"]}]}, r"steps\[0\] needs a non-empty string 'call'"),
        ({"steps": [{"call": "browser.goto"}, {"call": "  "}]}, r"steps\[1\] needs a non-empty string 'call'"),
        ({"steps": [{"call": "a.b", "args": 5}]}, r"steps\[0\].args must be a list or a mapping"),
        ({"steps": [{"call": "a.b", "options": {"timeoutMs": -1}}]}, "timeoutMs must be a positive integer"),
        ({"steps": [{"call": "a.b", "options": {"logs": "verbose"}}]}, "logs must be one of"),
        ({"steps": [{"call": "a.b", "options": {"dryRun": "maybe"}}]}, "dryRun must be true or false"),
        ({"mode": "best-effort"}, "mode must be one of"),
        ({"metadata": ["emulate"]}, "metadata must be a mapping"),
    ],
)
def test_bad_arguments_fail_at_dag_parse(emu, kwargs, message):
    before = len(creates(emu))
    with pytest.raises(ProviderConfigError, match=message):
        op(**kwargs)
    assert len(creates(emu)) == before


@pytest.mark.parametrize(
    ("field", "rendered", "message"),
    [
        ("space_id", "not-a-uuid", "space_id must be a UUID"),
        ("runtime_id", "", "runtime_id must be a UUID"),
        ("steps", "[]", "steps must be a non-empty list"),
        ("steps", "[{'args': []}]", r"steps\[0\] needs a non-empty string 'call'"),
        ("steps", "browser.goto", "steps must be a list/mapping"),
        ("mode", "fast", "mode must be one of"),
        ("metadata", "[1, 2]", "metadata must be a mapping"),
    ],
)
def test_bad_rendered_templates_fail_before_any_request(emu, field, rendered, message):
    task = op(**{field: "{{ params.value }}"})  # passes at parse: only a template
    setattr(task, field, rendered)  # what rendering produced
    before = len(creates(emu))
    with pytest.raises(ProviderConfigError, match=message):
        task.execute(ctx())
    assert len(creates(emu)) == before


def test_rendered_strings_from_xcom_are_read_back(emu):
    task = op(steps="{{ ti.xcom_pull(task_ids='plan') }}", metadata="{{ ti.xcom_pull(task_ids='meta') }}")
    task.steps = repr([{"call": "browser.goto", "args": ["https://x"], "options": {"timeoutMs": "1000"}}])
    task.metadata = json.dumps({"emulate": "succeed:1", "team": "growth"})
    result = task.execute(ctx())
    assert [s["call"] for s in result["steps"]] == ["browser.goto"]
    sent = emu.execution(task.execution_id)["data"]
    assert sent["request"]["steps"][0]["options"] == {"timeoutMs": 1000}
    assert sent["metadata"] == {"emulate": "succeed:1", "team": "growth"}


@pytest.mark.parametrize("bad", ["", "../etc", "3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f/x", "not a uuid",
                                 "3f2b6c1e8a4d4c2b9e7f1a2b3c4d5e6f", "x" * 10_000, "a?b#c"])
def test_malformed_invocation_ids_are_refused_before_any_request(emu, bad):
    seen = len(emu.journal(vendor="bctrl"))
    with pytest.raises(ProviderConfigError, match="execution id"):
        BctrlHook(CONN).get_status(bad)
    assert len(emu.journal(vendor="bctrl")) == seen


# -- connection ----------------------------------------------------------------------------------------------
def test_wrong_key_is_a_clear_error_and_the_key_is_not_in_it(emu):
    with pytest.raises(ExecutionApiError) as err:
        BctrlHook("bctrl_badkey").create_invocation(SPACE, RUNTIME, STEPS)
    assert err.value.status_code == 401 and err.value.code == "auth.required"
    assert "sk-wrong-key" not in str(err.value) and API_KEY not in str(err.value)


def test_test_connection(emulator):
    ok, message = BctrlHook(CONN).test_connection()
    assert ok, message
    ok, message = BctrlHook("bctrl_badkey").test_connection()
    assert not ok and "rejected the API key" in message and "sk-wrong-key" not in message


def test_subaccount_id_is_sent_from_the_connection_extra(emu, monkeypatch):
    base = {"conn_type": "bctrl", "host": emu.url + "/bctrl", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_SUB_OK", json.dumps({**base, "extra": {"subaccount_id": "sub_123"}}))
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_SUB_NO",
                       json.dumps({**base, "extra": {"subaccount_id": FORBIDDEN_SUBACCOUNT}}))
    assert BctrlHook("bctrl_sub_ok").create_invocation(SPACE, RUNTIME, STEPS)
    with pytest.raises(ExecutionApiError) as err:
        BctrlHook("bctrl_sub_no").create_invocation(SPACE, RUNTIME, STEPS)
    assert err.value.status_code == 403 and err.value.code == "auth.forbidden"
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_SUB_BAD", json.dumps({**base, "extra": {"subaccount_id": "a b/c"}}))
    with pytest.raises(ProviderConfigError, match="subaccount_id"):
        BctrlHook("bctrl_sub_bad").create_invocation(SPACE, RUNTIME, STEPS)


def test_paths_switch_generation_in_one_place(emu):
    class Gen2Hook(BctrlHook):
        paths = GENERATION_2

    eid = start("forever")
    hook = Gen2Hook(CONN)
    assert hook.status_call(eid).path == f"/v1/invocations/{eid}"
    with pytest.raises(ProviderConfigError, match="runtime_id"):
        hook.cancel_call(eid)  # generation 2 cancels under the runtime, which this hook has not seen yet
    assert hook.get_status(eid).state is ExecutionState.QUEUED  # the read tells it the runtime
    assert hook.cancel_call(eid).path == f"/v1/runtimes/{RUNTIME}/invocations/{eid}/cancel"
    BctrlHook(CONN).cancel(eid)


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


async def test_deferred_success_resumes_with_the_result_and_no_cancel(emu):
    context = ctx()
    trigger = defer(op("succeed:3", deferrable=True), context)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "succeeded"
    fresh = op("succeed:3", deferrable=True)  # the worker resumes a new object
    result = fresh.execute_complete(context, events[0])
    assert result["ok"] is True and len(result["steps"]) == 2
    assert emu.cancels(trigger.execution_id) == []


async def test_deferred_failure_carries_the_step_error(emu):
    context = ctx()
    trigger = defer(op("fail:2", deferrable=True), context)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "failed"
    with pytest.raises(ExecutionFailed, match=r"steps\[1\] browser\.click failed: TIMEOUT.*hint: Check"):
        op("fail:2", deferrable=True).execute_complete(context, events[0])


async def test_a_cancel_requested_elsewhere_while_deferred_ends_as_cancelled_remotely(emu):
    """Someone else asks bctrl to cancel (cancelling): the trigger reads on, and the task fails without retry."""
    trigger = defer(op("forever", deferrable=True), ctx())
    eid = trigger.execution_id
    hook = BctrlHook(CONN)
    assert hook.cancel(eid) is CancelOutcome.REQUESTED  # now cancelling
    events = await drive_trigger(trigger)
    assert [(e["kind"], e["state"]) for e in events] == [("terminal", "cancelled")]
    with pytest.raises(ExecutionCancelledRemotely, match=r"invocation\.cancelled"):
        op("forever", deferrable=True).execute_complete(ctx(), events[0])
    assert len(emu.cancels(eid)) == 1


# -- retry after a hard worker crash (the id was recorded before polling) ----------------------------------
def test_a_new_try_reattaches_to_the_live_invocation_of_a_crashed_try(emu):
    store = FakeStore()
    eid = start("succeed:6")
    store.set(STATE_STORE_KEY, eid)  # what the crashed try had recorded
    before = len(creates(emu))
    task = op("succeed:6")
    result = task.execute(ctx(store, try_number=2))
    assert result["ok"] is True and task.execution_id == eid and len(creates(emu)) == before
    assert emu.cancels(eid) == []


def test_on_existing_cancel_cancels_the_orphan_and_starts_afresh(emu):
    store = FakeStore()
    orphan = start("forever")
    store.set(STATE_STORE_KEY, orphan)
    task = op("succeed:1", on_existing="cancel")
    task.execute(ctx(store, try_number=2))
    assert task.execution_id != orphan
    assert len(emu.cancels(orphan)) == 1
    assert STATE_STORE_KEY not in store.values  # recorded before polling, forgotten on success


# -- sensor --------------------------------------------------------------------------------------------------
def test_sensor_succeeds_fails_and_never_cancels(emu):
    good, bad = start("succeed:2"), start("fail:1")
    sensor = BctrlInvocationSensor(task_id="s", conn_id=CONN, execution_id=good, poke_interval=0.05,
                                   deferrable=False)
    sensor.execute(ctx())
    failing = BctrlInvocationSensor(task_id="s2", conn_id=CONN, execution_id=bad, poke_interval=0.05,
                                    deferrable=False)
    with pytest.raises(AirflowFailException, match=r"ended failed .*browser\.click failed: TIMEOUT"):
        failing.execute(ctx())
    assert emu.cancels(good) == [] and emu.cancels(bad) == []


async def test_deferrable_sensor_kill_does_not_cancel(emu):
    eid = start("forever")
    sensor = BctrlInvocationSensor(task_id="s", conn_id=CONN, execution_id=eid, poke_interval=0.05,
                                   deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx())
    trigger = deferred.value.trigger
    await drive_trigger(trigger, cancel_when=lambda: len(emu.journal(action="status", execution_id=eid)) > 1,
                        cancel_msg=USER_ACTION_CANCEL_MSG)
    assert emu.cancels(eid) == []
    BctrlHook(CONN).cancel(eid)
