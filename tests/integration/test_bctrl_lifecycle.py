"""What is bctrl's own, over real HTTP against the emulator, on both API generations where both have it:
asynchronous cancel (cancelling -> cancelled), cancels without a body on each generation's path, step errors
with hints, idempotent creates, coded create errors, the generation as a connection setting.

The lifecycle every vendor shares runs on both generations in test_vendor_contract.py."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferralError

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.emulator.bctrl import BUSY_RUNTIME_ID, FORBIDDEN_SUBACCOUNT, MISSING_ID
from airflow_provider_cancel.emulator.testing import RUNTIME_ID, SPACE_ID, wait_for
from airflow_provider_cancel.vendors.bctrl import BctrlHook, BctrlInvocationSensor, BctrlInvokeOperator

from .conftest import API_KEY, FakeStore, FakeTI, defer, drive_trigger, make_context
from .vendor_ops import BCTRL_STEPS, BY_NAME, Case

CONN = "bctrl_emu"
SPACE, RUNTIME, STEPS = SPACE_ID, RUNTIME_ID, BCTRL_STEPS
GENERATIONS = [BY_NAME["bctrl"], BY_NAME["bctrl-gen2"]]
# Each generation's cancel path, for an invocation id.
CANCEL_PATH = {"bctrl": "/bctrl/v1/invocations/{id}/cancel",
               "bctrl-gen2": f"/bctrl/v1/runtimes/{RUNTIME}/invocations/{{id}}/cancel"}
each_generation = pytest.mark.parametrize("gen", GENERATIONS, ids=str)


def op(scenario: str = "succeed:2", **kw) -> BctrlInvokeOperator:
    """A generation-1 operator running steps (the arguments below check generation 1's own)."""
    return BY_NAME["bctrl"].operator(scenario, **kw)


def ctx(store: FakeStore | None = None, try_number: int = 1) -> dict:
    """A fresh task instance per test: the emulator lives for the session and remembers idempotency keys."""
    return make_context(FakeTI(f"invoke-{uuid.uuid4().hex[:8]}", try_number=try_number), store)


def creates(emu) -> list[dict]:
    return emu.journal(vendor="bctrl", action="create")


def cancel_answer(hook: BctrlHook, eid: str):
    """What bctrl answers to a cancel, read as a status (read first: generation 2 cancels under its runtime)."""
    hook.get_status(eid)
    call = hook.cancel_call(eid)
    return hook.parse_status(eid, hook.client.request(call), call)


# -- generation 1: steps ---------------------------------------------------------------------------------------
def test_progress_names_the_step_and_call(emu):
    hook = BctrlHook(CONN)
    eid = BY_NAME["bctrl"].start("succeed:4")
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
        ({"space_id": None}, "steps run in a space .*give space_id"),
        ({"action": {"action": "act", "instruction": "x"}}, "exactly one of steps .* or action"),
        ({"steps": None, "action": {"action": "dance"}}, r"action\['action'\] must be one of"),
        ({"steps": None, "action": {"action": "observe"}}, "'observe' needs an 'instruction'"),
        ({"steps": None, "action": {"action": "act", "instruction": " "}}, "instruction'] must be a non-blank"),
        ({"steps": None, "action": {"action": "act", "instruction": "x", "timeoutSeconds": 0}}, "timeoutSeconds"),
        ({"steps": None, "action": ["act"]}, "action must be a mapping"),
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


# -- generation 2: one action ----------------------------------------------------------------------------------
def test_an_action_rendered_from_xcom_is_read_back_and_metadata_merges_into_its_own(emu):
    gen2 = BY_NAME["bctrl-gen2"]
    task = gen2.operator("succeed:1", action="{{ ti.xcom_pull(task_ids='plan') }}", metadata={"team": "growth"})
    task.action = json.dumps({"action": "observe", "instruction": "Find the buy button",
                              "metadata": {"emulate": "succeed:1"}})
    assert task.execute(ctx()) == {"emulated": True, "action": "observe", "instruction": "Find the buy button"}
    sent = emu.execution(task.execution_id)["data"]["request"]
    assert sent == {"action": "observe", "instruction": "Find the buy button",
                    "metadata": {"team": "growth", "emulate": "succeed:1"}}
    assert "idempotencyKey" not in sent  # generation 2 carries the key in the Idempotency-Key header only


def test_the_api_generation_is_a_connection_setting(emu, monkeypatch):
    gen2 = BY_NAME["bctrl-gen2"]
    eid = gen2.hook().invoke_action(RUNTIME, {"action": "act", "instruction": "Click buy"},
                                    metadata={"emulate": "forever"})
    (create,) = emu.journal(action="create", execution_id=eid)
    assert create["path"] == f"/bctrl/v1/runtimes/{RUNTIME}/invocations"
    fresh = gen2.hook()  # knows nothing of the invocation: the cancel reads it for its runtime first
    assert fresh.status_call(eid).path == f"/v1/invocations/{eid}"  # the same read in both generations
    assert fresh.cancel(eid) is CancelOutcome.REQUESTED
    assert [c["path"] for c in emu.cancels(eid)] == [CANCEL_PATH["bctrl-gen2"].format(id=eid)]
    with pytest.raises(ProviderConfigError, match=r"generation 2 .*run an action request, not steps"):
        gen2.hook().create_invocation(SPACE, RUNTIME, STEPS)
    with pytest.raises(ProviderConfigError, match=r"generation 1 .*run steps \(and a space_id\), not action"):
        BctrlHook(CONN).invoke_action(RUNTIME, {"action": "act", "instruction": "x"})
    before = len(creates(emu))
    with pytest.raises(ProviderConfigError, match=r"'bctrl_gen2_emu' speaks bctrl API generation 2"):
        op("succeed:1", conn_id=gen2.conn_id()).execute(ctx())  # steps, on a generation-2 connection
    assert len(creates(emu)) == before
    base = {"conn_type": "bctrl", "host": emu.url + "/bctrl", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_GEN9", json.dumps({**base, "extra": {"api_generation": "9"}}))
    seen = len(emu.journal(vendor="bctrl"))
    with pytest.raises(ProviderConfigError, match=r"extra 'api_generation' must be 1 .* or 2 .*got '9'"):
        BctrlHook("bctrl_gen9").cancel(eid)
    assert len(emu.journal(vendor="bctrl")) == seen


# -- both generations --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("gen", "says"), [
    (BY_NAME["bctrl"], r"\(timed_out\): invocation.timed_out: .*after 1 of 2 steps"),
    (BY_NAME["bctrl-gen2"], r"\(timed_out\): invocation.timed_out: Invocation exceeded its timeout"),
], ids=str)
def test_timed_out_is_a_failure_with_bctrls_code(emu, gen, says):
    with pytest.raises(ExecutionFailed, match=says):
        gen.operator("partial:1").execute(ctx())


