"""The kill-path contract on a real Airflow 3.3 (scheduler, triggerer, dag-processor, api-server), every vendor.

Each DAG run holds one task per kill path; all runs start together, so every scenario runs concurrently in one
stack. Kills go through the REST API as the UI sends them. The emulator's journal is the witness: exactly one
cancel for the task's execution (none for a success), and the task's final state.
"""

from __future__ import annotations

import pytest

from .airflow_stack import pid_alive
from .conftest import SWEEP_GRACE, VENDORS, now

pytestmark = pytest.mark.e2e

DAGRUN_TIMEOUT_DAG = "_dagrun_timeout"
TASK_TIMEOUT, RUN_TIMEOUT = 45, 60  # s: execution_timeout and dagrun_timeout in dags/e2e_kill_paths.py
KILL_DEADLINE = 90  # s from a kill to its cancel; Airflow needs ~1-5 s, the rest is a slow-machine margin
FINISH_DEADLINE = 240


@pytest.fixture(scope="module")
def runs(stack):
    """The vendor's DAG runs (kill paths, and K10's DAG with a run timeout), started together on first use:
    vendors go in waves, which a 2-core machine with SQLite sustains (all thirty DAG runs at once starve the
    Execution API)."""
    started: dict[str, str] = {}

    def run_of(vendor: str, dag: str = "") -> str:
        if vendor not in started:
            for suffix in ("", DAGRUN_TIMEOUT_DAG):
                stack.wait_dag(f"e2e_{vendor}{suffix}", timeout=180)
            for suffix in ("", DAGRUN_TIMEOUT_DAG):
                started[vendor + suffix] = stack.trigger(f"e2e_{vendor}{suffix}")
        return started[vendor + dag]

    return run_of


def execution_of(stack, emu, vendor: str, run_id: str, task_id: str, *, polled: bool = True, dag: str = "",
                 since: float = 0) -> str:
    """The execution id the task recorded in XCom (once the emulator has seen it polled after `since`, if
    `polled`: for a deferred task, a poll after it was seen deferred comes from its running trigger)."""
    dag_id = f"e2e_{vendor}{dag}"
    execution_id = stack.wait_until(
        lambda: stack.xcom(dag_id, run_id, task_id, key="execution_id"),
        timeout=FINISH_DEADLINE,
        message=f"{dag_id}.{task_id} recorded its execution id",
    )
    if not polled:
        return execution_id
    stack.wait_until(
        lambda: [e for e in emu.journal(action="status", execution_id=execution_id) if e["ts"] > since],
        timeout=FINISH_DEADLINE,
        message=f"a status poll of {execution_id}",
    )
    return execution_id


def live(stack, emu, vendor: str, run_id: str, task_id: str, state: str) -> str:
    """Wait until the task is `state` (running or deferred) and its execution is being watched there: a kill
    of a deferred task before the triggerer has started its trigger reaches no code (see docs/kill-paths.md)."""
    stack.wait_ti(f"e2e_{vendor}", run_id, task_id, {state}, timeout=FINISH_DEADLINE)
    return execution_of(stack, emu, vendor, run_id, task_id, since=now() if state == "deferred" else 0)


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
    execution_id = live(stack, emu_client, vendor, run_id, task_id, live_state)
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
        latency=cancels[0]["ts"] - (started + TASK_TIMEOUT),
        result="pass" if count == 1 else "FAIL",
    )
    assert count == 1
    # Cancelled at the deadline (TASK_TIMEOUT after the start), not long after it.
    assert cancels[0]["ts"] - started < TASK_TIMEOUT + KILL_DEADLINE


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
    execution_id = live(stack, emu_client, vendor, run_id, task_id, live_state)
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


def created_at(emu, execution_id: str) -> float:
    return emu.journal(action="create", execution_id=execution_id)[0]["ts"]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("task_id", "live_state"), [("k3_sync_clear", "running"), ("k3_defer_clear", "deferred")])
