"""A new try meeting an earlier try's execution (K3 clear, K9 crash), and the cancel-by-id operator: all vendors.

The emulator's journal is the witness: how many executions were created, which were cancelled, and in which order
(a new execution is never created while an earlier one of the same task is still live).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from airflow_provider_cancel.cancel import CancelExecutionOperator
from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.operator import KILL_RETRY, STATE_STORE_KEY, XCOM_EXECUTION_ID
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.version_compat import kill_budget_seconds
from tests.airflow_compat import AirflowException, TaskDeferred

from .conftest import VENDORS, FakeStore, FakeTI, drive_trigger, in_thread, make_context
from .vendor_ops import scenario_operator

pytestmark = pytest.mark.parametrize("vendor", VENDORS)


def tries(task_id: str) -> tuple[FakeStore, FakeTI, FakeTI]:
    """One task instance's store (shared by its tries) and its tries 1 and 2."""
    return FakeStore(), FakeTI(task_id, try_number=1), FakeTI(task_id, try_number=2)


def started_by_try_one(vendor: str, scenario: str, task_id: str, store: FakeStore, ti: FakeTI) -> str:
    """What an earlier try leaves behind when its worker dies: a started execution, recorded before polling."""
    execution_id = scenario_operator(vendor, scenario, task_id=task_id, wait_for_completion=False).execute(
        make_context(ti, store)
    )
    assert recorded(store) == (execution_id, 1)
    return execution_id


def recorded(store: FakeStore) -> tuple[str, int]:
    """The execution id and the try that started it, as the task instance's record holds them."""
    value = store.values[STATE_STORE_KEY]
    return value["execution_id"], value["try_number"]


def fresh_task(prefix: str) -> tuple[str, FakeStore, FakeTI]:
    task_id = f"{prefix}-{uuid.uuid4().hex[:8]}"  # its own idempotency key
    return task_id, FakeStore(), FakeTI(task_id)


def journal_ids(emu, vendor: str, action: str) -> list[str]:
    return [entry["execution_id"] for entry in emu.journal(vendor=vendor, action=action)]


def test_an_adopted_execution_cancelled_by_the_earlier_try_is_restarted_once(emu, vendor):
    """K3: try 2 reattaches while try 1's cancel is still landing (a vendor can report "running" for a while
    after accepting a cancel): when that execution then ends cancelled, try 2 starts its own, once."""
    task_id = f"adopt-{uuid.uuid4().hex[:8]}"
    store, ti1, ti2 = tries(task_id)
    first = started_by_try_one(vendor, "remote_cancel:2", task_id, store, ti1)
    result = scenario_operator(vendor, "succeed:2", task_id=task_id).execute(make_context(ti2, store))
    second = ti2.xcoms[XCOM_EXECUTION_ID]
    assert second != first and second in journal_ids(emu, vendor, "create")
    assert emu.execution(first)["state"] == "cancelled"
    assert emu.execution(second)["state"] == "succeeded"
    assert result is not None and STATE_STORE_KEY not in store.values


def test_an_execution_this_try_started_and_someone_cancelled_fails_without_restart(emu, vendor):
    """K11 holds for the try's own execution: cancelled remotely -> fails, no second start."""
    task_id = f"own-{uuid.uuid4().hex[:8]}"
    store, ti1, _ = tries(task_id)
    task = scenario_operator(vendor, "remote_cancel:2", task_id=task_id)
    creates = len(journal_ids(emu, vendor, "create"))
    with pytest.raises(ExecutionCancelledRemotely, match="cancelled outside this task"):
        task.execute(make_context(ti1, store))
    assert recorded(store) == (task.execution_id, 1)
    assert len(journal_ids(emu, vendor, "create")) == creates + 1  # nothing restarted


async def test_a_deferred_adopted_execution_cancelled_is_restarted_and_deferred_again(emu, vendor):
    task_id = f"defer-{uuid.uuid4().hex[:8]}"
    store, ti1, ti2 = tries(task_id)
    first = started_by_try_one(vendor, "remote_cancel:2", task_id, store, ti1)
    ctx = make_context(ti2, store)
    with pytest.raises(TaskDeferred) as deferred:
        scenario_operator(vendor, "forever", task_id=task_id, deferrable=True).execute(ctx)
    assert deferred.value.trigger.execution_id == first  # reattached, not restarted yet
    [event] = await drive_trigger(deferred.value.trigger)
    assert event["state"] == "cancelled"
    resumed = scenario_operator(vendor, "forever", task_id=task_id, deferrable=True)
    with pytest.raises(TaskDeferred) as again:
        resumed.execute_complete(ctx, event)
    second = again.value.trigger.execution_id
    assert second != first and recorded(store) == (second, 2)
    resumed.on_kill()  # clean up: the new execution is this try's own
    assert len(emu.cancels(second)) == 1 and emu.cancels(first) == []


