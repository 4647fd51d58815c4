"""The Meibel operator, sensor, hook and trigger over real HTTP against the emulator: every lifecycle path,
plus Meibel's own: undocumented status words and end_time, per-item errors, async cancel, trailing slashes.

A few narrow checks of what the emulator deliberately does not produce (other status words, the older error
shapes, a redirect) use respx against a mocked https host instead."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionFailed,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome
from airflow_provider_cancel.core.http import ApiCall
from airflow_provider_cancel.core.operator import XCOM_EXECUTION_URL
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.meibel import (
    MeibelConsoleLink,
    MeibelHook,
    MeibelRunBatchOperator,
)
from tests.airflow_compat import airflow_timeout

from .conftest import API_KEY, make_context
from .vendor_ops import meibel_spec

CONN = "meibel_emu"
S = ExecutionState


def spec(marker: str = "succeed:2", **overrides) -> dict:
    return meibel_spec(marker, **overrides)


def op(marker: str = "succeed:2", **kw) -> MeibelRunBatchOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    if "batch_definition_id" not in kw:
        kw.setdefault("batch_spec", spec(marker))
    return MeibelRunBatchOperator(task_id=kw.pop("task_id", "batch"), conn_id=CONN, **kw)


def creates(emu) -> int:
    return len(emu.journal(vendor="meibel", action="create"))


def start(marker: str) -> str:
    return MeibelHook(CONN).create_batch_execution(spec(marker))


def definition(emulator, marker: str) -> str:
    """A batch definition created the way a Meibel user does (POST /batch-definitions)."""
    body = {"name": "nightly-invoices", "agent_id": "agent-7d1c", "input_datasource_id": "ds-invoices",
            "description": f"emulate:{marker}"}
    response = httpx.post(f"{emulator.base_url('meibel')}/batch-definitions", json=body,
                          headers={"Meibel-API-Key": API_KEY})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


# -- sync lifecycle ---------------------------------------------------------------------------------------
def test_success_returns_the_item_summary_and_the_console_link(emu, capsys):
    task = op("succeed:3,rows=7")
    ctx = make_context()
    capsys.readouterr()
    result = task.execute(ctx)
    eid = result["execution_id"]
    assert {k: result[k] for k in ("status", "total_items", "succeeded", "failed", "items_truncated")} == {
        "status": "completed", "total_items": 7, "succeeded": 7, "failed": 0, "items_truncated": False}
    assert result["output_datasource_id"] and len(result["items"]) == 7
    assert {i["status"] for i in result["items"]} == {"completed"}
    assert result["items"][0]["filename"] == "document-0001.pdf" and result["items"][0]["output_artifacts"]
    assert ctx["ti"].xcoms[XCOM_EXECUTION_URL] == "https://console.meibel.ai"  # no per-execution page exists
    assert ctx["ti"].xcoms[MeibelConsoleLink().xcom_key] == "https://console.meibel.ai"
    # The legacy create carried the spec as batch_spec_json, on the no-slash path.
    (create,) = emu.journal(vendor="meibel", action="create", execution_id=eid)
    assert (create["method"], create["path"]) == ("POST", "/meibel/batch-executions")
    assert emu.execution(eid)["data"]["batch_spec_json"]["execution"] == {"concurrency": 4, "retry_limit": 1}
    lines = [line for line in capsys.readouterr().out.splitlines() if f"Meibel execution {eid}" in line]
    assert any("running (running), 0/7 items done" in line for line in lines), lines
    assert any("succeeded (completed), 7/7 items done" in line for line in lines), lines


def test_progress_reads_succeeded_failed_and_total(emu):
    hook = MeibelHook(CONN)
    eid = start("forever,rows=123")
    first = hook.get_status(eid)
    assert (first.state, first.vendor_status, first.progress) == (S.QUEUED, "pending", None)
    running = hook.get_status(eid)
    assert running.state is S.RUNNING and running.progress and running.progress.endswith("/123 items done")
    hook.cancel(eid)
    done = hook.parse_status("x", {"id": "x", "status": "completed_with_errors", "total_items": 123,
                                   "succeeded": 120, "failed": 3}, ApiCall("GET", "/", "status"))
    assert done.progress == "120/123 items done, 3 failed" and done.state is S.SUCCEEDED


def test_a_batch_definition_runs_by_id(emu, emulator):
    definition_id = definition(emulator, "succeed:2,rows=4")
    result = op(batch_definition_id=definition_id).execute(make_context())
    assert (result["status"], result["total_items"]) == ("completed", 4)
    (create,) = emu.journal(vendor="meibel", action="create", execution_id=result["execution_id"])
    assert create["path"] == f"/meibel/batch-definitions/id/{definition_id}/execute"
    assert emu.execution(result["execution_id"])["data"]["batch_definition_id"] == definition_id


def test_a_missing_batch_definition_is_a_clear_404(emu):
    with pytest.raises(ExecutionApiError, match=r"HTTP 404.*not found") as err:
        op(batch_definition_id="00000000-0000-0000-0000-000000000404").execute(make_context())
    assert err.value.status_code == 404


def test_a_failure_lists_the_failed_items(emu):
    with pytest.raises(ExecutionFailed) as err:
        op("fail:2,rows=10").execute(make_context())
    text = str(err.value)
    assert "2 of 10 items failed: document-0004.pdf: Agent run failed" in text and "document-0008.pdf" in text


def test_many_failed_items_are_summarised_not_listed(emu):
    task = op("fail:0,rows=40")
    with pytest.raises(ExecutionFailed) as err:
        task.execute(make_context())
    text = str(err.value)
    assert "10 of 40 items failed" in text and "; and 7 more" in text
    assert text.count("Agent run failed") == 3


# -- Meibel specifics ------------------------------------------------------------------------------------
def test_success_with_failed_items_returns_them_unless_fail_on_item_errors(emu):
    result = op("partial:1,rows=8").execute(make_context())
    assert (result["status"], result["succeeded"], result["failed"]) == ("completed_with_errors", 6, 2)
    failed = [i for i in result["items"] if i["status"] == "failed"]
    assert [i["filename"] for i in failed] == ["document-0004.pdf", "document-0008.pdf"] and failed[0]["error"]
    strict = op("partial:1,rows=8", fail_on_item_errors=True)
    with pytest.raises(ExecutionFailed) as err:
        strict.execute(make_context())
    text = str(err.value)
    assert "completed_with_errors" in text and "fail_on_item_errors=True" in text
    assert "2 of 8 items failed: document-0004.pdf: Agent run failed" in text
    assert emu.cancels(strict.execution_id) == []  # it had ended: nothing to cancel


def test_fail_on_item_errors_lets_a_clean_success_through(emu):
    result = op("succeed:1,rows=3", fail_on_item_errors=True).execute(make_context())
    assert result["failed"] == 0


def test_max_items_caps_the_items_returned(emu):
    result = op("succeed:0,rows=12", max_items=5).execute(make_context())
    assert result["total_items"] == 12 and len(result["items"]) == 5 and result["items_truncated"] is True
    everything = op("succeed:0,rows=12", max_items=None).execute(make_context())
    assert len(everything["items"]) == 12 and everything["items_truncated"] is False


def test_async_cancel_is_observed_one_cancel_then_cancelled_on_a_later_read(emu):
    hook = MeibelHook(CONN)
    eid = start("forever")
    assert hook.get_status(eid).state is S.QUEUED
    assert hook.cancel(eid) is CancelOutcome.REQUESTED
    assert emu.execution(eid)["state"] == "cancelling"  # accepted, not effective yet
    later = wait_for(lambda: (s := hook.get_status(eid)).state.is_terminal and s, timeout=10)
    assert later.state is S.CANCELLED and later.payload["end_time"]
    assert len(emu.cancels(eid)) == 1
    # A second cancel of the now-ended execution: 409, read as "already finished", never raised.
    assert hook.cancel(eid) is CancelOutcome.ALREADY_FINISHED
    assert [c["status_code"] for c in emu.cancels(eid)] == [200, 409]


def test_cancel_of_finished_and_unknown_executions(emu):
    hook = MeibelHook(CONN)
    done = start("succeed:0")
    wait_for(lambda: hook.get_status(done).state.is_terminal, timeout=10)
    assert hook.cancel(done) is CancelOutcome.ALREADY_FINISHED
    assert emu.execution(done)["state"] == "succeeded"
    assert hook.cancel("3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10") is CancelOutcome.NOT_FOUND


def test_trailing_slash_paths_are_served_and_the_hook_uses_the_bare_form(emu, emulator):
    eid = start("succeed:5")
    MeibelHook(CONN).get_status(eid)
    statuses = emu.journal(vendor="meibel", action="status", execution_id=eid)
    assert [e["path"] for e in statuses] == [f"/meibel/batch-executions/id/{eid}"]
    with httpx.Client(base_url=emulator.base_url("meibel"), headers={"Meibel-API-Key": API_KEY},
                      follow_redirects=False) as raw:
        bare, slashed = raw.get(f"/batch-executions/id/{eid}"), raw.get(f"/batch-executions/id/{eid}/")
    assert bare.status_code == slashed.status_code == 200
    assert bare.json()["id"] == slashed.json()["id"] == eid
    MeibelHook(CONN).cancel(eid)


# -- bad input: clear errors before any request ------------------------------------------------------------
def test_bad_arguments_fail_before_any_request(emu):
    before = creates(emu)
    with pytest.raises(ProviderConfigError, match="exactly one of batch_definition_id or batch_spec"):
        MeibelRunBatchOperator(task_id="x", conn_id=CONN)
    with pytest.raises(ProviderConfigError, match="exactly one of batch_definition_id or batch_spec"):
        MeibelRunBatchOperator(task_id="x", conn_id=CONN, batch_definition_id="abc", batch_spec=spec())
    for bad_id in ("../etc", "a/b", "a b", "", "x" * 500):
        with pytest.raises(ProviderConfigError, match="batch_definition_id must be"):
            MeibelRunBatchOperator(task_id="x", conn_id=CONN, batch_definition_id=bad_id)
    with pytest.raises(ProviderConfigError, match=r"batch_spec is invalid \(agent: Field required\)"):
        MeibelRunBatchOperator(task_id="x", conn_id=CONN, batch_spec={k: v for k, v in spec().items() if k != "agent"})
    with pytest.raises(ProviderConfigError, match=r"input.datasource_id: String should have at least 1"):
        MeibelRunBatchOperator(task_id="x", conn_id=CONN, batch_spec=spec(input={"datasource_id": "  "}))
    with pytest.raises(ProviderConfigError, match=r"execution.concurrency: Input should be less than or equal"):
        MeibelRunBatchOperator(task_id="x", conn_id=CONN, batch_spec=spec(execution={"concurrency": 5000}))
    with pytest.raises(ProviderConfigError, match="max_items"):
        op(max_items=-1)
    with pytest.raises(ProviderConfigError, match="fail_on_item_errors"):
        op(fail_on_item_errors="yes")
    # Templated arguments are checked once rendered, at the start of execute: still before any request.
    templated = op(batch_definition_id="{{ params.definition }}")
    templated.batch_definition_id = "not/an/id"  # what rendering produced
    with pytest.raises(ProviderConfigError, match="batch_definition_id must be"):
        templated.execute(make_context())
    templated_spec = op(batch_spec=spec(input={"datasource_id": "{{ params.ds }}"}))
    templated_spec.batch_spec = spec(input={})
    with pytest.raises(ProviderConfigError, match=r"input.datasource_id: Field required"):
        templated_spec.execute(make_context())
    unrendered_string = op(batch_spec="{{ ti.xcom_pull('build_spec') }}")
    unrendered_string.batch_spec = "{'name': 'x'}"  # rendered without render_template_as_native_obj
    with pytest.raises(ProviderConfigError, match="render_template_as_native_obj"):
        unrendered_string.execute(make_context())
    assert creates(emu) == before


def test_temporal_style_ids_are_accepted(emu):
    for good in ("3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10", "batch_run-2024_01", "ABC123"):
        assert MeibelHook(CONN).validate_execution_id(good) == good


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


# -- retry after a hard worker crash (the id was recorded before polling) ----------------------------------


# -- sensor --------------------------------------------------------------------------------------------------


# -- what the emulator does not produce: respx on a mocked host ---------------------------------------------
MOCK = "https://api.meibel.test/v2"
EID = "3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10"


@pytest.fixture
def mocked(monkeypatch):
    conn = {"conn_type": "meibel", "host": MOCK, "password": "sk-mock-key"}
    monkeypatch.setenv("AIRFLOW_CONN_MEIBEL_MOCK", json.dumps(conn))
    with respx.mock(base_url=MOCK, assert_all_called=False) as router:
        router.post("/batch-executions").respond(200, json={"id": EID, "status": "pending"})
        yield router


def execution(word: str, **fields) -> dict:
    return {"id": EID, "batch_definition_id": "def-1", "customer_id": "c", "project_id": "p",
            "start_time": "2026-01-01T00:00:00Z", "status": word, **fields}


def mock_op(**kw) -> MeibelRunBatchOperator:
    return MeibelRunBatchOperator(task_id="m", conn_id="meibel_mock", batch_spec=spec(), poll_interval=0.01,
                                  max_poll_interval=0.02, deferrable=False, **kw)


@pytest.mark.parametrize(("word", "state"), [
    ("pending", S.QUEUED), ("QUEUED", S.QUEUED), ("created", S.QUEUED), ("submitted", S.QUEUED),
    ("running", S.RUNNING), ("In_Progress", S.RUNNING), ("cancelling", S.CANCELLING), ("canceling", S.CANCELLING),
    ("completed", S.SUCCEEDED), ("succeeded", S.SUCCEEDED), ("success", S.SUCCEEDED),
    ("completed_with_errors", S.SUCCEEDED), ("partial", S.SUCCEEDED), ("partially_completed", S.SUCCEEDED),
    ("failed", S.FAILED), ("ERROR", S.FAILED), ("terminated", S.FAILED), ("timed_out", S.FAILED),
    ("cancelled", S.CANCELLED), ("canceled", S.CANCELLED), ("CANCELED", S.CANCELLED),
    ("continued_as_new", S.UNKNOWN), ("archived", S.UNKNOWN), ("", S.UNKNOWN),
])
def test_status_words(word, state):
    status = MeibelHook("unused").parse_status(EID, execution(word), ApiCall("GET", "/x", "status"))
    assert status.state is state and status.vendor_status == word


def test_an_unknown_word_with_end_time_fails_safe(mocked):
    mocked.get(f"/batch-executions/id/{EID}").respond(
        200, json=execution("archived", end_time="2026-01-01T00:05:00Z", total_items=3, succeeded=3, failed=0))
    cancel = mocked.post(f"/batch-executions/id/{EID}/cancel").respond(200, json=execution("cancelling"))
    with pytest.raises(ExecutionFailed) as err, airflow_timeout(10):  # a bug would poll forever: fail instead
        mock_op().execute(make_context())
    assert "'archived'" in str(err.value) and "not treating it as a success" in str(err.value)
    assert not cancel.called  # it has ended: nothing to cancel


def test_an_unknown_word_without_end_time_keeps_polling_until_the_word_changes(mocked):
    words = ["running", "paused", "paused", "paused", "completed"]
    status = mocked.get(f"/batch-executions/id/{EID}")
    status.side_effect = [
        httpx.Response(200, json=execution(w, end_time="2026-01-01T00:05:00Z" if w == "completed" else None))
        for w in words
    ]
    result = mock_op().execute(make_context())
    assert result["status"] == "completed" and status.call_count == len(words)
    status.side_effect = None
    status.respond(200, json=execution("paused"))
    assert MeibelHook("meibel_mock").get_status(EID).state is S.UNKNOWN


@pytest.mark.parametrize(("status_code", "body", "message", "code", "request_id"), [
    (422, {"message": "Validation error", "detail": [{"loc": ["body", "batch_spec_json", "agent"],
                                                      "msg": "Field required", "type": "missing"}]},
     "Validation error (batch_spec_json.agent: Field required)", None, None),
    (404, {"code": "not_found", "message": "The requested resource was not found"},
     "The requested resource was not found", "not_found", None),
    (400, {"error": {"message": "Invalid batch spec", "type": "invalid_request_error", "code": "invalid_spec",
                     "param": "agent", "request_id": "req_7f3a"}}, "Invalid batch spec", "invalid_spec", "req_7f3a"),
    (404, {"detail": "Batch execution not found"}, "Batch execution not found", None, None),
])
def test_all_three_published_error_shapes_are_read(mocked, status_code, body, message, code, request_id):
    mocked.get(f"/batch-executions/id/{EID}").respond(status_code, json=body)
    with pytest.raises(ExecutionApiError) as err:
        MeibelHook("meibel_mock").get_status(EID)
    assert (err.value.status_code, err.value.message, err.value.code, err.value.request_id) == (
        status_code, message, code, request_id)
    assert "sk-mock-key" not in str(err.value)


def test_429_with_retry_after_and_rate_limit_headers(mocked):
    limited = {"Retry-After": "0", "X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": "1767225600"}
    status = mocked.get(f"/batch-executions/id/{EID}")
    status.side_effect = [
        httpx.Response(429, json={"message": "Rate limit exceeded. Please retry after 0 seconds."}, headers=limited),
        httpx.Response(200, json=execution("running"), headers={**limited, "X-RateLimit-Remaining": "59"}),
    ]
    read = MeibelHook("meibel_mock").get_status(EID)
    assert read.state is S.RUNNING and status.call_count == 2
    assert read.rate_limit.remaining == 59


def test_a_redirect_is_refused_not_followed(mocked):
    status = mocked.get(f"/batch-executions/id/{EID}").respond(
        307, headers={"Location": f"{MOCK}/batch-executions/id/{EID}/"})
    with pytest.raises(ExecutionApiError, match="unexpected redirect"):
        MeibelHook("meibel_mock").get_status(EID)
    assert status.call_count == 1


@pytest.mark.parametrize(("status_code", "body", "outcome"), [
    (200, execution("cancelling"), CancelOutcome.REQUESTED),
    (200, execution("running"), CancelOutcome.REQUESTED),  # accepted; Temporal has not acted yet
    (200, execution("completed", end_time="2026-01-01T00:05:00Z"), CancelOutcome.ALREADY_FINISHED),
    (200, execution("failed"), CancelOutcome.ALREADY_FINISHED),
    (409, {"detail": "Batch execution has already ended"}, CancelOutcome.ALREADY_FINISHED),
    (400, {"message": "Execution is already completed and cannot be cancelled"}, CancelOutcome.ALREADY_FINISHED),
    (404, {"detail": "Batch execution not found"}, CancelOutcome.NOT_FOUND),
])
def test_cancel_answers_in_every_documented_or_inferred_form(mocked, status_code, body, outcome):
    mocked.post(f"/batch-executions/id/{EID}/cancel").respond(status_code, json=body)
    assert MeibelHook("meibel_mock").cancel(EID) is outcome


def test_a_cancel_refused_for_another_reason_is_an_error(mocked):
    mocked.post(f"/batch-executions/id/{EID}/cancel").respond(400, json={"message": "Malformed request"})
    with pytest.raises(ExecutionApiError, match="Malformed request"):
        MeibelHook("meibel_mock").cancel(EID)