@each_generation
def test_on_kill_while_polling_requests_cancel_once_without_a_body_and_the_next_read_says_cancelled(emu, gen):
    task = gen.operator("forever")
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
    assert cancel["status_code"] == 200 and cancel["body_bytes"] == 0  # neither spec declares a cancel body
    assert cancel["path"] == CANCEL_PATH[gen.name].format(id=eid)
    # bctrl's cancel is asynchronous: `cancelling` until the next read (which the dying poll loop may have made).
    assert emu.execution(eid)["state"] in ("cancelling", "cancelled")
    after = gen.hook().get_status(eid)
    assert after.state is ExecutionState.CANCELLED and "invocation.cancelled" in (after.error or "")
    record = emu.execution(eid)
    assert (record["state"], record["cancelled_by"]) == ("cancelled", "api")
    assert len(emu.cancels(eid)) == 1


@each_generation
def test_cancelling_is_not_terminal_and_cancel_outcomes(emu, gen):
    hook = gen.hook()
    eid = gen.start("forever")
    answer = cancel_answer(hook, eid)  # the emulator's real cancel answer
    assert answer.vendor_status == "cancelling" and answer.state is ExecutionState.CANCELLING
    assert not answer.state.is_terminal
    if gen.name == "bctrl":  # generation 1 also says when the cancel was requested
        assert "cancel requested at" in (answer.progress or "")
    assert hook.get_status(eid).state is ExecutionState.CANCELLED
    assert hook.cancel(eid) is CancelOutcome.ALREADY_FINISHED  # 409 invocation.not_cancellable
    assert hook.cancel("3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f") is CancelOutcome.NOT_FOUND
    assert [c["status_code"] for c in emu.cancels(eid)] == [200, 409]


@each_generation
def test_sensor_keeps_waiting_while_cancelling_then_fails_when_cancelled(emu, gen):
    hook = gen.hook()
    eid = gen.start("forever")
    sensor = BctrlInvocationSensor(task_id="s", conn_id=gen.conn_id(), execution_id=eid, poke_interval=0.05,
                                   deferrable=False)
    assert sensor.poke(ctx()) is False  # dispatching
    assert sensor._evaluate(hook, cancel_answer(hook, eid)) is False  # cancelling: the sensor keeps waiting
    with pytest.raises(AirflowFailException, match=r"ended cancelled \(cancelled\): invocation.cancelled"):
        sensor.poke(ctx())  # the next read: cancelled
    assert len(emu.cancels(eid)) == 1  # only the one this test sent: a sensor never cancels