def test_on_existing_cancel_waits_for_the_orphan_to_stop_before_starting(emu, vendor):
    """K9 with on_existing="cancel": the orphan is cancelled and seen ended before the new create (async
    cancels — bctrl, meibel — answer "cancelling" first)."""
    task_id = f"orphan-{uuid.uuid4().hex[:8]}"
    store, ti1, ti2 = tries(task_id)
    orphan = started_by_try_one(vendor, "forever", task_id, store, ti1)
    scenario_operator(vendor, "succeed:1", task_id=task_id, on_existing="cancel").execute(make_context(ti2, store))
    journal = emu.journal(vendor=vendor)
    cancel_at = next(i for i, e in enumerate(journal) if e["action"] == "cancel" and e["execution_id"] == orphan)
    fresh = ti2.xcoms[XCOM_EXECUTION_ID]
    create_at = next(i for i, e in enumerate(journal) if e["action"] == "create" and e["execution_id"] == fresh)
    stopped_at = next(i for i, e in enumerate(journal) if e["execution_id"] == orphan and i > cancel_at
                      and e["action"] == "status")
    assert cancel_at < stopped_at < create_at
    assert len(emu.cancels(orphan)) == 1 and emu.execution(orphan)["state"] == "cancelled"


def test_cancel_by_id_cancels_waits_and_reports(emu, vendor):
    live = started_by_try_one(vendor, "forever", *fresh_task("c"))
    done = started_by_try_one(vendor, "fail@0s", *fresh_task("d"))
    task = CancelExecutionOperator(task_id="cleanup", conn_id=f"{vendor}_emu", execution_ids=[live, None, done, live],
                                   poll_interval=0.05)
    result = task.execute(make_context())
    assert result == {live: "cancelled", done: "failed"}
    assert len(emu.cancels(live)) == 1
    assert emu.execution(live)["state"] == "cancelled"


def test_cancel_by_id_reads_ids_rendered_as_text(emu, vendor):
    """Without render_template_as_native_obj, an XCom pull renders as text: a missing one as "None" (skipped, no
    request), a list as its repr (read back and cancelled)."""
    before = len(emu.journal(vendor=vendor))
    assert CancelExecutionOperator(task_id="c", conn_id=f"{vendor}_emu", execution_ids="None").execute(
        make_context()) == {}
    assert len(emu.journal(vendor=vendor)) == before
    ids = [started_by_try_one(vendor, "forever", *fresh_task(name)) for name in ("t1", "t2")]
    task = CancelExecutionOperator(task_id="c", conn_id=f"{vendor}_emu", execution_ids=str(ids), poll_interval=0.05)
    assert task.execute(make_context()) == dict.fromkeys(ids, "cancelled")
    assert all(len(emu.cancels(execution_id)) == 1 for execution_id in ids)


def test_cancel_by_id_refuses_bad_ids_before_any_request(emu, vendor):
    before = len(emu.journal(vendor=vendor))
    for bad in ("", "../etc/passwd", "a b", "x" * 10_000):
        task = CancelExecutionOperator(task_id="cleanup", conn_id=f"{vendor}_emu", execution_ids=["ok-looking", bad])
        with pytest.raises(ProviderConfigError):
            task.execute(make_context())
    assert len(emu.journal(vendor=vendor)) == before


def test_cancel_by_id_refuses_a_foreign_connection_type(emu, vendor, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_NOT_OURS", json.dumps({"conn_type": "http", "host": "example.com"}))
    task = CancelExecutionOperator(task_id="cleanup", conn_id="not_ours", execution_ids=["x"])
    with pytest.raises(ProviderConfigError, match="'not_ours' has type 'http'"):
        task.execute(make_context())
    assert os.environ["AIRFLOW_CONN_NOT_OURS"]


def test_cancel_by_id_with_nothing_to_cancel_does_nothing(emu, vendor):
    before = len(emu.journal(vendor=vendor))
    assert CancelExecutionOperator(task_id="c", conn_id=f"{vendor}_emu", execution_ids=None).execute(
        make_context()
    ) == {}
    assert len(emu.journal(vendor=vendor)) == before


def test_cancel_by_id_fails_when_an_execution_outlives_the_wait(emu, vendor, monkeypatch):
    from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook

    live = started_by_try_one(vendor, "forever", *fresh_task("s"))
    monkeypatch.setattr(ExecutionHook, "cancel", lambda self, execution_id, **_: CancelOutcome.REQUESTED)  # ignored
    task = CancelExecutionOperator(task_id="c", conn_id=f"{vendor}_emu", execution_ids=live, poll_interval=0.05,
                                   termination_timeout=0.5)
    with pytest.raises(AirflowException, match="still not ended"):
        task.execute(make_context())
    scenario_operator(vendor, "forever").hook.cancel(live)  # leave nothing running


def test_cancel_by_id_killed_while_waiting_stops_at_once(emu, vendor, monkeypatch):
    """Airflow's SIGTERM handler only calls on_kill: the wait must end there, not at SIGKILL 5 s later."""
    from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook

    live = started_by_try_one(vendor, "forever", *fresh_task("k"))
    monkeypatch.setattr(ExecutionHook, "cancel", lambda self, execution_id, **_: CancelOutcome.REQUESTED)  # ignored
    task = CancelExecutionOperator(task_id="c", conn_id=f"{vendor}_emu", execution_ids=live, poll_interval=5.0,
                                   termination_timeout=120)
    thread, outcome = in_thread(task, make_context())
    wait_for(lambda: emu.journal(action="status", execution_id=live), 30)  # it reads, then waits 4.5-5 s
    task.on_kill()
    thread.join(2)  # well before the next status read
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), ExecutionKilled) and live in str(outcome["error"])
    assert len(emu.journal(action="status", execution_id=live)) == 1
    monkeypatch.undo()
    scenario_operator(vendor, "forever").hook.cancel(live)  # leave nothing running


