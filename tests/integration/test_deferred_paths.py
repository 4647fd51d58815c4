"""A deferred task's kill paths on all five vendors: the trigger run as Airflow's triggerer runs it
(``TriggerRunner.run_trigger``), against the emulator over real HTTP.

A user kill cancels once (K6); a triggerer shutdown cancels nothing and the rebuilt trigger polls on (K12); the
task's deadline cancels once although Airflow 3.3 does not enforce it while deferred (K7); transient errors never
end the wait; the scheduler's defer-timeout backstop cancels the recorded execution (K8). The emulator's journal
is the witness.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from airflow_provider_cancel.core.trigger import ExecutionTrigger
from tests.airflow_compat import (
    USER_ACTION_CANCEL_MSG,
    AirflowTaskTimeout,
    TaskDeferralError,
    requires_trigger_on_kill,
)

from .conftest import VENDORS, FakeStore, FakeTI, defer, drive_trigger, make_context
from .vendor_ops import scenario_operator

pytestmark = pytest.mark.parametrize("vendor", VENDORS)


def deferred_task(vendor: str, scenario: str = "forever", **kw):
    """The vendor's operator, deferrable, under a task id of its own (B3OS and izieroma derive their idempotency
    keys from it), and the context of its first try."""
    task_id = f"deferred-{uuid.uuid4().hex[:8]}"
    task = scenario_operator(vendor, scenario, task_id=task_id, deferrable=True, **kw)
    return task, make_context(FakeTI(task_id), FakeStore())


def polled_by(emu, trigger: ExecutionTrigger):
    """True once the trigger made its own status read (the operator may read once before deferring)."""
    eid = trigger.execution_id
    before = len(emu.journal(action="status", execution_id=eid))
    return lambda: len(emu.journal(action="status", execution_id=eid)) > before


@requires_trigger_on_kill
async def test_deferred_user_kill_cancels_once_via_trigger_on_kill(emu, vendor):
    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    await drive_trigger(trigger, cancel_when=polled_by(emu, trigger), cancel_msg=USER_ACTION_CANCEL_MSG)
    assert len(emu.cancels(trigger.execution_id)) == 1
    assert emu.execution(trigger.execution_id)["state"] in ("cancelled", "cancelling")


async def test_triggerer_shutdown_does_not_cancel_and_a_new_trigger_resumes_polling(emu, vendor):
    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    events = await drive_trigger(trigger, cancel_when=polled_by(emu, trigger))
    assert events == [] and emu.cancels(trigger.execution_id) == []
    # The next triggerer rebuilds the same trigger from its serialized kwargs and keeps polling.
    again = ExecutionTrigger(**trigger.serialize()[1])
    await drive_trigger(again, cancel_when=polled_by(emu, again))
    assert emu.cancels(trigger.execution_id) == []
    task.hook.cancel(trigger.execution_id)


async def test_deferred_deadline_cancels_once_and_fails_with_a_timeout(emu, vendor):
    task, context = deferred_task(vendor, execution_timeout=timedelta(seconds=2))
    trigger = defer(task, context)
    events = await drive_trigger(trigger, timeout=30)
    assert [e["kind"] for e in events] == ["timeout"] and events[0]["cancel"] == "requested"
    assert len(emu.cancels(trigger.execution_id)) == 1
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):
        task.execute_complete(context, events[0])
    task.on_kill()  # the task runner calls on_kill after a timeout: no second cancel
    assert len(emu.cancels(trigger.execution_id)) == 1


async def test_a_deadline_cancel_that_failed_in_the_trigger_is_sent_again_by_the_worker(emu, vendor, monkeypatch):
    """The trigger's every cancel attempt failed: its event says so (not "cancel sent"), and the worker that
    resumes the task sends the cancel again before failing with the timeout."""
    from airflow_provider_cancel.core import trigger as trigger_module
    from airflow_provider_cancel.core.http import RetryPolicy

    monkeypatch.setattr(trigger_module, "CANCEL_RETRY", RetryPolicy(max_attempts=2, initial_backoff=0.05,
                                                                    max_backoff=0.05, give_up_after=2.0))
    task, context = deferred_task(vendor, execution_timeout=timedelta(seconds=2))
    trigger = defer(task, context)
    eid = trigger.execution_id
    emu.add_fault(vendor=vendor, action="cancel", kind="503", count=2, retry_after=0)
    events = await drive_trigger(trigger, timeout=30)
    assert [e["kind"] for e in events] == ["timeout"] and events[0]["cancel"] == "failed"
    assert emu.execution(eid)["state"] not in ("cancelled", "cancelling")  # the execution still runs
    resumed = scenario_operator(vendor, "forever", task_id=task.task_id, deferrable=True)
    with pytest.raises(AirflowTaskTimeout, match="the cancel failed"):
        resumed.execute_complete(context, events[0])
    resumed.on_kill()  # Airflow's timeout path calls on_kill next: no further cancel
    accepted = [c for c in emu.cancels(eid) if not c["fault"]]
    assert len(accepted) == 1 and emu.execution(eid)["state"] in ("cancelled", "cancelling")


async def test_trigger_rides_out_transient_errors(emu, vendor):
    task, context = deferred_task(vendor, "succeed:2")
    trigger = defer(task, context)
    emu.add_fault(vendor=vendor, action="status", kind="503", count=3, retry_after=0)
    events = await drive_trigger(trigger)
    assert [e["kind"] for e in events] == ["terminal"] and events[0]["state"] == "succeeded"
    assert [f["fault"] for f in emu.journal(action="status", execution_id=trigger.execution_id) if f["fault"]]
    assert emu.cancels(trigger.execution_id) == []


def test_defer_timeout_backstop_cancels_with_the_recorded_id(emu, vendor):
    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    resumed = scenario_operator(vendor, "forever", task_id=task.task_id, deferrable=True)  # knows no id
    with pytest.raises(TaskDeferralError):
        resumed.resume_execution("__fail__", {"error": "Trigger failure"}, context)  # reads XCom / the store
    assert len(emu.cancels(trigger.execution_id)) == 1


class _Supervisor:
    """Answers the trigger's GetTaskStates and GetXCom as Airflow's triggerer supervisor would: a fixed task
    state, and the XComs the task's current try holds (Airflow clears them when a new try starts)."""

    def __init__(self, ti: FakeTI, state: str, xcoms: dict) -> None:
        self.ti, self.state, self.xcoms, self.asked = ti, state, xcoms, []

    async def asend(self, request):
        from types import SimpleNamespace

        from airflow.sdk.execution_time.comms import GetTaskStates, GetXCom

        if isinstance(request, GetTaskStates):
            self.asked.append("state")
            return SimpleNamespace(task_states={self.ti.run_id: {self.ti.task_id: self.state}})
        if isinstance(request, GetXCom):
            self.asked.append(request.key)
            return SimpleNamespace(key=request.key, value=self.xcoms.get(request.key))
        return None  # e.g. the SDK masking the connection's secrets


