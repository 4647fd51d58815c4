"""The Dune operator, sensor, hook and trigger over real HTTP against the emulator: every lifecycle path."""

from __future__ import annotations

import pytest

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ProviderConfigError,
)
from airflow_provider_cancel.core.operator import STATE_STORE_KEY, XCOM_EXECUTION_ID
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.dune import DuneExecutionSensor, DuneHook, DuneRunQueryOperator
from tests.airflow_compat import USER_ACTION_CANCEL_MSG, AirflowFailException, TaskDeferred

from .conftest import API_KEY, FakeStore, FakeTI, defer, drive_trigger, make_context

CONN = "dune_emu"


def op(sql: str = "SELECT 1 -- emulate:succeed:2", **kw) -> DuneRunQueryOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    return DuneRunQueryOperator(task_id=kw.pop("task_id", "q"), conn_id=CONN, sql=sql, **kw)


def creates(emu) -> int:
    return len(emu.journal(vendor="dune", action="create"))


# -- sync lifecycle ---------------------------------------------------------------------------------------
def test_sync_success_returns_rows_records_the_id_and_sends_no_cancel(emu):
    task = op("SELECT n FROM t -- emulate:succeed:3,rows=7")
    ctx = make_context()
    result = task.execute(ctx)
    eid = result["execution_id"]
    assert result["row_count"] == 7 and len(result["rows"]) == 7 and result["truncated"] is False
    assert ctx["ti"].xcoms[XCOM_EXECUTION_ID] == eid
    assert STATE_STORE_KEY not in ctx["task_state_store"].values  # recorded before polling, forgotten on success
    assert len(emu.journal(action="status", execution_id=eid)) >= 3
    task.on_kill()  # Airflow 3.3 may SIGTERM after success (task_success_overtime): must not cancel
    assert emu.cancels(eid) == []


def test_results_page_through_and_respect_max_rows(emu):
    hook = DuneHook(CONN)
    eid = hook.execute_sql("SELECT 1 -- emulate:succeed:0,rows=2500")
    wait_for(lambda: hook.get_status(eid).state.is_terminal, timeout=10)
    everything = hook.get_results(eid, max_rows=None)
    assert everything["row_count"] == 2500 and not everything["truncated"]
    assert [r["n"] for r in everything["rows"][:3]] == [0, 1, 2]
    assert len(emu.journal(action="result", execution_id=eid)) >= 3  # 1000 + 1000 + 500
    capped = hook.get_results(eid, max_rows=150)
    assert capped["row_count"] == 150 and capped["truncated"] and capped["total_row_count"] == 2500


def test_remote_failure_raises_with_the_vendor_error_and_no_cancel(emu):
    task = op("SELECT x -- emulate:fail:2")
    with pytest.raises(ExecutionFailed) as err:
        task.execute(make_context())
    assert "QUERY_STATE_FAILED" in str(err.value)
    assert "line" in str(err.value)  # Dune's error position made it into the message
    assert emu.cancels(task.execution_id) == []


def test_cancelled_by_someone_else_fails_without_retry(emu):
    task = op("SELECT 1 -- emulate:remote_cancel:2")
    with pytest.raises(ExecutionCancelledRemotely) as err:
        task.execute(make_context())
    assert isinstance(err.value, AirflowFailException)
    assert "cancelled outside this task" in str(err.value)
    assert emu.cancels(task.execution_id) == []


def test_429_storm_with_retry_after_is_ridden_out(emu):
    emu.add_fault(vendor="dune", action="status", kind="429", count=4, retry_after=0)
    result = op("SELECT 1 -- emulate:succeed:1").execute(make_context())
    assert result["row_count"] == 5
    assert len([e for e in emu.journal(vendor="dune", action="status") if e["fault"] == "429"]) >= 4


def test_a_failed_create_is_not_retried_so_nothing_starts_twice(emu):
    before = creates(emu)
    emu.add_fault(vendor="dune", action="create", kind="502", count=1)
    with pytest.raises(ExecutionApiError, match="HTTP 502"):
        op("SELECT 1 -- emulate:succeed").execute(make_context())
    assert creates(emu) == before + 1


# -- bad input: clear errors before any request ------------------------------------------------------------
def test_bad_arguments_fail_before_any_request(emu):
    before = creates(emu)
    with pytest.raises(ProviderConfigError, match="exactly one of query_id or sql"):
        DuneRunQueryOperator(task_id="x", conn_id=CONN)
    with pytest.raises(ProviderConfigError, match="performance"):
        DuneRunQueryOperator(task_id="x", conn_id=CONN, sql="SELECT 1", performance="huge")
    for bad in ("", "   "):
        with pytest.raises(ProviderConfigError, match="sql must be a non-blank string"):
            op(bad).execute(make_context())
    for bad_id in ("abc", "0", "-3", "1/2"):
        task = DuneRunQueryOperator(task_id="x", conn_id=CONN, query_id=bad_id, deferrable=False)
        with pytest.raises(ProviderConfigError, match="query_id must be a positive integer"):
            task.execute(make_context())
    assert creates(emu) == before


