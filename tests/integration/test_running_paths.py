"""A running (not deferred) task's kill paths on all five vendors, over real HTTP against the emulator.

A kill while polling cancels once and the task never succeeds (K1, K5); Airflow's own execution_timeout (SIGALRM,
then on_kill) cancels once (K4); an API error that is not transient cancels before failing; with
``cancel_on_kill=False`` nothing is ever cancelled. The emulator's journal is the witness.
"""

from __future__ import annotations

import sys
import threading
import uuid

import pytest

from airflow_provider_cancel.core.errors import ExecutionApiError, ExecutionKilled
from airflow_provider_cancel.emulator.testing import wait_for
from tests.airflow_compat import AirflowTaskTimeout, airflow_timeout

from .conftest import VENDORS, FakeStore, FakeTI, in_thread, make_context
from .vendor_ops import scenario_operator

pytestmark = pytest.mark.parametrize("vendor", VENDORS)


def running_task(vendor: str, scenario: str = "forever", **kw):
    """The vendor's operator, waiting in the worker, under a task id of its own (B3OS and izieroma derive their
    idempotency keys from it), and the context of its first try."""
    task_id = f"running-{uuid.uuid4().hex[:8]}"
    task = scenario_operator(vendor, scenario, task_id=task_id, deferrable=False, **kw)
    return task, make_context(FakeTI(task_id), FakeStore())


def test_on_kill_while_polling_cancels_once_and_the_task_does_not_succeed(emu, vendor):
    task, context = running_task(vendor)
    worker, outcome = in_thread(task, context)
    wait_for(lambda: task.execution_id and emu.journal(action="status", execution_id=task.execution_id), 20)
    task.on_kill()
    task.on_kill()  # Airflow can call it twice (SIGTERM, then the timeout path): still one cancel
    worker.join(20)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), ExecutionKilled), outcome
    assert len(emu.cancels(task.execution_id)) == 1
    assert emu.execution(task.execution_id)["state"] in ("cancelled", "cancelling")


def test_two_kills_at_the_same_instant_send_one_cancel(emu, vendor):
    """Two on_kill calls racing (a SIGTERM and the timeout path, from two threads) must not both cancel: the
    once-flag used to be a check-then-set, and 2 of 40 trials sent two. Threads switch as often as the
    interpreter allows here, so that a window between a check and a set is met if there is one."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        races(emu, vendor)
    finally:
        sys.setswitchinterval(previous)


def races(emu, vendor: str) -> None:
    for _ in range(10):
        task, context = running_task(vendor)
        worker, outcome = in_thread(task, context)
        wait_for(lambda t=task: t.execution_id and emu.journal(action="status", execution_id=t.execution_id), 20)
        barrier = threading.Barrier(2)
        kills = [threading.Thread(target=lambda t=task, b=barrier: (b.wait(), t.on_kill())) for _ in range(2)]
        for kill in kills:
            kill.start()
        for kill in (*kills, worker):
            kill.join(20)
        assert isinstance(outcome.get("error"), ExecutionKilled), outcome
        assert len(emu.cancels(task.execution_id)) == 1


def test_execution_timeout_cancels_once_via_airflows_own_timeout_and_on_kill(emu, vendor):
    task, context = running_task(vendor)
    with pytest.raises(AirflowTaskTimeout), airflow_timeout(2):  # SIGALRM, as the task runner does
        task.execute(context)
    task.on_kill()  # what the task runner calls next
    assert len(emu.cancels(task.execution_id)) == 1
    assert emu.execution(task.execution_id)["state"] in ("cancelled", "cancelling")


def test_an_api_error_mid_wait_cancels_before_failing(emu, vendor):
    task, context = running_task(vendor)
    emu.add_fault(vendor=vendor, action="status", kind="403", count=1)  # the key is refused: not transient
    with pytest.raises(ExecutionApiError, match="HTTP 403"):
        task.execute(context)
    assert len(emu.cancels(task.execution_id)) == 1


def test_cancel_on_kill_false_never_cancels(emu, vendor):
    task, context = running_task(vendor, cancel_on_kill=False)
    with pytest.raises(AirflowTaskTimeout), airflow_timeout(1):
        task.execute(context)
    task.on_kill()
    assert emu.cancels(task.execution_id) == []
    task.hook.cancel(task.execution_id)  # tidy up the emulator


def test_a_copied_task_runs_and_cancels_on_its_own(emu, vendor):
    """`airflow dags test` on 3.0 and `DAG.partial_subset` deep-copy every task: the guard's lock and the kill
    flag used to make that fail ("cannot pickle '_thread.lock' object"). The copy runs, and its kill cancels
    once, while the original's guard is left untouched."""
    import copy

    original = scenario_operator(vendor, "forever", task_id="copied", deferrable=False)
    task = copy.deepcopy(original)
    assert task._guard is not original._guard and task._killed is not original._killed
    worker, outcome = in_thread(task, make_context(FakeTI("copied"), FakeStore()))
    wait_for(lambda: task.execution_id and emu.journal(action="status", execution_id=task.execution_id), 20)
    task.on_kill()
    worker.join(20)
    assert isinstance(outcome.get("error"), ExecutionKilled), outcome
    assert len(emu.cancels(task.execution_id)) == 1
    assert original.execution_id is None and not original._killed.is_set()