def test_clear_cancels_once_and_the_new_try_never_overlaps(stack, emu_client, runs, matrix, vendor, task_id,
                                                           live_state):
    """K3: "Clear" on a live task: its execution is cancelled once; the new try starts its own execution only
    once the old one has ended (a deferred trigger's on_kill can race the new try's start: the new try then
    reattaches, sees the cancel land, and starts afresh)."""
    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    first = live(stack, emu_client, vendor, run_id, task_id, live_state)
    runner = stack.wait_task_pids(dag_id, run_id, task_id).runner if live_state == "running" else None
    killed_at = now()
    stack.clear_ti(dag_id, run_id, task_id)
    cancel = stack.wait_until(lambda: emu_client.cancels(first), timeout=KILL_DEADLINE,
                              message=f"a cancel of {first}")[0]
    second = stack.wait_until(
        # B3OS records the id it chooses before the create is sent: count it once the create has arrived
        lambda: (eid := stack.xcom(dag_id, run_id, task_id, key="execution_id")) not in (None, first)
        and emu_client.journal(action="create", execution_id=eid) and eid,
        timeout=FINISH_DEADLINE, message="the new try's own execution",
    )
    cancels = settle(stack, emu_client, first, runner)
    stopped = emu_client.execution(first)
    overlap = created_at(emu_client, second) < stopped["finished_at"]
    ti = stack.wait_ti(dag_id, run_id, task_id, {live_state}, timeout=FINISH_DEADLINE)
    matrix.add(path="K3", vendor=vendor, mode=live_state, cancels=cancels,
               state=f"{ti['state']} (try {ti['try_number']})", latency=cancel["ts"] - killed_at,
               result="pass" if cancels == 1 and not overlap else "FAIL")
    assert cancels == 1 and stopped["state"] == "cancelled"
    assert not overlap, "the new try created its execution while the old one was still live"
    assert ti["try_number"] == 2
    # End the new try once it watches its execution (a kill before the triggerer has started the trigger
    # reaches no code at all: see docs/kill-paths.md); its own execution is cancelled too.
    assert live(stack, emu_client, vendor, run_id, task_id, live_state) == second
    stack.set_ti_state(dag_id, run_id, task_id, "failed")
    stack.wait_until(lambda: emu_client.cancels(second), timeout=KILL_DEADLINE, message=f"a cancel of {second}")


@pytest.mark.parametrize("vendor", VENDORS)
def test_crashed_trigger_cancels_through_fail(stack, emu_client, runs, matrix, vendor):
    """K8: the trigger crashes (its hook class cannot be imported in the triggerer): the task resumes with
    ``__fail__`` on a worker, which cancels the recorded execution, and fails.

    Airflow may also fail the task without ever resuming it (its deferral race, docs/kill-paths.md N6: the crash
    reached the scheduler before the deferring worker's exit did; the trigger's 3 s hold makes it rare, a loaded
    machine can still lose it). Then the orphan sweep owes the cancel, within its grace and interval; either way
    exactly one cancel must reach the API, and the matrix says which path sent it."""
    dag_id, run_id, task_id = f"e2e_{vendor}", runs(vendor), "k8_trigger_crash"
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id, polled=False)
    ti = stack.wait_ti(dag_id, run_id, task_id, {"failed"}, timeout=FINISH_DEADLINE, fail_states={"success"})
    cancels = stack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE + SWEEP_GRACE,
                               message=f"a cancel of {execution_id}")
    count = settle(stack, emu_client, execution_id)
    log = stack.task_log(dag_id, run_id, task_id, ti["try_number"])
    resumed = "the trigger failed or timed out" in log
    matrix.add(path="K8", vendor=vendor, mode="deferred" if resumed else "deferred, failed unresumed (N6): the sweep",
               cancels=count, state=ti["state"], latency=None, result="pass" if count == 1 else "FAIL")
    assert count == 1 and cancels[0]["status_code"] == 200
    if resumed:  # then the resumed task sent it, not the sweep
        assert f"{execution_id}: the trigger failed or timed out" in log, log[-3000:]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("task_id", "policy"), [("k9_sigkill_reattach", "reattach"), ("k9_sigkill_cancel", "cancel")])