@pytest.mark.parametrize("bad", ["", "../etc", "01HKZJ2683PHF9Q9PHHQ8FW4Q1/x", "a b", "é" * 26, "x" * 10_000, "a?b#c"])
def test_malformed_execution_ids_are_refused_before_any_request(emu, bad):
    seen = len(emu.journal(vendor="dune"))
    with pytest.raises(ProviderConfigError, match="execution id"):
        DuneHook(CONN).get_status(bad)
    assert len(emu.journal(vendor="dune")) == seen


def test_wrong_key_is_a_clear_error_and_the_key_is_not_in_it(emu):
    with pytest.raises(ExecutionApiError) as err:
        DuneHook("dune_badkey").execute_sql("SELECT 1")
    assert err.value.status_code == 401
    assert "sk-wrong-key" not in str(err.value) and API_KEY not in str(err.value)


def test_test_connection(emulator):
    ok, message = DuneHook(CONN).test_connection()
    assert ok, message
    ok, message = DuneHook("dune_badkey").test_connection()
    assert not ok and "rejected the API key" in message and "sk-wrong-key" not in message


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


async def test_deferred_success_resumes_with_the_result_and_no_cancel(emu):
    task = op("SELECT 1 -- emulate:succeed:3,rows=3", deferrable=True)
    ctx = make_context()
    trigger = defer(task, ctx)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "succeeded"
    fresh = op("SELECT 1 -- emulate:succeed:3,rows=3", deferrable=True)  # the worker resumes a new object
    result = fresh.execute_complete(ctx, events[0])
    assert result["row_count"] == 3
    assert emu.cancels(trigger.execution_id) == []


def test_invalid_trigger_event_fails_loudly(emu):
    for event in (None, {"kind": "nonsense", "execution_id": "x"}, {"kind": "terminal"}):
        with pytest.raises(Exception, match="Unexpected trigger event"):
            op().execute_complete(make_context(), event)


# -- retry after a hard worker crash (the id was recorded before polling) ----------------------------------
def test_a_new_try_reattaches_to_the_live_execution_of_a_crashed_try(emu):
    store = FakeStore()
    first = op("SELECT 1 -- emulate:succeed:6", task_id="crashy")
    eid = first.hook.execute_sql("SELECT 1 -- emulate:succeed:6")
    store.set(STATE_STORE_KEY, eid)  # what the crashed try had recorded
    before = creates(emu)
    result = op(task_id="crashy").execute(make_context(FakeTI("crashy", try_number=2), store))
    assert result["execution_id"] == eid and creates(emu) == before
    assert emu.cancels(eid) == []


def test_on_existing_cancel_cancels_the_orphan_and_starts_afresh(emu):
    store = FakeStore()
    orphan = DuneHook(CONN).execute_sql("SELECT 1 -- emulate:forever")
    store.set(STATE_STORE_KEY, orphan)
    result = op(task_id="fresh", on_existing="cancel").execute(make_context(FakeTI("fresh", 2), store))
    assert result["execution_id"] != orphan
    assert len(emu.cancels(orphan)) == 1
    assert STATE_STORE_KEY not in store.values  # recorded before polling, forgotten on success


# -- sensor --------------------------------------------------------------------------------------------------
def test_sensor_succeeds_fails_and_never_cancels(emu):
    hook = DuneHook(CONN)
    good = hook.execute_sql("SELECT 1 -- emulate:succeed:2")
    bad = hook.execute_sql("SELECT 1 -- emulate:fail:1")
    sensor = DuneExecutionSensor(task_id="s", conn_id=CONN, execution_id=good, poke_interval=0.05, deferrable=False)
    sensor.execute(make_context())
    failing = DuneExecutionSensor(task_id="s2", conn_id=CONN, execution_id=bad, poke_interval=0.05,
                                  deferrable=False)
    with pytest.raises(AirflowFailException, match="failed"):
        failing.execute(make_context())
    assert emu.cancels(good) == [] and emu.cancels(bad) == []


async def test_deferrable_sensor_kill_does_not_cancel(emu):
    eid = DuneHook(CONN).execute_sql("SELECT 1 -- emulate:forever")
    sensor = DuneExecutionSensor(task_id="s", conn_id=CONN, execution_id=eid, poke_interval=0.05, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    trigger = deferred.value.trigger
    await drive_trigger(trigger, cancel_when=lambda: len(emu.journal(action="status", execution_id=eid)) > 1,
                        cancel_msg=USER_ACTION_CANCEL_MSG)
    assert emu.cancels(eid) == []
    DuneHook(CONN).cancel(eid)
