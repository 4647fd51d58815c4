"""The izieroma (ROMA API) operator, sensor, hook and trigger over real HTTP against the emulator: every
lifecycle path, the idempotent create, and the upstream ROMA server's shapes (mocked with respx)."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
import respx

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome
from airflow_provider_cancel.core.http import ApiCall, ClientTimeouts, RetryPolicy
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.izieroma import (
    IzieromaHook,
    IzieromaRunOperator,
    percent,
)

from .conftest import API_KEY, FakeStore, FakeTI, make_context

CONN = "izieroma_emu"
VENDOR = "izieroma"


def op(goal: str = "Summarise the week's news emulate:succeed:2", **kw) -> IzieromaRunOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    kw.setdefault("conn_id", CONN)
    return IzieromaRunOperator(task_id=kw.pop("task_id", "roma"), goal=goal, **kw)


def fresh_context(store: FakeStore | None = None) -> dict:
    """A context of its own task instance: the idempotency key (dag/run/task/try) is unique per test, as it
    is per task try in Airflow, so the session's emulator never replays another test's execution."""
    return make_context(FakeTI(task_id=f"t-{uuid.uuid4().hex[:12]}"), store)


def creates(emu) -> list[dict]:
    return emu.journal(vendor=VENDOR, action="create")


def start(hook: IzieromaHook, goal: str) -> str:
    return hook.create_execution(goal, idempotency_key=f"test-{uuid.uuid4().hex}")


# -- sync lifecycle ---------------------------------------------------------------------------------------
def test_success_returns_romas_answer_and_run_facts_and_the_create_carries_its_key(emu):
    task = op("Find three facts about Mars emulate:succeed:3", max_depth=2, config_profile="fast",
              metadata={"team": "data"})
    ctx = fresh_context()
    result = task.execute(ctx)
    eid = result["execution_id"]
    assert re.fullmatch(r"exec_[a-z0-9]{16}", eid)
    assert result["status"] == "completed"
    assert result["result"] == "Emulated ROMA answer to: Find three facts about Mars emulate:succeed:3"
    assert result["metadata"]["tokens_used"] > 0 and result["metadata"]["user_metadata"] == {"team": "data"}
    assert result["completed_at"]
    assert len(emu.journal(action="status", execution_id=eid)) >= 4  # pending, running x2, completed
    record = emu.execution(eid)
    assert record["data"]["max_depth"] == 2 and record["data"]["config_profile"] == "fast"
    ti = ctx["ti"]
    assert record["idempotency_key"] == f"airflow:d:manual__1:{ti.task_id}:try1"


def test_the_progress_line_shows_percent_and_current_step(emu, capsys):
    hook = IzieromaHook(CONN)
    eid = start(hook, "Plan a trip emulate:forever")
    first = hook.get_status(eid)
    assert (first.state, first.progress) == (ExecutionState.QUEUED, "0%, Queued")
    later = [hook.get_status(eid) for _ in range(6)][-1]
    assert later.state is ExecutionState.RUNNING
    match = re.fullmatch(r"(\d{1,2})%, (.+)", later.progress or "")
    assert match and 0 < int(match[1]) < 100, later.progress
    assert match[2] in ("Planning: decomposing the goal into subtasks", "Executing subtasks with agents",
                        "Aggregating subtask results")
    assert later.describe().startswith(f"running (running), {match[1]}%, ")
    hook.cancel(eid)
    # ... and the operator's own log (structlog, on stdout) shows it while it waits.
    capsys.readouterr()
    op("Plan a trip emulate:succeed:3").execute(fresh_context())
    lines = [line for line in capsys.readouterr().out.splitlines() if "ROMA execution" in line]
    assert any(re.search(r"running \(running\), \d+%, (Planning|Executing|Aggregating)", line) for line in lines), lines
    assert any("succeeded (completed), 100%" in line for line in lines), lines


def test_rate_limit_headers_are_read(emu):
    emu.set_rate_limit(VENDOR, "1000/day")
    try:
        hook = IzieromaHook(CONN)
        eid = start(hook, "Anything emulate:forever")
        first = hook.get_status(eid).rate_limit
        second = hook.get_status(eid).rate_limit
        assert first.remaining is not None and second.remaining == first.remaining - 1
        assert second.reset_at is not None
        hook.cancel(eid)
    finally:
        emu.set_rate_limit(VENDOR, None)


# -- start exactly once: the idempotency key ---------------------------------------------------------------
def test_a_create_that_times_out_is_retried_with_the_same_key_and_starts_one_execution(emu):
    hook = IzieromaHook(CONN, timeouts=ClientTimeouts(connect=2, read=0.5),
                        retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=0.2))
    key = f"idem-{uuid.uuid4().hex}"
    emu.add_fault(vendor=VENDOR, action="create", kind="slow", delay=2.0)  # longer than the read timeout
    eid = hook.create_execution("Slow create emulate:succeed:1", idempotency_key=key)
    # The timed-out first attempt is still being answered by the server: wait until both are done.
    wait_for(lambda: [e["status_code"] for e in emu.journal(action="create", execution_id=eid)] == [202, 202], 20)
    (first, retry) = emu.journal(action="create", execution_id=eid)
    assert first["fault"] == "slow" and retry["fault"] is None
    mine = [ex for ex in emu.executions(vendor=VENDOR) if ex["idempotency_key"] == key]
    assert [ex["id"] for ex in mine] == [eid]


def test_operator_create_timeout_is_retried_and_the_task_runs_one_execution(emu, emulator, monkeypatch):
    conn = {"conn_type": VENDOR, "host": emulator.base_url(VENDOR), "password": API_KEY, "extra": {"timeout": 0.5}}
    monkeypatch.setenv("AIRFLOW_CONN_IZIEROMA_SHORT_TIMEOUT", json.dumps(conn))
    emu.add_fault(vendor=VENDOR, action="create", kind="slow", delay=3.0)
    ctx = fresh_context()
    result = op("Slow create emulate:succeed:1", conn_id="izieroma_short_timeout").execute(ctx)
    eid = result["execution_id"]
    assert result["status"] == "completed"
    wait_for(lambda: [e["status_code"] for e in emu.journal(action="create", execution_id=eid)] == [202, 202], 20)
    key = f"airflow:d:manual__1:{ctx['ti'].task_id}:try1"
    assert [ex["id"] for ex in emu.executions(vendor=VENDOR) if ex["idempotency_key"] == key] == [eid]


def test_without_a_key_a_create_is_not_retried_after_an_ambiguous_failure(emu):
    hook = IzieromaHook(CONN, retry=RetryPolicy(max_attempts=3, initial_backoff=0.1))
    before = len(creates(emu))
    emu.add_fault(vendor=VENDOR, action="create", kind="502", count=1)
    with pytest.raises(ExecutionApiError, match="HTTP 502"):
        hook.create_execution("No key emulate:succeed")
    assert len(creates(emu)) == before + 1


# -- bad input: clear errors naming the field, before any request -------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"goal": ""}, "goal must be a non-blank string"),
        ({"goal": "   \n"}, "goal must be a non-blank string"),
        ({"goal": "x" * 10_001}, "goal must be at most 10,000 characters"),
        ({"goal": 42}, "goal must be a non-blank string"),
        ({"max_depth": 0}, "max_depth must be an integer from 1 to 10"),
        ({"max_depth": 11}, "max_depth must be an integer from 1 to 10"),
        ({"max_depth": True}, "max_depth must be an integer from 1 to 10"),
        ({"config_profile": "turbo"}, "config_profile must be one of general, high_quality, fast, crypto_agent"),
        ({"config_overrides": {"top_p": 0.9}}, "config_overrides key 'top_p' is not allowed"),
        ({"config_overrides": {"max_tokens": -1}}, r"config_overrides\['max_tokens'\] must be a positive integer"),
        ({"config_overrides": {"temperature": "hot"}}, r"config_overrides\['temperature'\] must be a non-negative"),
        ({"config_overrides": ["model"]}, "config_overrides must be a mapping"),
        ({"metadata": {f"k{i}": "v" for i in range(11)}}, "metadata may hold at most 10 pairs"),
        ({"metadata": {"k" * 51: "v"}}, "metadata key 'kkkk.* must be a string of 1-50 characters"),
        ({"metadata": {"k": "v" * 501}}, r"metadata\['k'\] must be a string of 1-500 characters"),
        ({"metadata": {"k": 3}}, r"metadata\['k'\] must be a string of 1-500 characters"),
    ],
)
def test_bad_arguments_are_refused_at_dag_parse_naming_the_field(emu, kwargs, field):
    before = len(creates(emu))
    args = {"goal": "ok", **kwargs}
    with pytest.raises(ProviderConfigError, match=f"^bad: {field}"):
        IzieromaRunOperator(task_id="bad", conn_id=CONN, **args)
    assert len(creates(emu)) == before


@pytest.mark.parametrize(
    ("kwargs", "params", "field"),
    [
        ({"goal": "{{ params.goal }}"}, {"goal": "  "}, "goal must be a non-blank string"),
        ({"max_depth": "{{ params.depth }}"}, {"depth": "12"}, "max_depth must be an integer from 1 to 10"),
        ({"config_profile": "{{ params.profile }}"}, {"profile": "turbo"}, "config_profile must be one of"),
        ({"config_overrides": {"temperature": "{{ params.t }}"}}, {"t": "warm"},
         r"config_overrides\['temperature'\]"),
        ({"metadata": {"who": "{{ params.who }}"}}, {"who": ""}, r"metadata\['who'\] must be a string"),
        ({"config_overrides": "{{ params.o }}"}, {"o": "not json"}, "config_overrides must be a mapping"),
    ],
)
def test_bad_templated_arguments_are_refused_before_any_request(emu, kwargs, params, field):
    args = {"goal": "ok", **kwargs}
    task = op(**args, task_id="bad")  # templates are not checked at parse time ...
    task.render_template_fields({"params": params})
    before = len(creates(emu))
    with pytest.raises(ProviderConfigError, match=f"^bad: {field}"):  # ... but once rendered, before the create
        task.execute(fresh_context())
    assert len(creates(emu)) == before


def test_rendered_templates_are_coerced_and_sent(emu):
    task = op("{{ params.goal }}", max_depth="{{ params.depth }}", config_profile="{{ params.profile }}",
              config_overrides={"temperature": "{{ params.t }}", "max_tokens": "{{ params.n }}", "model": "gpt"},
              metadata='{"source": "{{ params.who }}"}')
    task.render_template_fields({"params": {"goal": "Templated goal emulate:succeed:1", "depth": "4",
                                            "profile": "high_quality", "t": "0.2", "n": "512", "who": "airflow"}})
    eid = task.execute(fresh_context())["execution_id"]
    data = emu.execution(eid)["data"]
    assert (data["goal"], data["max_depth"], data["config_profile"]) == ("Templated goal emulate:succeed:1", 4,
                                                                         "high_quality")
    assert data["config_overrides"] == {"temperature": 0.2, "max_tokens": 512, "model": "gpt"}
    assert data["metadata"] == {"source": "airflow"}


def test_uuid_and_twelve_character_ids_are_accepted(emu):
    hook = IzieromaHook(CONN)
    for eid in (str(uuid.uuid4()), "exec_1a2b3c4d5e6f"):
        with pytest.raises(ExecutionApiError) as err:  # sent, and the emulator does not know it
            hook.get_status(eid)
        assert err.value.status_code == 404 and err.value.code == "not_found"
        assert hook.cancel(eid) is CancelOutcome.NOT_FOUND


def test_cancel_after_completion_is_already_finished_not_an_error(emu):
    hook = IzieromaHook(CONN)
    eid = start(hook, "Done soon emulate:succeed:0")
    assert hook.get_status(eid).state is ExecutionState.SUCCEEDED
    assert hook.cancel(eid) is CancelOutcome.ALREADY_FINISHED
    (cancel,) = emu.cancels(eid)
    assert cancel["status_code"] == 400  # the emulator answered 400 invalid_operation
    assert emu.execution(eid)["state"] == "succeeded"
    running = start(hook, "Still going emulate:forever")
    assert hook.cancel(running) is CancelOutcome.REQUESTED
    assert hook.cancel(running) is CancelOutcome.ALREADY_FINISHED  # cancelled is finished too


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


# -- retry after a hard worker crash -------------------------------------------------------------------------


# -- sensor --------------------------------------------------------------------------------------------------


# -- the upstream ROMA server's shapes (CONTRACTS.md "Divergences"), mocked with respx -------------------------
UPSTREAM = "https://roma.upstream.test"


@pytest.fixture
def upstream(monkeypatch):
    conn = {"conn_type": VENDOR, "host": UPSTREAM, "password": "sk-upstream"}
    monkeypatch.setenv("AIRFLOW_CONN_IZIEROMA_UPSTREAM", json.dumps(conn))
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


def test_upstream_run_uuid_ids_float_progress_and_final_result_from_details(upstream):
    eid = str(uuid.uuid4())
    create = upstream.post("/api/v1/executions").respond(202, json={
        "execution_id": eid, "status": "pending", "initial_goal": "g", "max_depth": 2, "profile": "default",
        "experiment_name": "x", "total_tasks": 0, "completed_tasks": 0, "failed_tasks": 0, "metadata": {}})
    polls = [
        {"execution_id": eid, "status": "running", "progress": 0.25, "current_task_id": "t1",
         "current_task_goal": "Search the web", "completed_tasks": 1, "total_tasks": 4, "last_updated": "now"},
        {"execution_id": eid, "status": "completed", "progress": 1.0, "completed_tasks": 4, "total_tasks": 4,
         "last_updated": "now"},
    ]
    upstream.get(f"/api/v1/executions/{eid}/status").mock(side_effect=[httpx.Response(200, json=p) for p in polls])
    details = upstream.get(f"/api/v1/executions/{eid}").respond(200, json={
        "execution_id": eid, "status": "completed", "final_result": {"answer": 42}, "metadata": {"cost": 0.1}})
    ctx = fresh_context()
    result = op("g", conn_id="izieroma_upstream").execute(ctx)
    assert result == {"execution_id": eid, "status": "completed", "result": {"answer": 42},
                      "metadata": {"cost": 0.1}, "completed_at": None}
    sent = create.calls.last.request
    assert sent.headers["X-API-Key"] == "sk-upstream"
    assert sent.headers["X-Idempotency-Key"] == f"airflow:d:manual__1:{ctx['ti'].task_id}:try1"
    assert json.loads(sent.content) == {"goal": "g"}  # unset fields are left to the server's defaults
    assert details.call_count == 1


def test_upstream_status_and_error_shapes_are_read(upstream):
    hook = IzieromaHook("izieroma_upstream")
    call = ApiCall("GET", "/x", "status")
    eid = str(uuid.uuid4())
    running = hook.parse_status(eid, {"status": "running", "progress": 0.456, "current_task_goal": "Search",
                                      "completed_tasks": 2, "total_tasks": 5}, call)
    assert running.progress == "46%, Search, 2/5 tasks"
    assert hook.parse_status(eid, {"status": "Canceled"}, call).state is ExecutionState.CANCELLED
    assert hook.parse_status(eid, {"status": "pending", "progress": 0.0}, call).state is ExecutionState.QUEUED
    odd = hook.parse_status(eid, {"status": "paused"}, call)
    assert odd.state is ExecutionState.UNKNOWN  # never success
    failed = hook.parse_status(eid, {"status": "failed", "error": "LLM quota exhausted"}, call)
    assert (failed.state, failed.error) == (ExecutionState.FAILED, "LLM quota exhausted")
    assert [percent(p) for p in (45, 0.45, 1.0, 1, 0, 100, 250, -3, "50", None, True, float("nan"))] == [
        45, 45, 100, 1, 0, 100, 100, 0, 50, None, None, None]
    upstream.post(f"/api/v1/executions/{eid}/cancel").respond(
        400, json={"detail": f"Execution {eid} is not running (cannot cancel)"})
    assert hook.cancel(eid) is CancelOutcome.ALREADY_FINISHED
    gone = str(uuid.uuid4())
    upstream.post(f"/api/v1/executions/{gone}/cancel").respond(404, json={"detail": f"Execution {gone} not found"})
    assert hook.cancel(gone) is CancelOutcome.NOT_FOUND
    other = str(uuid.uuid4())
    upstream.get(f"/api/v1/executions/{other}/status").respond(503, json={"detail": "ExecutionService not available"})
    with pytest.raises(ExecutionApiError, match="ExecutionService not available"):
        IzieromaHook("izieroma_upstream", retry=RetryPolicy(max_attempts=1)).get_status(other)
    upstream.post(f"/api/v1/executions/{other}/cancel").respond(
        400, json={"error": {"code": "invalid_request", "message": "Bad request"}})
    with pytest.raises(ExecutionApiError, match="Bad request"):  # a 400 that is not about a finished run
        hook.cancel(other)
