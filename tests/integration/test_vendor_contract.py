"""The lifecycle every vendor shares, run on each case of `vendor_ops.CASES` (every vendor of the registry, and
bctrl's second API generation) over real HTTP against the emulator, whose journal is the witness: success records
the id and never cancels, someone else's cancel fails without retry, transient errors are ridden out, a create
never starts twice, bad ids and keys are refused clearly, the deferred path resumes with the result or the
vendor's error, a crashed try's execution is reattached or cancelled, and a sensor never cancels.

What only one vendor does lives in its `test_<vendor>_lifecycle.py`.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ProviderConfigError,
)
from airflow_provider_cancel.core.operator import STATE_STORE_KEY, XCOM_EXECUTION_ID
from airflow_provider_cancel.version_compat import TRIGGER_ON_KILL
from tests.airflow_compat import USER_ACTION_CANCEL_MSG, AirflowFailException, TaskDeferred

from .conftest import API_KEY, FakeStore, FakeTI, defer, drive_trigger, make_context
from .vendor_ops import CASES, Case

each_case = pytest.mark.parametrize("case", CASES, ids=str)


def fresh(store: FakeStore | None = None, try_number: int = 1) -> dict:
    """The context of a task instance of its own: idempotency keys (dag/run/task/try) never meet another test's."""
    return make_context(FakeTI(f"t-{uuid.uuid4().hex[:12]}", try_number), store)


def creates(emu, case: Case) -> list[dict]:
    return emu.journal(vendor=case.vendor, action="create")


# -- sync lifecycle ------------------------------------------------------------------------------------------
@each_case
def test_sync_success_returns_the_result_records_the_id_and_sends_no_cancel(emu, case):
    task = case.operator("succeed:3,rows=7")
    context = fresh()
    result = task.execute(context)
    eid = task.execution_id
    case.check_success(result, rows=7)
    assert context["ti"].xcoms[XCOM_EXECUTION_ID] == eid
    assert STATE_STORE_KEY not in context["task_state_store"].values  # recorded before polling, forgotten on success
    assert len(emu.journal(action="status", execution_id=eid)) >= 3
    task.on_kill()  # Airflow 3.3 may SIGTERM after success (task_success_overtime): must not cancel
    assert emu.cancels(eid) == []


@each_case
def test_cancelled_by_someone_else_fails_without_retry(emu, case):
    task = case.operator("remote_cancel:2")
    with pytest.raises(ExecutionCancelledRemotely) as err:
        task.execute(fresh())
    assert isinstance(err.value, AirflowFailException)
    for text in ("cancelled outside this task", *case.cancelled_remotely_says):
        assert text in str(err.value)
    assert emu.cancels(task.execution_id) == []


@each_case
def test_a_remote_failure_raises_with_the_vendors_error_and_sends_no_cancel(emu, case):
    scenario, word, says = case.failure
    task = case.operator(scenario)
    with pytest.raises(ExecutionFailed, match=rf"failed \({word}\): {says}"):
        task.execute(fresh())
    assert emu.cancels(task.execution_id) == []


@each_case
def test_429_storm_with_retry_after_is_ridden_out(emu, case):
    emu.add_fault(vendor=case.vendor, action="status", kind="429", count=4, retry_after=0)
    emu.add_fault(vendor=case.vendor, action="status", kind="429", count=1, retry_after=1)
    task = case.operator("succeed:1")
    case.check_success(task.execute(fresh()))
    reads = emu.journal(vendor=case.vendor, action="status", execution_id=task.execution_id)
    limited = [i for i, e in enumerate(reads) if e["fault"] == "429"]
    assert len(limited) == 5
    waited = reads[limited[-1] + 1]["ts"] - reads[limited[-1]]["ts"]
    assert waited >= 0.9, f"Retry-After: 1 was not honoured (next read after {waited:.2f}s)"
    assert emu.cancels(task.execution_id) == []


# -- start exactly once --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if c.idempotent_create], ids=str)
def test_a_create_answered_502_is_retried_with_its_key_and_starts_once(emu, case):
    emu.add_fault(vendor=case.vendor, action="create", kind="502", count=1)
    before, known = len(creates(emu, case)), len(emu.executions(vendor=case.vendor))
    task = case.operator("succeed:1")
    case.check_success(task.execute(fresh()))
    first, retried = creates(emu, case)[before:]
    assert first["status_code"] == 502 and 200 <= retried["status_code"] < 300
    assert retried["execution_id"] == task.execution_id
    assert len(emu.executions(vendor=case.vendor)) == known + 1


@pytest.mark.parametrize("kind", ["502", "drop"])
@pytest.mark.parametrize("case", [c for c in CASES if not c.idempotent_create], ids=str)
def test_a_failed_create_is_not_retried_so_nothing_starts_twice(emu, case, kind):
    """No idempotency key: a create that may have happened is never sent again (a 502, a dropped connection)."""
    before = len(creates(emu, case))
    emu.add_fault(vendor=case.vendor, action="create", kind=kind, count=1)
    with pytest.raises((ExecutionApiError, httpx.TransportError)):
        case.operator("succeed").execute(fresh())
    assert len(creates(emu, case)) == before + 1


# -- bad ids and keys: clear errors before any request (or naming what the vendor said) --------------------
@pytest.mark.parametrize(("case", "bad"), [(c, bad) for c in CASES
                                           for bad in ("", "../etc", "x" * 10_000, "a?b#c", *c.bad_ids)],
                         ids=lambda value: str(value)[:24])
def test_malformed_execution_ids_are_refused_before_any_request(emu, case, bad):
    seen = len(emu.journal(vendor=case.vendor))
    with pytest.raises(ProviderConfigError, match="execution id"):
        case.hook().get_status(bad)
    assert len(emu.journal(vendor=case.vendor)) == seen


