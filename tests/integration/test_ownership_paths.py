"""An execution is owned the moment its id is known, whatever fails after that (real HTTP, the emulator).

A create the vendor carried out must never leave an execution nobody owns: once the answer yields an id, the
id is recorded (XCom and task_state_store) and a failure that follows cancels it; an id the client chooses
(B3OS ``runId``) is recorded before the create is even sent, so a create whose answer never arrives is still
found by the next try, which adopts it instead of starting a second one.
"""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.operator import STATE_STORE_KEY, XCOM_EXECUTION_ID
from airflow_provider_cancel.emulator.testing import wait_for

from .conftest import API_KEY, VENDORS, FakeStore, FakeTI, in_thread, make_context
from .vendor_ops import BY_NAME, scenario_operator


class AnswerUnreadable(Exception):
    """What reading the rest of a create's answer raised, after its id had been read."""


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_failure_right_after_the_id_was_read_leaves_it_recorded_and_cancelled(emu, vendor):
    task_id = f"owned-{uuid.uuid4().hex[:8]}"
    store, ti = FakeStore(), FakeTI(task_id)
    task = scenario_operator(vendor, "forever", task_id=task_id)
    hook = task.hook
    read_id = hook.started

    def started_then_unreadable(execution_id):
        read_id(execution_id)
        raise AnswerUnreadable("the rest of the create's answer could not be read")

    hook.started = started_then_unreadable  # type: ignore[method-assign]
    with pytest.raises(AnswerUnreadable):
        task.execute(make_context(ti, store))
    execution_id = ti.xcoms[XCOM_EXECUTION_ID]
    assert store.values[STATE_STORE_KEY]["execution_id"] == execution_id
    assert len(emu.cancels(execution_id)) == 1
    assert emu.execution(execution_id)["state"] in ("cancelled", "cancelling")


@pytest.fixture
def b3os_short_timeout(emulator):
    """A B3OS connection that gives up on an answer after 0.5 s and never retries."""
    conn = {"conn_type": "b3os", "host": emulator.base_url("b3os"), "password": API_KEY,
            "extra": {"timeout": 0.5, "max_retries": 0}}
    os.environ["AIRFLOW_CONN_B3OS_SHORT"] = json.dumps(conn)
    yield "b3os_short"
    os.environ.pop("AIRFLOW_CONN_B3OS_SHORT", None)


def b3os_run(task_id: str, conn_id: str):
    from airflow_provider_cancel.vendors.b3os import B3osRunWorkflowOperator

    return B3osRunWorkflowOperator(task_id=task_id, conn_id=conn_id, workflow_id="wf_prices",
                                   payload={"emulate": "forever"}, poll_interval=0.05, max_poll_interval=0.2,
                                   deferrable=False)


@pytest.mark.skipif("b3os" not in VENDORS, reason="B3OS is not among this run's TEST_VENDORS")
def test_a_b3os_run_id_is_recorded_before_the_create_and_the_retry_adopts_the_run(emu, b3os_short_timeout):
    """The create is carried out but answered too late: try 1 fails with a timeout, yet its run id was recorded
    before the request left; try 2 finds the run through the record and reattaches (one run, never two)."""
    task_id = f"planned-{uuid.uuid4().hex[:8]}"
    store, ti1, ti2 = FakeStore(), FakeTI(task_id, try_number=1), FakeTI(task_id, try_number=2)
    emu.add_fault(vendor="b3os", action="create", kind="slow", delay=2.0, count=1)
    first = b3os_run(task_id, b3os_short_timeout)
    with pytest.raises(httpx.ReadTimeout):
        first.execute(make_context(ti1, store))
    run_id = store.values[STATE_STORE_KEY]["execution_id"]
    assert ti1.xcoms[XCOM_EXECUTION_ID] == run_id
    wait_for(lambda: any(e["id"] == run_id for e in emu.executions("b3os")), timeout=30,
             message="the slow create carried out")
    second = b3os_run(task_id, "b3os_emu")
    thread, outcome = in_thread(second, make_context(ti2, store))
    wait_for(lambda: second.execution_id == run_id and emu.journal(action="status", execution_id=run_id),
             timeout=30, message="try 2 watching the run try 1 recorded")
    second.on_kill()
    thread.join(30)
    creates = [e for e in emu.journal(vendor="b3os", action="create") if e["execution_id"] == run_id]
    assert len(creates) == 1  # try 2 started nothing: its own run id would differ (its try number does)
    assert emu.execution(run_id)["state"] in ("cancelled", "cancelling") and "error" in outcome