def test_an_earlier_trys_succeeded_execution_gives_its_result_without_a_new_start(emu, vendor):
    """K9: the worker died after the remote work was done: the retry returns that result, computes nothing."""
    task_id, store, ti1 = fresh_task("done")
    first = started_by_try_one(vendor, "succeed@0s", task_id, store, ti1)
    creates_before = len(journal_ids(emu, vendor, "create"))
    result = scenario_operator(vendor, "succeed:1", task_id=task_id).execute(
        make_context(FakeTI(task_id, try_number=2), store)
    )
    assert result is not None and len(journal_ids(emu, vendor, "create")) == creates_before
    assert STATE_STORE_KEY not in store.values  # forgotten on success: a later clear runs anew
    assert emu.cancels(first) == []


def test_a_kill_whose_cancels_meet_a_run_of_transient_faults_still_cancels(emu, vendor):
    """on_kill sends its cancel again through a 429 (Retry-After cut short), a 503, a dropped connection and a
    truncated answer, all inside Airflow's ~5 s between SIGTERM and SIGKILL."""
    task_id, store, ti = fresh_task("kfaults")
    task = scenario_operator(vendor, "forever", task_id=task_id)
    thread, outcome = in_thread(task, make_context(ti, store))
    wait_for(lambda: task.execution_id and emu.journal(action="status", execution_id=task.execution_id), 30)
    for kind in ("429", "503", "drop", "malformed"):
        emu.add_fault(vendor=vendor, action="cancel", kind=kind, retry_after=5 if kind == "429" else None)
    task.on_kill()
    thread.join(30)
    assert isinstance(outcome.get("error"), ExecutionKilled)
    cancels = emu.cancels(task.execution_id)
    assert [c["fault"] for c in cancels] == ["429", "503", "drop", "malformed", None]
    assert cancels[-1]["status_code"] < 300 and emu.execution(task.execution_id)["state"] in ("cancelled", "cancelling")
    assert cancels[-1]["ts"] - cancels[0]["ts"] < KILL_RETRY.give_up_after  # not the 5 s the vendor asked for


def test_a_kill_whose_cancel_keeps_failing_gives_up_before_sigkill(emu, vendor):
    """A vendor that refuses every cancel: on_kill stops trying when its budget is spent (Airflow would SIGKILL
    the process anyway) and the task still ends killed."""
    task_id, store, ti = fresh_task("kdown")
    task = scenario_operator(vendor, "forever", task_id=task_id)
    thread, outcome = in_thread(task, make_context(ti, store))
    wait_for(lambda: task.execution_id and emu.journal(action="status", execution_id=task.execution_id), 30)
    emu.add_fault(vendor=vendor, action="cancel", kind="503", count=100)
    task.on_kill()
    thread.join(30)
    assert isinstance(outcome.get("error"), ExecutionKilled)
    cancels = emu.cancels(task.execution_id)
    assert 3 <= len(cancels) <= KILL_RETRY.max_attempts and all(c["status_code"] == 503 for c in cancels)
    assert cancels[-1]["ts"] - cancels[0]["ts"] <= kill_budget_seconds()  # 3.5 s; up to 17 s on 3.4
    if kill_budget_seconds() <= KILL_RETRY.give_up_after:  # up to 3.3 the time, not the count, ends it
        assert len(cancels) < KILL_RETRY.max_attempts


def test_a_kill_while_the_create_is_in_flight_cancels_what_it_started(emu, vendor, monkeypatch):
    task_id, store, ti = fresh_task("kcreate")
    task = scenario_operator(vendor, "forever", task_id=task_id)
    create = task.start_execution

    def killed_meanwhile(hook, context):
        execution_id = create(hook, context)
        task.on_kill()  # lands before the id is known: nothing to cancel yet
        return execution_id

    monkeypatch.setattr(task, "start_execution", killed_meanwhile)
    with pytest.raises(ExecutionKilled):
        task.execute(make_context(ti, store))
    assert len(emu.cancels(task.execution_id)) == 1


def test_a_recorded_execution_that_cannot_be_read_is_never_replaced(emu, vendor):
    """Unreadable (not 404): it may still run, so the try fails rather than start a second one."""
    task_id, store, ti1 = fresh_task("unreadable")
    started_by_try_one(vendor, "forever", task_id, store, ti1)
    creates = len(journal_ids(emu, vendor, "create"))
    emu.add_fault(vendor=vendor, action="status", kind="403", count=1)
    with pytest.raises(ExecutionApiError):
        scenario_operator(vendor, "forever", task_id=task_id).execute(make_context(FakeTI(task_id, 2), store))
    assert len(journal_ids(emu, vendor, "create")) == creates