@each_case
def test_wrong_key_is_a_clear_error_and_the_key_is_not_in_it(emu, case):
    with pytest.raises(ExecutionApiError) as err:
        case.operator("succeed:1", conn_id=case.conn_id(bad_key=True)).execute(fresh())
    assert err.value.status_code == 401
    for text in case.wrong_key_says:
        assert text in str(err.value)
    assert "sk-wrong-key" not in str(err.value) and API_KEY not in str(err.value)


@each_case
def test_test_connection(emulator, case):
    ok, message = case.hook().test_connection()
    assert ok, message
    ok, message = case.hook(bad_key=True).test_connection()
    assert not ok and "rejected the API key" in message and "sk-wrong-key" not in message


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -------------------------------
@each_case
async def test_deferred_success_resumes_with_the_result_and_no_cancel(emu, case):
    context = fresh()
    trigger = defer(case.operator("succeed:3,rows=3", deferrable=True), context)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "succeeded"
    resumed = case.operator("succeed:3,rows=3", deferrable=True)  # the worker resumes a new object
    case.check_success(resumed.execute_complete(context, events[0]), rows=3)
    assert resumed.execution_id == trigger.execution_id
    assert emu.cancels(trigger.execution_id) == []


@each_case
async def test_deferred_failure_resumes_with_the_vendors_error(emu, case):
    scenario, word, says = case.failure
    context = fresh()
    trigger = defer(case.operator(scenario, deferrable=True), context)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "failed"
    with pytest.raises(ExecutionFailed, match=rf"failed \({word}\): {says}"):
        case.operator(scenario, deferrable=True).execute_complete(context, events[0])
    assert emu.cancels(trigger.execution_id) == []


@each_case
def test_invalid_trigger_event_fails_loudly(emu, case):
    for event in (None, {"kind": "nonsense", "execution_id": "x"}, {"kind": "terminal"}):
        with pytest.raises(Exception, match="Unexpected trigger event"):
            case.operator().execute_complete(fresh(), event)


@each_case
@pytest.mark.skipif(not TRIGGER_ON_KILL, reason="a user-action cancel reaches triggers from 3.3 (before: tests/legacy)")
async def test_deferred_user_kill_during_the_connection_lookup_still_cancels(emu, case, monkeypatch):
    """The triggerer's user-kill cancel lands while the trigger is still looking its connection up (a remote
    secrets backend answers in tens to hundreds of ms): the cancel waits for the lookup and is sent once."""
    from airflow.sdk.execution_time import supervisor

    trigger = defer(case.operator("forever", deferrable=True), fresh())
    looking_up = threading.Event()
    backends = supervisor.ensure_secrets_backend_loaded()

    class SlowBackend:
        def get_connection(self, conn_id: str):
            looking_up.set()
            time.sleep(0.5)
            return next(filter(None, (b.get_connection(conn_id) for b in backends)), None)

    monkeypatch.setattr(supervisor, "ensure_secrets_backend_loaded", lambda: [SlowBackend()])
    await drive_trigger(trigger, cancel_when=looking_up.is_set, cancel_msg=USER_ACTION_CANCEL_MSG)
    assert len(emu.cancels(trigger.execution_id)) == 1


# -- retry after a hard worker crash (the id was recorded before polling) ------------------------------------
@each_case
def test_a_new_try_reattaches_to_the_live_execution_of_a_crashed_try(emu, case):
    store = FakeStore()
    eid = case.start("succeed:4")
    store.set(STATE_STORE_KEY, eid)  # what a crashed try of an earlier provider version recorded: the bare id
    before = len(creates(emu, case))
    task = case.operator()
    case.check_success(task.execute(fresh(store, try_number=2)))
    assert task.execution_id == eid and len(creates(emu, case)) == before
    assert emu.cancels(eid) == []


@each_case
def test_on_existing_cancel_cancels_the_orphan_and_starts_afresh(emu, case):
    store = FakeStore()
    orphan = case.start("forever")
    store.set(STATE_STORE_KEY, orphan)
    task = case.operator("succeed:1", on_existing="cancel")
    task.execute(fresh(store, try_number=2))
    assert task.execution_id != orphan
    assert len(emu.cancels(orphan)) == 1
    assert STATE_STORE_KEY not in store.values  # recorded before polling, forgotten on success


# -- sensor: waits, never cancels ----------------------------------------------------------------------------
@each_case
def test_sensor_succeeds_fails_and_never_cancels(emu, case):
    scenario, word, says = case.failure
    good, bad = case.start("succeed:2"), case.start(scenario)
    case.sensor_class(task_id="s", conn_id=case.conn_id(), execution_id=good, poke_interval=0.05,
                      deferrable=False).execute(fresh())
    failing = case.sensor_class(task_id="s2", conn_id=case.conn_id(), execution_id=bad, poke_interval=0.05,
                                deferrable=False)
    with pytest.raises(AirflowFailException, match=rf"ended failed \({word}\): {says}"):
        failing.execute(fresh())
    assert emu.cancels(good) == [] and emu.cancels(bad) == []


@each_case
async def test_deferrable_sensor_kill_does_not_cancel(emu, case):
    eid = case.start("forever")
    sensor = case.sensor_class(task_id="s", conn_id=case.conn_id(), execution_id=eid, poke_interval=0.05,
                               deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(fresh())
    await drive_trigger(deferred.value.trigger,
                        cancel_when=lambda: len(emu.journal(action="status", execution_id=eid)) > 1,
                        cancel_msg=USER_ACTION_CANCEL_MSG)
    assert emu.cancels(eid) == []
    case.hook().cancel(eid)
