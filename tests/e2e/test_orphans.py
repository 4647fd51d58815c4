"""N1-N5 on a real Airflow: the deaths where no code of the provider runs, and the orphan sweep that covers them.

One DAG run (`e2e_orphans`) holds, per vendor, one task per death. The stack runs the sweep every
`SWEEP_INTERVAL` s with a `SWEEP_GRACE` s grace period (conftest.py), and fails a task whose worker stopped
heartbeating after `HEARTBEAT_TIMEOUT` s. The emulator's journal is the witness: exactly one accepted cancel for
each execution, within the bound the path promises (docs/kill-paths.md), the task's final state as the death left
it; with ``cancel_orphans=False`` none. Every other e2e test runs with the same sweep on, so the kill-path matrix
(K3, K9, K12, K13 among them) proves it never cancels an execution a live try owns.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from airflow_provider_cancel.core.ownership import STATE_STORE_KEY

from .airflow_stack import pid_alive
from .conftest import HEARTBEAT_TIMEOUT, SWEEP_GRACE, SWEEP_INTERVAL, VENDORS, now

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_orphans"
DEADLINE = 240
MARGIN = 30  # s over a promised bound: a loaded 2-core machine is slow to notice, never wrong to


def accepted(emu, execution_id: str) -> list[dict]:
    """Cancels the API accepted (a faulted one, refused by the emulator, does not count)."""
    return [c for c in emu.cancels(execution_id) if not c["fault"] and c["status_code"] < 400]


@pytest.fixture(scope="module")
def orphan_run(stack, emu_client):
    """The DAG run, started while no triggerer runs: its deferred N3 tasks defer, nobody starts their triggers,
    and they are marked failed then (the trigger rows are dropped; Airflow calls nothing)."""
    stack.wait_dag(DAG_ID, timeout=180)
    run: dict = {"killed_at": {}, "ids": {}}

    def while_no_triggerer() -> None:
        run["run_id"] = run_id = stack.trigger(DAG_ID)
        for vendor in VENDORS:
            task_id = f"n3_nottrig_{vendor}"
            stack.wait_ti(DAG_ID, run_id, task_id, {"deferred"}, timeout=DEADLINE, fail_states={"failed"})
            run["ids"][task_id] = stack.wait_until(lambda t=task_id: stack.xcom(DAG_ID, run_id, t, key="execution_id"),
                                                   timeout=DEADLINE, message=f"{task_id} recorded its execution")
            run["killed_at"][task_id] = now()
            stack.set_ti_state(DAG_ID, run_id, task_id, "failed")

    stack.restart_triggerer(signal.SIGTERM, while_down=while_no_triggerer)
    return run


def running_execution(stack, emu, run_id: str, task_id: str) -> str:
    stack.wait_ti(DAG_ID, run_id, task_id, {"running"}, timeout=DEADLINE, fail_states={"failed", "success"})
    execution_id = stack.wait_until(lambda: stack.xcom(DAG_ID, run_id, task_id, key="execution_id"),
                                    timeout=DEADLINE, message=f"{task_id} recorded its execution")
    stack.wait_until(lambda: emu.journal(action="status", execution_id=execution_id), timeout=DEADLINE,
                     message=f"a status poll of {execution_id}")
    return execution_id


def recorded(stack, run_id: str, task_id: str) -> bool:
    """Does the task instance still hold its execution record (REST, as the UI's state-store view reads it)?"""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/{STATE_STORE_KEY}"
    return stack.request("GET", path).status_code == 200


def swept(stack, emu, run_id: str, task_id: str, execution_id: str, since: float, bound: float) -> tuple[int, float]:
    """Wait for the accepted cancel (at most `bound` + MARGIN s after `since`) and for the sweep to drop the
    record (after which nothing can cancel again); returns (accepted cancels, seconds from `since` to the first)."""
    first = stack.wait_until(lambda: accepted(emu, execution_id), timeout=bound + MARGIN,
                             message=f"the sweep's cancel of {execution_id}")[0]
    stack.wait_until(lambda: not recorded(stack, run_id, task_id), timeout=3 * SWEEP_INTERVAL + MARGIN,
                     message=f"the sweep dropping the record of {task_id}")
    return len(accepted(emu, execution_id)), first["ts"] - since


def test_n3_deferred_task_killed_before_its_trigger_started(stack, emu_client, orphan_run, matrix):
    for vendor in VENDORS:
        task_id = f"n3_nottrig_{vendor}"
        execution_id = orphan_run["ids"][task_id]
        count, seconds = swept(stack, emu_client, orphan_run["run_id"], task_id, execution_id,
                               orphan_run["killed_at"][task_id], SWEEP_GRACE + SWEEP_INTERVAL)
        state = stack.ti(DAG_ID, orphan_run["run_id"], task_id)["state"]
        matrix.add(path="N3", vendor=vendor, mode="deferred, marked failed before a triggerer started it",
                   cancels=count, state=state, latency=seconds,
                   result="pass" if count == 1 and state == "failed" else "FAIL")
        assert count == 1 and state == "failed"


def test_n4_every_cancel_of_on_kill_refused(stack, emu_client, orphan_run, matrix):
    """The vendor refuses (503) every cancel on_kill sends within its budget; the sweep's, later, lands."""
    run_id = orphan_run["run_id"]
    tasks = {vendor: f"n4_refused_{vendor}" for vendor in VENDORS}
    ids = {vendor: running_execution(stack, emu_client, run_id, task_id) for vendor, task_id in tasks.items()}
    runners = {vendor: stack.wait_task_pids(DAG_ID, run_id, task_id).runner for vendor, task_id in tasks.items()}
    for vendor in VENDORS:
        emu_client.add_fault(vendor=vendor, action="cancel", kind="503", count=50, retry_after=0)
    killed_at = {}
    try:
        for vendor, task_id in tasks.items():
            killed_at[vendor] = now()
            stack.set_ti_state(DAG_ID, run_id, task_id, "failed")
        for vendor in VENDORS:  # on_kill has run and given up: its process is gone
            stack.wait_until(lambda p=runners[vendor]: not pid_alive(p), timeout=90, message="task process gone")
            assert emu_client.cancels(ids[vendor]) and not accepted(emu_client, ids[vendor])
    finally:
        emu_client.clear_faults()
    for vendor, task_id in tasks.items():
        count, seconds = swept(stack, emu_client, run_id, task_id, ids[vendor], killed_at[vendor],
                               SWEEP_GRACE + SWEEP_INTERVAL)
        state = stack.ti(DAG_ID, run_id, task_id)["state"]
        matrix.add(path="N4", vendor=vendor, mode="running, every cancel of on_kill refused (503)", cancels=count,
                   state=state, latency=seconds, result="pass" if count == 1 and state == "failed" else "FAIL")
        assert count == 1 and state == "failed"


def kill_worker(stack, run_id: str, task_id: str) -> None:
    """SIGKILL the task process and its supervisor at once: no provider code can run (a lost node, for Local)."""
    pids = stack.wait_task_pids(DAG_ID, run_id, task_id)
    for pid in (pids.runner, pids.supervisor):
        os.kill(pid, signal.SIGKILL)
    stack.wait_until(lambda: not pid_alive(pids.runner), timeout=30, message="task process gone")


def test_n5_marked_failed_after_its_worker_was_lost(stack, emu_client, orphan_run, matrix):
    run_id = orphan_run["run_id"]
    ids, killed_at = {}, {}
    for vendor in VENDORS:  # all five killed first, then waited for together: the sweep serves them at once
        task_id = f"n5_cutshort_{vendor}"
        ids[vendor] = running_execution(stack, emu_client, run_id, task_id)
        kill_worker(stack, run_id, task_id)
        killed_at[vendor] = now()
        stack.set_ti_state(DAG_ID, run_id, task_id, "failed")
    for vendor in VENDORS:
        task_id = f"n5_cutshort_{vendor}"
        count, seconds = swept(stack, emu_client, run_id, task_id, ids[vendor], killed_at[vendor],
                               SWEEP_GRACE + SWEEP_INTERVAL)
        state = stack.ti(DAG_ID, run_id, task_id)["state"]
        matrix.add(path="N5", vendor=vendor, mode="running, on_kill never ran (SIGKILLed), marked failed",
                   cancels=count, state=state, latency=seconds,
                   result="pass" if count == 1 and state == "failed" else "FAIL")
        assert count == 1 and state == "failed"


def test_n1_task_process_killed_with_no_retry_left(stack, emu_client, orphan_run, matrix):
    run_id = orphan_run["run_id"]
    ids, spared, killed_at = {}, {}, {}
    for vendor in VENDORS:  # all five killed first, then waited for together
        ids[vendor] = running_execution(stack, emu_client, run_id, f"n1_oom_{vendor}")
        spared[vendor] = running_execution(stack, emu_client, run_id, f"n1_off_{vendor}")
        killed_at[vendor] = now()
        for task_id in (f"n1_oom_{vendor}", f"n1_off_{vendor}"):
            os.kill(stack.wait_task_pids(DAG_ID, run_id, task_id).runner, signal.SIGKILL)
    for vendor in VENDORS:
        for task_id in (f"n1_oom_{vendor}", f"n1_off_{vendor}"):
            stack.wait_ti(DAG_ID, run_id, task_id, {"failed"}, timeout=DEADLINE, fail_states={"success"})
        count, seconds = swept(stack, emu_client, run_id, f"n1_oom_{vendor}", ids[vendor], killed_at[vendor],
                               SWEEP_GRACE + SWEEP_INTERVAL)
        kept = spared[vendor]
        left_alone = (emu_client.cancels(kept) == [] and emu_client.execution(kept)["state"] == "running"
                      and recorded(stack, run_id, f"n1_off_{vendor}"))  # looked at, and left as the user asked
        matrix.add(path="N1", vendor=vendor, mode="running, task process SIGKILLed, retries=0", cancels=count,
                   state="failed", latency=seconds, result="pass" if count == 1 else "FAIL")
        matrix.add(path="N1", vendor=vendor, mode="the same with cancel_orphans=False", cancels=len(
            emu_client.cancels(kept)), state="failed", latency=None, result="pass" if left_alone else "FAIL")
        assert count == 1
        assert left_alone, emu_client.cancels(kept)
        emu_client.remote_cancel(kept)  # the user's own clean-up of what they chose to keep


def test_n2_worker_lost_heartbeat_timeout(stack, emu_client, orphan_run, matrix):
    """The whole worker lost (task process and supervisor SIGKILLed): the scheduler fails the task once its
    heartbeat timed out, runs the user's on_failure_callback, and the sweep cancels the execution."""
    run_id = orphan_run["run_id"]
    ids, killed_at = {}, {}
    for vendor in VENDORS:
        task_id = f"n2_lost_{vendor}"
        ids[vendor] = running_execution(stack, emu_client, run_id, task_id)
        kill_worker(stack, run_id, task_id)
        killed_at[vendor] = now()
    for vendor in VENDORS:
        task_id = f"n2_lost_{vendor}"
        bound = HEARTBEAT_TIMEOUT + SWEEP_GRACE + SWEEP_INTERVAL + 15  # + the scheduler's detection interval
        count, seconds = swept(stack, emu_client, run_id, task_id, ids[vendor], killed_at[vendor], bound)
        ti = stack.wait_ti(DAG_ID, run_id, task_id, {"failed"}, timeout=60)
        marker = stack.extra_env["E2E_CALLBACK_MARKERS"] + f"/{DAG_ID}.{task_id}.failed"
        called = stack.wait_until(lambda m=marker: os.path.exists(m), timeout=120, message="the user's callback")
        matrix.add(path="N2", vendor=vendor, mode="running, worker lost (heartbeat timeout), retries=0",
                   cancels=count, state=ti["state"], latency=seconds,
                   result="pass" if count == 1 and called else "FAIL")
        with open(marker) as written:
            assert count == 1 and json.load(written)["try_number"] == 1
