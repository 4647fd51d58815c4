"""The kill-path contract on a real Airflow 3.3 (scheduler, triggerer, dag-processor, api-server), every vendor.

Each DAG run holds one task per kill path; all runs start together, so every scenario runs concurrently in one
stack. Kills go through the REST API as the UI sends them. The emulator's journal is the witness: exactly one
cancel for the task's execution (none for a success), and the task's final state.
"""

from __future__ import annotations

import pytest

from .airflow_stack import pid_alive
from .conftest import VENDORS, now

pytestmark = pytest.mark.e2e

KILL_DEADLINE = 90  # s from a kill to its cancel; Airflow needs ~1-5 s, the rest is a slow-machine margin
FINISH_DEADLINE = 240


@pytest.fixture(scope="module")
def runs(stack):
    """One run per vendor, started on first use: vendors go in waves of six concurrent tasks, which a 2-core
    machine with SQLite sustains (thirty at once starve the Execution API)."""
    started: dict[str, str] = {}

    def run_of(vendor: str) -> str:
        if vendor not in started:
            stack.wait_dag(f"e2e_{vendor}", timeout=180)
            started[vendor] = stack.trigger(f"e2e_{vendor}")
        return started[vendor]

    return run_of


def execution_of(stack, emu, vendor: str, run_id: str, task_id: str, *, polled: bool = True) -> str:
    """The execution id the task recorded in XCom (once the emulator has seen it polled, if `polled`)."""
    dag_id = f"e2e_{vendor}"
    execution_id = stack.wait_until(
        lambda: stack.xcom(dag_id, run_id, task_id, key="execution_id"),
        timeout=FINISH_DEADLINE,
        message=f"{dag_id}.{task_id} recorded its execution id",
    )
    if not polled:
        return execution_id
    stack.wait_until(
        lambda: emu.journal(action="status", execution_id=execution_id),
        timeout=FINISH_DEADLINE,
        message=f"a status poll of {execution_id}",
    )
    return execution_id


def settle(stack, emu, execution_id: str, runner_pid: int | None = None) -> int:
    """Cancels seen for an execution once nothing that could still send one is alive: the killed task
    process (SIGKILLed 5 s after SIGTERM at the latest). A late duplicate would be counted."""
    if runner_pid:
        stack.wait_until(lambda: not pid_alive(runner_pid), timeout=60, message=f"task process {runner_pid} gone")
    return len(emu.cancels(execution_id))


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(
    ("path", "task_id", "live_state"),
    [("K1", "k1_sync_markfail", "running"), ("K6", "k6_defer_markfail", "deferred")],
)
def test_mark_failed_cancels_once(stack, emu_client, runs, matrix, vendor, path, task_id, live_state):
    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    stack.wait_ti(dag_id, run_id, task_id, {live_state}, timeout=FINISH_DEADLINE)
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id)
    stack.wait_ti(dag_id, run_id, task_id, {live_state}, timeout=30)
    runner = stack.wait_task_pids(dag_id, run_id, task_id).runner if live_state == "running" else None
    killed_at = now()
    stack.set_ti_state(dag_id, run_id, task_id, "failed")  # the UI's "Mark as failed"
    cancel = stack.wait_until(
        lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE, message=f"a cancel of {execution_id}"
    )[0]
    cancels = settle(stack, emu_client, execution_id, runner)
    state = stack.ti(dag_id, run_id, task_id)["state"]
    matrix.add(
        path=path,
        vendor=vendor,
        mode=live_state,
        cancels=cancels,
        state=state,
        latency=cancel["ts"] - killed_at,
        result="pass" if cancels == 1 and state == "failed" else "FAIL",
    )
    assert cancels == 1
    assert state == "failed"
    assert emu_client.execution(execution_id)["state"] in ("cancelled", "cancelling")


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(
    ("path", "task_id", "mode"), [("K4", "k4_sync_timeout", "running"), ("K7", "k7_defer_timeout", "deferred")]
)
def test_execution_timeout_cancels_once(stack, emu_client, runs, matrix, vendor, path, task_id, mode):
    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    # On a loaded machine the deadline can pass before the first status poll: only the id is required.
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id, polled=False)
    ti = stack.wait_ti(
        dag_id, run_id, task_id, {"failed"}, timeout=FINISH_DEADLINE, fail_states={"success", "up_for_retry"}
    )
    cancels = stack.wait_until(
        lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE, message=f"a cancel of {execution_id}"
    )
    count = settle(stack, emu_client, execution_id)
    from datetime import datetime

    started = datetime.fromisoformat(ti["start_date"].replace("Z", "+00:00")).timestamp()
    matrix.add(
        path=path,
        vendor=vendor,
        mode=mode,
        cancels=count,
        state=ti["state"],
        latency=cancels[0]["ts"] - (started + 20),
        result="pass" if count == 1 else "FAIL",
    )
    assert count == 1
    # Cancelled at the deadline (20 s after the start), not long after it.
    assert cancels[0]["ts"] - started < 20 + KILL_DEADLINE


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("task_id", "mode"), [("k13_sync_success", "running"), ("k13_defer_success", "deferred")])
def test_success_never_cancels(stack, emu_client, runs, matrix, vendor, task_id, mode):
    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    stack.wait_ti(dag_id, run_id, task_id, {"success"}, timeout=FINISH_DEADLINE, fail_states={"failed"})
    execution_id = stack.xcom(dag_id, run_id, task_id, key="execution_id")
    result = stack.xcom(dag_id, run_id, task_id)
    count = settle(stack, emu_client, execution_id)
    matrix.add(
        path="K13",
        vendor=vendor,
        mode=mode,
        cancels=count,
        state="success",
        latency=None,
        result="pass" if count == 0 and result else "FAIL",
    )
    assert result, "the task returned its result to XCom"
    assert count == 0


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("task_id", "live_state"), [("k2_sync_marksuccess", "running"),
                                                      ("k2_defer_marksuccess", "deferred")])
