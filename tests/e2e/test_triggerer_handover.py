"""K12 on a real Airflow 3.3: the triggerer restarts, then a second triggerer takes over, while five deferred
executions (one per vendor) run. Nothing may be cancelled; polling resumes; every task ends with the real outcome.

K8 (backstop) in the same run: while no triggerer runs, nothing watches the deferred `k8_backstop_*` tasks; the
scheduler's defer timeout (their deadline + a 1 s `defer_backstop`) resumes them on a worker with ``__fail__``,
which cancels the recorded execution.
"""

from __future__ import annotations

import os
import signal

import pytest

from .airflow_stack import pid_alive
from .conftest import VENDORS, now

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_handover"
DEADLINE = 300


def polled_since(emu, execution_ids: dict[str, str], since: float) -> bool:
    return all(
        any(e["ts"] > since for e in emu.journal(action="status", execution_id=eid)) for eid in execution_ids.values()
    )


def test_triggerer_restart_and_takeover_cancel_nothing(stack, emu_client, matrix):
    stack.wait_dag(DAG_ID, timeout=180)
    run_id = stack.trigger(DAG_ID)
    ids: dict[str, str] = {}
    for vendor in VENDORS:
        task_id = f"k12_{vendor}"
        stack.wait_ti(DAG_ID, run_id, task_id, {"deferred"}, timeout=DEADLINE, fail_states={"failed", "success"})
        ids[vendor] = stack.wait_until(lambda t=task_id: stack.xcom(DAG_ID, run_id, t, key="execution_id"),
                                       timeout=DEADLINE, message=f"{task_id} recorded its execution id")
    backstops = {vendor: stack.wait_until(
        lambda v=vendor: stack.xcom(DAG_ID, run_id, f"k8_backstop_{v}", key="execution_id"), timeout=DEADLINE,
        message=f"k8_backstop_{vendor} recorded its execution id") for vendor in VENDORS}
    stack.wait_until(lambda: polled_since(emu_client, {**ids, **backstops}, 0), timeout=DEADLINE,
                     message="every execution polled")
    backstop_tis: dict[str, dict] = {}

    def backstops_fire() -> None:
        """No triggerer: only the scheduler's defer timeout can end the backstop tasks (deadline 45 s + 1 s)."""
        for vendor in VENDORS:
            backstop_tis[vendor] = stack.wait_ti(DAG_ID, run_id, f"k8_backstop_{vendor}", {"failed"},
                                                 timeout=DEADLINE, fail_states={"success"})

    restarted_at = now()
    # graceful: its triggers are re-assigned at once to the new triggerer
    triggerer = stack.restart_triggerer(signal.SIGTERM, while_down=backstops_fire)
    stack.wait_until(lambda: polled_since(emu_client, ids, restarted_at), timeout=DEADLINE,
                     message="polling resumed on the restarted triggerer")

    stack.start_extra_triggerer()
    taken_over_at = now()
    os.kill(triggerer, signal.SIGTERM)  # the second triggerer takes the triggers over
    stack.wait_until(lambda: not pid_alive(triggerer), timeout=120, message="the first triggerer stopped")
    stack.wait_until(lambda: polled_since(emu_client, ids, taken_over_at), timeout=DEADLINE,
                     message="polling resumed on the second triggerer")

    for vendor, execution_id in backstops.items():
        ti = backstop_tis[vendor]
        count = len(emu_client.cancels(execution_id))
        log = stack.task_log(DAG_ID, run_id, f"k8_backstop_{vendor}", ti["try_number"])
        resumed = "the trigger failed or timed out" in log
        matrix.add(path="K8", vendor=vendor, mode="deferred, defer timeout backstop (no triggerer)", cancels=count,
                   state=ti["state"], latency=None, result="pass" if count == 1 and resumed else "FAIL")
        assert count == 1 and resumed, (execution_id, count, log[-2000:])

    for vendor, execution_id in ids.items():
        ti = stack.wait_ti(DAG_ID, run_id, f"k12_{vendor}", {"success"}, timeout=DEADLINE, fail_states={"failed"})
        record = emu_client.execution(execution_id)
        cancels = len(emu_client.cancels(execution_id))
        lived_through = record["finished_at"] > taken_over_at  # both handovers happened while it ran
        for mode in ("deferred, triggerer restart", "deferred, second triggerer takes over"):
            matrix.add(path="K12", vendor=vendor, mode=mode, cancels=cancels, state=ti["state"], latency=None,
                       result="pass" if cancels == 0 and lived_through and ti["try_number"] == 1 else "FAIL")
        assert cancels == 0
        assert record["state"] == "succeeded" and lived_through
        assert ti["try_number"] == 1