@requires_trigger_on_kill
@pytest.mark.parametrize(
    ("task_state", "newer_try", "cancels"),
    [("deferred", False, 0), ("failed", False, 1), ("success", False, 1), ("deferred", True, 1)],
    ids=["reassigned", "marked-failed", "marked-success", "cleared-and-deferred-again"],
)
async def test_on_kill_cancels_only_when_this_try_is_over(emu, vendor, monkeypatch, task_state, newer_try, cancels):
    """Airflow 3.3.0-3.3.2 call on_kill also when a triggerer that stalled finds its trigger reassigned
    (apache/airflow#73454): this very try is still DEFERRED and another triggerer polls it, so nothing may be
    cancelled; a real user kill (the task failed or succeeded) still cancels once. A clear whose new try started,
    adopted the execution and deferred again before this triggerer dropped the old trigger (seen under the full
    e2e load: the task reads DEFERRED again) is a kill too: the newer try recorded itself as the execution's
    owner, and the cancel makes it start afresh (K3)."""
    from airflow.sdk.execution_time import task_runner

    from airflow_provider_cancel.core import trigger as trigger_module
    from airflow_provider_cancel.core.ownership import XCOM_EXECUTION_TRY

    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    ti = context["ti"]
    ti.id, ti.context_carrier = uuid.uuid4(), None  # what the triggerer reads of the task instance for its logs
    trigger.task_instance = ti
    assert ti.xcoms[XCOM_EXECUTION_TRY] == ti.try_number  # recorded by the operator with the execution id
    xcoms = {**ti.xcoms, XCOM_EXECUTION_TRY: ti.try_number + 1} if newer_try else ti.xcoms
    supervisor = _Supervisor(ti, task_state, xcoms)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    monkeypatch.setattr(trigger_module, "_on_kill_runs_on_reassignment", lambda: True)
    await drive_trigger(trigger, cancel_when=polled_by(emu, trigger), cancel_msg=USER_ACTION_CANCEL_MSG)
    assert supervisor.asked == (["state", XCOM_EXECUTION_TRY] if task_state == "deferred" else ["state"])
    assert len(emu.cancels(trigger.execution_id)) == cancels
    if not cancels:
        task.hook.cancel(trigger.execution_id)  # clean up the healthy execution the test left running