def test_mark_success_cancels_once(stack, emu_client, runs, matrix, vendor, task_id, live_state):
    """K2: the user says "success"; the remote execution must not keep running (cancel_on_kill=True)."""
    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    stack.wait_ti(dag_id, run_id, task_id, {live_state}, timeout=FINISH_DEADLINE)
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id)
    runner = stack.wait_task_pids(dag_id, run_id, task_id).runner if live_state == "running" else None
    killed_at = now()
    stack.set_ti_state(dag_id, run_id, task_id, "success")
    cancel = stack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                              message=f"a cancel of {execution_id}")[0]
    cancels = settle(stack, emu_client, execution_id, runner)
    state = stack.ti(dag_id, run_id, task_id)["state"]
    matrix.add(path="K2", vendor=vendor, mode=live_state, cancels=cancels, state=state,
               latency=cancel["ts"] - killed_at, result="pass" if cancels == 1 and state == "success" else "FAIL")
    assert cancels == 1
    assert state == "success"  # the user's choice stands


@pytest.mark.parametrize("vendor", VENDORS)
def test_sigterm_to_the_worker_cancels_and_never_reports_success(stack, emu_client, runs, matrix, vendor):
    """K5: SIGTERM to the worker (supervisor forwards it; 3.3's handler calls on_kill and returns)."""
    import os
    import signal

    dag_id, run_id, task_id = f"e2e_{vendor}", runs(vendor), "k5_sync_sigterm"
    stack.wait_ti(dag_id, run_id, task_id, {"running"}, timeout=FINISH_DEADLINE)
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id)
    pids = stack.wait_task_pids(dag_id, run_id, task_id)
    killed_at = now()
    os.kill(pids.supervisor, signal.SIGTERM)
    cancel = stack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                              message=f"a cancel of {execution_id}")[0]
    ti = stack.wait_ti(dag_id, run_id, task_id, {"failed"}, timeout=FINISH_DEADLINE, fail_states={"success"})
    cancels = settle(stack, emu_client, execution_id, pids.runner)
    matrix.add(path="K5", vendor=vendor, mode="running", cancels=cancels, state=ti["state"],
               latency=cancel["ts"] - killed_at, result="pass" if cancels == 1 else "FAIL")
    assert cancels == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_cancelled_remotely_fails_without_retry(stack, emu_client, runs, matrix, vendor):
    """K11: someone else cancels the execution: the task fails at once (retries=2 are not used), saying so."""
    dag_id, run_id, task_id = f"e2e_{vendor}", runs(vendor), "k11_remote_cancel"
    ti = stack.wait_ti(dag_id, run_id, task_id, {"failed"}, timeout=FINISH_DEADLINE,
                       fail_states={"success", "up_for_retry"})
    execution_id = stack.xcom(dag_id, run_id, task_id, key="execution_id")
    cancels = len(emu_client.cancels(execution_id))
    log = stack.task_log(dag_id, run_id, task_id, ti["try_number"])
    matrix.add(path="K11", vendor=vendor, mode="running", cancels=cancels, state=ti["state"], latency=None,
               result="pass" if ti["try_number"] == 1 and cancels == 0 else "FAIL")
    assert ti["try_number"] == 1
    assert cancels == 0
    assert "cancelled outside this task" in log