def test_hard_killed_worker_next_try_applies_the_policy(stack, emu_client, runs, matrix, vendor, task_id, policy):
    """K9: SIGKILL to the task process (no on_kill can run). The retry finds the execution recorded before
    polling: "reattach" watches it (no second start), "cancel" cancels it and starts afresh once it ended.
    Either way the new try owns what runs: marking it failed cancels that."""
    import os
    import signal

    dag_id, run_id = f"e2e_{vendor}", runs(vendor)
    stack.wait_ti(dag_id, run_id, task_id, {"running"}, timeout=FINISH_DEADLINE)
    first = execution_of(stack, emu_client, vendor, run_id, task_id)
    os.kill(stack.wait_task_pids(dag_id, run_id, task_id).runner, signal.SIGKILL)
    stack.wait_ti(dag_id, run_id, task_id, {"running"}, timeout=FINISH_DEADLINE, min_try=2, fail_states={"failed"})
    adopted_or_new = stack.wait_until(
        lambda: (eid := stack.xcom(dag_id, run_id, task_id, key="execution_id"))
        and emu_client.journal(action="status", execution_id=eid, since=0) and eid,
        timeout=FINISH_DEADLINE, message="the new try watching an execution",
    )
    if policy == "cancel":  # the orphan first ends, then the new one starts
        adopted_or_new = stack.wait_until(
            lambda: (eid := stack.xcom(dag_id, run_id, task_id, key="execution_id")) != first and eid
            and emu_client.journal(action="create", execution_id=eid) and eid,
            timeout=FINISH_DEADLINE, message="the new try's own execution",
        )
    orphan_cancels = len(emu_client.cancels(first))
    overlap = policy == "cancel" and created_at(emu_client, adopted_or_new) < emu_client.execution(first)[
        "finished_at"]
    said = "reattaching" if policy == "reattach" else "cancelling it before starting afresh"
    stack.wait_until(lambda: said in stack.task_log(dag_id, run_id, task_id, 2), timeout=FINISH_DEADLINE,
                     message=f"try 2 of {task_id} saying {said!r}")  # XCom can still be try 1's: wait for the log
    stack.set_ti_state(dag_id, run_id, task_id, "failed")  # the new try owns what runs now
    owned = stack.wait_until(lambda: emu_client.cancels(adopted_or_new), timeout=KILL_DEADLINE,
                             message=f"a cancel of {adopted_or_new}")
    if policy == "reattach":
        ok = adopted_or_new == first and len(owned) == 1
    else:
        ok = adopted_or_new != first and orphan_cancels == 1 and not overlap and len(owned) == 1
    matrix.add(path="K9", vendor=vendor, mode=f"running, on_existing={policy}",
               cancels=orphan_cancels if policy == "cancel" else 0, state="running (try 2)", latency=None,
               result="pass" if ok else "FAIL")
    assert ok, (first, adopted_or_new, orphan_cancels, overlap, owned)


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("task_id", "live_state"), [("k10_sync", "running"), ("k10_defer", "deferred")])
def test_dag_run_timeout_cancels_once(stack, emu_client, runs, matrix, vendor, task_id, live_state):
    """K10: the DAG run's dagrun_timeout passes: the scheduler marks the task skipped, which kills it."""
    dag_id, run_id = f"e2e_{vendor}{DAGRUN_TIMEOUT_DAG}", runs(vendor, DAGRUN_TIMEOUT_DAG)
    execution_id = execution_of(stack, emu_client, vendor, run_id, task_id, polled=False, dag=DAGRUN_TIMEOUT_DAG)
    ti = stack.wait_ti(dag_id, run_id, task_id, {"skipped", "failed"}, timeout=FINISH_DEADLINE,
                       fail_states={"success"})
    cancels = stack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                               message=f"a cancel of {execution_id}")
    count = settle(stack, emu_client, execution_id)
    run = stack.dag_run(dag_id, run_id)
    from datetime import datetime

    timed_out_at = datetime.fromisoformat(run["start_date"].replace("Z", "+00:00")).timestamp() + RUN_TIMEOUT
    matrix.add(path="K10", vendor=vendor, mode=live_state, cancels=count, state=ti["state"],
               latency=cancels[0]["ts"] - timed_out_at, result="pass" if count == 1 else "FAIL")
    assert count == 1
    assert run["state"] == "failed"