@each_generation
async def test_a_cancel_requested_elsewhere_while_deferred_ends_as_cancelled_remotely(emu, gen):
    """Someone else asks bctrl to cancel (cancelling): the trigger reads on, and the task fails without retry."""
    trigger = defer(gen.operator("forever", deferrable=True), ctx())
    eid = trigger.execution_id
    assert gen.hook().cancel(eid) is CancelOutcome.REQUESTED  # now cancelling
    events = await drive_trigger(trigger)
    assert [(e["kind"], e["state"]) for e in events] == [("terminal", "cancelled")]
    with pytest.raises(ExecutionCancelledRemotely, match=r"invocation\.cancelled"):
        gen.operator("forever", deferrable=True).execute_complete(ctx(), events[0])
    assert len(emu.cancels(eid)) == 1


@each_generation
def test_a_task_that_never_saw_the_invocation_cancels_it_on_its_own_path(emu, gen):
    """The defer-timeout backstop resumes a new operator with only the recorded id (K8): generation 2's cancel
    needs the invocation's runtime, which that operator learns by reading the invocation first."""
    context = ctx()
    trigger = defer(gen.operator("forever", deferrable=True), context)
    resumed = gen.operator("forever", deferrable=True, task_id=context["ti"].task_id)
    with pytest.raises(TaskDeferralError):
        resumed.resume_execution("__fail__", {"error": "Trigger failure"}, context)
    assert [c["path"] for c in emu.cancels(trigger.execution_id)] == [
        CANCEL_PATH[gen.name].format(id=trigger.execution_id)]


@each_generation
def test_the_clean_up_operator_cancels_by_id_on_each_generations_path(emu, gen):
    from airflow_provider_cancel.cancel import CancelExecutionOperator

    live = gen.start("forever")
    task = CancelExecutionOperator(task_id="cleanup", conn_id=gen.conn_id(), execution_ids=[live], poll_interval=0.05)
    assert task.execute(ctx()) == {live: "cancelled"}
    assert [(c["path"], c["body_bytes"]) for c in emu.cancels(live)] == [(CANCEL_PATH[gen.name].format(id=live), 0)]


@each_generation
def test_a_create_slower_than_the_read_timeout_is_retried_and_starts_one_invocation(emu, gen, monkeypatch):
    conn = {"conn_type": "bctrl", "host": emu.url + "/bctrl", "password": API_KEY,
            "extra": {**gen.extra, "timeout": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_BCTRL_SLOW", json.dumps(conn))
    emu.add_fault(vendor="bctrl", action="create", kind="slow", delay=3, count=1)
    task = gen.operator("succeed:1", conn_id="bctrl_slow")
    context = ctx()
    key = task.idempotency_key(context)
    before = len(creates(emu))
    gen.check_success(task.execute(context))
    # Let the slow first request finish too: the emulator answers it with the same invocation.

    def settled() -> list[dict] | None:
        attempts = creates(emu)[before:]
        return attempts if len(attempts) >= 2 and all(e["status_code"] for e in attempts) else None

    attempts = wait_for(settled, timeout=20)
    assert len(attempts) >= 2 and [e["fault"] for e in attempts].count("slow") == 1
    assert {e["execution_id"] for e in attempts} == {task.execution_id}
    same_key = [x for x in emu.executions(vendor="bctrl") if x["idempotency_key"] == key]
    assert [x["id"] for x in same_key] == [task.execution_id]
    if gen.name == "bctrl":  # generation 1 also carries the key in the body
        assert same_key[0]["data"]["request"]["idempotencyKey"] == key


@each_generation
def test_unknown_runtime_is_a_clear_404_with_bctrls_code_hint_and_request_id(emu, gen):
    before = len(creates(emu))
    with pytest.raises(ExecutionApiError) as err:
        gen.operator(runtime_id=MISSING_ID).execute(ctx())
    assert err.value.status_code == 404 and err.value.code == "runtime.not_found"
    assert "Runtime not found; hint: Check the space and runtime ids" in str(err.value)
    assert err.value.request_id and err.value.request_id.startswith("req_")
    assert len(creates(emu)) == before + 1  # not retried


@each_generation
def test_a_busy_runtime_is_not_retried(emu, gen: Case):
    before = len(creates(emu))
    with pytest.raises(ExecutionApiError, match=r"HTTP 409 runtime\.controller_busy"):
        gen.operator(runtime_id=BUSY_RUNTIME_ID).execute(ctx())
    assert len(creates(emu)) == before + 1
