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
from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG
from airflow.sdk.exceptions import AirflowTaskTimeout, TaskDeferralError

from airflow_provider_cancel.core.trigger import ExecutionTrigger

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


async def test_deferred_user_kill_cancels_once_via_trigger_on_kill(emu, vendor):
    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    await drive_trigger(trigger, cancel_when=polled_by(emu, trigger), cancel_msg=_USER_ACTION_CANCEL_MSG)
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
    """Answers the trigger's GetTaskStates as Airflow's triggerer supervisor would, with a fixed state."""

    def __init__(self, ti: FakeTI, state: str) -> None:
        self.ti, self.state, self.asked = ti, state, 0

    async def asend(self, request):
        from types import SimpleNamespace

        from airflow.sdk.execution_time.comms import GetTaskStates

        if not isinstance(request, GetTaskStates):
            return None  # e.g. the SDK masking the connection's secrets
        self.asked += 1
        return SimpleNamespace(task_states={self.ti.run_id: {self.ti.task_id: self.state}})


@pytest.mark.parametrize(("task_state", "cancels"), [("deferred", 0), ("failed", 1), ("success", 1)])
async def test_on_kill_cancels_only_when_the_task_left_deferred(emu, vendor, monkeypatch, task_state, cancels):
    """Airflow 3.3.0-3.3.2 call on_kill also when a triggerer that stalled finds its trigger reassigned
    (apache/airflow#73454): the task is still DEFERRED and another triggerer polls it, so nothing may be
    cancelled; a real user kill (the task failed or succeeded) still cancels once. The e2e proof on a real
    stack is D1 in tests/e2e (a triggerer SIGSTOPped past its health threshold, then resumed)."""
    from airflow.sdk.execution_time import task_runner

    from airflow_provider_cancel.core import trigger as trigger_module

    task, context = deferred_task(vendor)
    trigger = defer(task, context)
    ti = context["ti"]
    ti.id, ti.context_carrier = uuid.uuid4(), None  # what the triggerer reads of the task instance for its logs
    trigger.task_instance = ti
    supervisor = _Supervisor(ti, task_state)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    monkeypatch.setattr(trigger_module, "_on_kill_runs_on_reassignment", lambda: True)
    await drive_trigger(trigger, cancel_when=polled_by(emu, trigger), cancel_msg=_USER_ACTION_CANCEL_MSG)
    assert supervisor.asked == 1
    assert len(emu.cancels(trigger.execution_id)) == cancels
    if not cancels:
        task.hook.cancel(trigger.execution_id)  # clean up the healthy execution the test left running
