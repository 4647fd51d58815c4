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
    assert [e["kind"] for e in events] == ["timeout"] and events[0]["cancel_result"] == "requested"
    assert len(emu.cancels(trigger.execution_id)) == 1
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):
        task.execute_complete(context, events[0])
    task.on_kill()  # the task runner calls on_kill after a timeout: no second cancel
    assert len(emu.cancels(trigger.execution_id)) == 1


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