@pytest.fixture
def short_timeout_retrying(emulator):
    """Per vendor, a connection that gives up on an answer after 0.5 s and sends a request at most 4 times."""
    names = []
    for vendor in VENDORS:
        conn = {"conn_type": vendor, "host": emulator.base_url(vendor), "password": API_KEY,
                "extra": {"timeout": 0.5, "max_retries": 3}}
        os.environ[f"AIRFLOW_CONN_{vendor.upper()}_IMPATIENT"] = json.dumps(conn)
        names.append(f"AIRFLOW_CONN_{vendor.upper()}_IMPATIENT")
    yield lambda vendor: f"{vendor}_impatient"
    for name in names:
        os.environ.pop(name, None)


IDEMPOTENT_CREATES = [v for v in VENDORS if BY_NAME[v].hook_class.idempotent_create]  # their creates carry a key


@pytest.mark.parametrize("vendor", IDEMPOTENT_CREATES)
def test_an_idempotent_create_answered_late_then_too_large_is_asked_again_and_starts_one_execution(
    emu, short_timeout_retrying, vendor
):
    """Attempt 1 is carried out but answered past the read timeout; attempt 2's answer is too large to read; only
    an answer names what attempt 1 started, so attempt 3 asks again (same key) and the task owns that one."""
    before = {e["id"] for e in emu.executions(vendor)}
    emu.add_fault(vendor=vendor, action="create", kind="slow", delay=1.5, count=1)
    emu.add_fault(vendor=vendor, action="create", kind="huge", count=1)
    task = scenario_operator(vendor, "succeed:1", task_id=f"late-{uuid.uuid4().hex[:8]}",
                             conn_id=short_timeout_retrying(vendor))
    task.execute(make_context(FakeTI(task.task_id)))
    created = [e for e in emu.executions(vendor) if e["id"] not in before]
    assert [e["id"] for e in created] == [task.execution_id]  # one execution, the task's, succeeded
    assert created[0]["state"] == "succeeded" and created[0]["cancel_requests"] == 0
    assert [e["fault"] for e in emu.journal(vendor=vendor, action="create")][-3:] == ["slow", "huge", None]


@pytest.mark.skipif("b3os" not in VENDORS, reason="B3OS is not among this run's TEST_VENDORS")
def test_a_create_carried_out_then_refused_until_the_retries_ran_out_is_cancelled(emu, short_timeout_retrying):
    """Attempt 1 starts the run but is answered late; attempts 2-4 are 429s. The error the task fails with is a
    429, yet the run exists: its planned id is owned and cancelled, and the error says so. (The 429s ask for 1 s
    each, so the run exists when the cancel goes; one created after it is the orphan sweep's: docs/kill-paths.md.)"""
    emu.add_fault(vendor="b3os", action="create", kind="slow", delay=1.0, count=1)
    emu.add_fault(vendor="b3os", action="create", kind="429", retry_after=1, count=3)
    task = b3os_run(f"refused-{uuid.uuid4().hex[:8]}", short_timeout_retrying("b3os"))
    ti = FakeTI(task.task_id)
    with pytest.raises(ExecutionApiError) as err:
        task.execute(make_context(ti))
    run_id = ti.xcoms[XCOM_EXECUTION_ID]
    assert err.value.status_code == 429 and f"B3OS execution {run_id} may have been started" in str(err.value.__notes__)
    wait_for(lambda: any(e["id"] == run_id for e in emu.executions("b3os")), timeout=30,
             message="the slow create carried out")
    assert len(emu.cancels(run_id)) == 1
    assert emu.execution(run_id)["state"] in ("cancelled", "cancelling")
