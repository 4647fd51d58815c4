"""D1-D5: the faults only a distributed Airflow has, on the CELERY topology (two Celery workers, two triggerers, two
schedulers; tests/e2e/topology.py). Run with ``E2E_TOPOLOGY=celery`` (scripts/test-distributed.sh).

Each row runs all five vendors at once in its own DAG (dags/e2e_kill_paths.py, DISTRIBUTED) and ends by bringing
back every component it stopped or killed, so the next row (and the K matrix on the same stack) starts whole.
The emulator's journal is the witness: cancels per execution, creates per task (one execution per task, however
many tries), and the task's final state. Thresholds of the stack: docs/kill-paths.md, "Distributed Airflow".
"""

from __future__ import annotations

import signal

import pytest

from .airflow_stack import pid_alive
from .conftest import HEARTBEAT_TIMEOUT, TOPOLOGY, VENDORS, now

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.distributed,
    pytest.mark.skipif(not TOPOLOGY.celery, reason="the D rows need the CELERY topology (E2E_TOPOLOGY=celery)"),
]

DEADLINE = 300  # s for any one wait; Airflow needs far less, the rest is a loaded 2-core machine's margin
# [triggerer] triggerer_health_check_threshold of the stack (default 30 s): how long a silent triggerer's
# triggers stay with it before another triggerer takes them.
HEALTH_THRESHOLD = 30


def start_row(stack, emu, row: str) -> tuple[str, dict[str, str]]:
    """Trigger the row's DAG; wait until every task recorded its execution and it was polled. Returns the run id
    and the execution id per vendor."""
    dag_id = f"e2e_{row[:2]}"
    stack.wait_dag(dag_id, timeout=180)
    run_id = stack.trigger(dag_id)
    ids = {}
    for vendor in VENDORS:
        task_id = f"{row}_{vendor}"
        ids[vendor] = stack.wait_until(lambda t=task_id: stack.xcom(dag_id, run_id, t, key="execution_id"),
                                       timeout=DEADLINE, message=f"{task_id} recorded its execution id")
    stack.wait_until(lambda: all(emu.journal(action="status", execution_id=e) for e in ids.values()),
                     timeout=DEADLINE, message=f"every {row} execution polled")
    return run_id, ids


def settle(stack, emu, execution_id: str, runner_pid: int | None = None) -> int:
    """Cancels seen once nothing that could still send one is alive (the killed task process); a late duplicate
    would be counted."""
    if runner_pid:
        stack.wait_until(lambda: not pid_alive(runner_pid), timeout=60, message=f"task process {runner_pid} gone")
    return len(emu.cancels(execution_id))


def polled_since(emu, execution_ids, since: float) -> bool:
    return all(any(e["ts"] > since for e in emu.journal(action="status", execution_id=eid)) for eid in execution_ids)


def triggerer_holding(stack, dag_id: str, run_id: str) -> dict[str, int]:
    """Triggers of the run's deferred tasks per triggerer component ({"triggerer-1": 3, ...})."""
    rows = stack.sql(
        "select t.triggerer_id, count(*) from trigger t join task_instance ti on ti.trigger_id = t.id "
        "where ti.dag_id = %s and ti.run_id = %s and t.triggerer_id is not null group by t.triggerer_id",
        dag_id, run_id)
    by_job = {job: name for name, job in stack.triggerer_job_ids.items()}
    return {by_job.get(job, f"job {job}"): count for job, count in rows}


def record(matrix, path: str, mode: str, vendor: str, cancels: int, state: str, ok: bool) -> None:
    matrix.add(path=path, vendor=vendor, mode=mode, cancels=cancels, state=state, latency=None,
               result="pass" if ok else "FAIL")


def test_d1_a_triggerer_that_stalls_and_comes_back_cancels_nothing(stack, emu_client, matrix):
    """SIGSTOP the triggerer that holds the run's triggers past the health threshold: the other triggerer takes
    them over. SIGCONT: on Airflow 3.3.0-3.3.2 the recovered triggerer calls on_kill for every trigger it lost
    (apache/airflow#73454); the trigger checks the task is still deferred and cancels nothing. Every task then
    ends with its real outcome (success)."""
    run_id, ids = start_row(stack, emu_client, "d1_stall")
    held = stack.wait_until(lambda: (h := triggerer_holding(stack, "e2e_d1", run_id)) and sum(h.values()) == len(ids)
                            and h, timeout=DEADLINE, message="every trigger of the run assigned")
    stalled = max(held, key=held.__getitem__)
    other = next(name for name in stack.triggerer_job_ids if name != stalled)
    for pid in stack.kill_component(stalled, signal.SIGSTOP):
        assert pid_alive(pid)
    stopped_at = now()
    try:
        stack.wait_until(lambda: triggerer_holding(stack, "e2e_d1", run_id).get(other) == sum(held.values()),
                         timeout=HEALTH_THRESHOLD + DEADLINE, message=f"{other} holding every trigger")
        taken_over_at = now()
        stack.wait_until(lambda: polled_since(emu_client, ids.values(), taken_over_at), timeout=DEADLINE,
                         message=f"{other} polling")
    finally:
        stack.kill_component(stalled, signal.SIGCONT)
    resumed_at = now()
    assert resumed_at - stopped_at > HEALTH_THRESHOLD - 5  # from its last heartbeat, up to 1-2 s before the stop
    # The resumed triggerer finds its triggers gone: 3.3.0-3.3.2 call on_kill ("cancelled by user action"),
    # 3.4 drops them without it. Wait for either in the triggers' logs, so the row proves what it did (seen on
    # 3.3.2: "Trigger cancelled by user action, invoking on_kill" for each, ~1 s after the SIGCONT).
    trigger_logs = stack.home / "logs" / "dag_id=e2e_d1"

    def said() -> str | None:
        text = "".join(f.read_text(errors="replace") for f in trigger_logs.rglob("*.trigger.*.log"))
        return next((words for words in ("invoking on_kill", "without on_kill") if words in text), None)

    dropped = stack.wait_until(said, timeout=DEADLINE, message=f"{stalled} dropping the triggers it lost")
    for vendor, execution_id in ids.items():
        ti = stack.wait_ti("e2e_d1", run_id, f"d1_stall_{vendor}", {"success"}, timeout=DEADLINE,
                           fail_states={"failed"})
        state = emu_client.execution(execution_id)["state"]
        cancels = len(emu_client.cancels(execution_id))
        ok = cancels == 0 and state == "succeeded" and ti["try_number"] == 1
        record(matrix, "D1", f"a triggerer stalls past the health threshold, comes back (it said {dropped!r})",
               vendor, cancels, ti["state"], ok)
        assert ok, (vendor, execution_id, cancels, state, ti)
    if not pid_alive(stack.components[stalled]):  # a resumed triggerer may end itself: bring it back whole
        stack.start_component(stalled)
    stack.wait_until(lambda: len(stack.triggerer_jobs()) >= 2, timeout=DEADLINE, message="two triggerers alive")


def test_d2_a_triggerer_killed_hands_over_and_a_later_kill_still_cancels_once(stack, emu_client, matrix):
    run_id, ids = start_row(stack, emu_client, "d2_trigkill")
    held = stack.wait_until(lambda: (h := triggerer_holding(stack, "e2e_d2", run_id)) and sum(h.values()) == len(ids)
                            and h, timeout=DEADLINE, message="every trigger of the run assigned")
    killed = max(held, key=held.__getitem__)
    other = next(name for name in stack.triggerer_job_ids if name != killed)
    stack.kill_component(killed)
    stack.wait_until(lambda: triggerer_holding(stack, "e2e_d2", run_id).get(other) == sum(held.values()),
                     timeout=HEALTH_THRESHOLD + DEADLINE, message=f"{other} holding every trigger")
    taken_over_at = now()
    stack.wait_until(lambda: polled_since(emu_client, ids.values(), taken_over_at), timeout=DEADLINE,
                     message=f"{other} polling")
    assert all(emu_client.cancels(e) == [] for e in ids.values())  # a hand-over cancels nothing
    killed_at = {}
    for vendor in VENDORS:
        stack.set_ti_state("e2e_d2", run_id, f"d2_trigkill_{vendor}", "failed")
        killed_at[vendor] = now()
    for vendor, execution_id in ids.items():
        stack.wait_until(lambda e=execution_id: emu_client.cancels(e), timeout=DEADLINE,
                         message=f"a cancel of {execution_id}")
        cancels = len(emu_client.cancels(execution_id))
        ti = stack.ti("e2e_d2", run_id, f"d2_trigkill_{vendor}")
        ok = cancels == 1 and ti["state"] == "failed"
        record(matrix, "D2", "a triggerer SIGKILLed, the other takes over; then marked failed", vendor, cancels,
               ti["state"], ok)
        assert ok, (vendor, execution_id, cancels, ti)
    stack.start_component(killed)


def test_d3_a_warm_worker_shutdown_lets_tasks_finish_and_a_hard_stop_after_it_is_adopted(stack, emu_client, matrix):
    """SIGTERM to both workers' main processes (Celery's warm shutdown: no new tasks, running ones go on): the
    short tasks run to success, uncancelled. Then, as a container platform does after its grace period, every
    process left of the workers is SIGKILLed: the long tasks' tries are failed by the heartbeat timeout and
    their retries, on the restarted workers, adopt the executions (one execution each); marked failed, each is
    cancelled once."""
    run_id, ids = start_row_pair(stack, emu_client)
    workers = [name for name in stack.components if name.startswith("worker-")]
    for name in workers:
        stack.signal_component(name, signal.SIGTERM)
    for vendor in VENDORS:
        execution_id = ids[f"d3_warm_{vendor}"]
        ti = stack.wait_ti("e2e_d3", run_id, f"d3_warm_{vendor}", {"success"}, timeout=DEADLINE,
                           fail_states={"failed", "up_for_retry"})
        cancels = len(emu_client.cancels(execution_id))
        state = emu_client.execution(execution_id)["state"]
        ok = cancels == 0 and state == "succeeded"
        record(matrix, "D3", "warm shutdown of the workers (SIGTERM): the task finishes", vendor, cancels,
               ti["state"], ok)
        assert ok, (vendor, execution_id, cancels, state)
    assert all(emu_client.cancels(ids[f"d3_grace_{v}"]) == [] for v in VENDORS)  # still running, uncancelled
    for name in workers:  # the platform's grace period is over
        stack.kill_component(name)
    for name in workers:
        stack.start_component(name)
    check_adopted_then_cancelled(stack, emu_client, matrix, "e2e_d3", run_id, "d3_grace", ids, VENDORS, "D3",
                                 "warm shutdown, then SIGKILL after the grace: the retry adopts")


def start_row_pair(stack, emu):
    """D3's two kinds of task in one run: ids keyed by task id."""
    dag_id = "e2e_d3"
    stack.wait_dag(dag_id, timeout=180)
    run_id = stack.trigger(dag_id)
    ids = {}
    for kind in ("d3_warm", "d3_grace"):
        for vendor in VENDORS:
            task_id = f"{kind}_{vendor}"
            ids[task_id] = stack.wait_until(lambda t=task_id: stack.xcom(dag_id, run_id, t, key="execution_id"),
                                            timeout=DEADLINE, message=f"{task_id} recorded its execution id")
    stack.wait_until(lambda: all(emu.journal(action="status", execution_id=e) for e in ids.values()),
                     timeout=DEADLINE, message="every d3 execution polled")
    return run_id, ids


def check_adopted_then_cancelled(stack, emu, matrix, dag_id, run_id, kind, ids, vendors, path, mode) -> None:
    """Each `kind` task's second try runs, adopts its first try's execution (it says "reattaching", records the
    same id, polls it), and marked failed cancels it once."""
    for vendor in vendors:
        task_id = f"{kind}_{vendor}"
        execution_id = ids[task_id]
        stack.wait_ti(dag_id, run_id, task_id, {"running"}, min_try=2, timeout=HEARTBEAT_TIMEOUT + DEADLINE,
                      fail_states={"failed", "success"})
        stack.wait_until(lambda t=task_id: "reattaching" in stack.task_log(dag_id, run_id, t, 2), timeout=DEADLINE,
                         message=f"try 2 of {task_id} reattaching")
        since = now()
        stack.wait_until(lambda e=execution_id, t=since: polled_since(emu, [e], t), timeout=DEADLINE,
                         message=f"try 2 of {task_id} polling {execution_id}")
        uncancelled = emu.cancels(execution_id) == []
        runner = stack.wait_task_pids(dag_id, run_id, task_id, timeout=DEADLINE).runner
        stack.set_ti_state(dag_id, run_id, task_id, "failed")
        stack.wait_until(lambda e=execution_id: emu.cancels(e), timeout=DEADLINE, message=f"a cancel of {execution_id}")
        cancels = settle(stack, emu, execution_id, runner)
        ti = stack.ti(dag_id, run_id, task_id)
        adopted = stack.xcom(dag_id, run_id, task_id, key="execution_id") == execution_id
        ok = uncancelled and cancels == 1 and adopted and ti["try_number"] == 2 and ti["state"] == "failed"
        record(matrix, path, mode, vendor, cancels, ti["state"], ok)
        assert ok, (vendor, execution_id, uncancelled, cancels, adopted, ti)


def test_d4_a_lost_worker_leaves_one_execution_that_the_retry_adopts(stack, emu_client, matrix):
    """Every process of the worker running a task SIGKILLed at once (the task runner leads its own process group,
    so a group kill would leave it running): the heartbeat timeout fails the try, the retry runs on the other
    worker and adopts the execution: never two executions, never two pollers; marked failed, cancelled once.
    The tasks of a row may sit on both workers: the worker of each is lost in turn (the first restarted before
    the second goes, so each retry has a worker)."""
    run_id, ids = start_row(stack, emu_client, "d4_lost")
    left = set(VENDORS)
    while left:
        vendor = sorted(left)[0]
        pids = stack.wait_task_pids("e2e_d4", run_id, f"d4_lost_{vendor}", timeout=DEADLINE)
        worker = stack.component_of(pids.runner)
        assert worker and worker.startswith("worker-"), (pids, worker)
        lost = {v for v in left
                if stack.component_of(stack.wait_task_pids("e2e_d4", run_id, f"d4_lost_{v}").runner) == worker}
        stack.kill_component(worker)
        stack.start_component(worker)  # the machine comes back; the retries may run on it or the other
        check_adopted_then_cancelled(stack, emu_client, matrix, "e2e_d4", run_id, "d4_lost",
                                     {f"d4_lost_{v}": ids[v] for v in lost}, sorted(lost), "D4",
                                     "every process of its worker SIGKILLed: the retry adopts")
        left -= lost


def test_d5_a_scheduler_killed_the_other_schedules_and_kills_still_cancel(stack, emu_client, matrix):
    stack.kill_component("scheduler-1")
    try:
        run_id, ids = start_row(stack, emu_client, "d5_sched")  # scheduled by scheduler-2 alone
        runners = {v: stack.wait_task_pids("e2e_d5", run_id, f"d5_sched_{v}", timeout=DEADLINE).runner
                   for v in VENDORS}
        for vendor in VENDORS:
            stack.set_ti_state("e2e_d5", run_id, f"d5_sched_{vendor}", "failed")
        for vendor, execution_id in ids.items():
            stack.wait_until(lambda e=execution_id: emu_client.cancels(e), timeout=DEADLINE,
                             message=f"a cancel of {execution_id}")
            ti = stack.wait_ti("e2e_d5", run_id, f"d5_sched_{vendor}", {"failed"}, timeout=DEADLINE)
            cancels = settle(stack, emu_client, execution_id, runners[vendor])
            ok = cancels == 1
            record(matrix, "D5", "a scheduler SIGKILLed: the other schedules, mark failed cancels", vendor,
                   cancels, ti["state"], ok)
            assert ok, (vendor, execution_id, cancels)
    finally:
        stack.start_component("scheduler-1")


def test_d6_a_redelivered_message_starts_no_second_execution(stack, emu_client, matrix):
    """Celery acknowledges a task's message when it ends (task_acks_late); Redis hands an unacknowledged one to a
    worker again after the visibility timeout (REDELIVERY_SECONDS on this stack). A 70 s task is redelivered
    while it runs: the duplicate must start nothing (Airflow 3.3's run refuses a running task instance, and the
    celery provider drops the message), so each task creates one execution, is never cancelled, and succeeds."""
    before = {r["id"] for r in emu_client.executions()}
    logs = [stack.component_log(n) for n in stack.components if n.startswith("worker-")]
    said = "ignoring redelivered message"
    redelivered_before = sum(log.read_text(errors="replace").count(said) for log in logs)
    run_id, ids = start_row(stack, emu_client, "d6_redeliver")
    for vendor, execution_id in ids.items():
        ti = stack.wait_ti("e2e_d6", run_id, f"d6_redeliver_{vendor}", {"success"}, timeout=DEADLINE,
                           fail_states={"failed", "up_for_retry"})
        cancels = len(emu_client.cancels(execution_id))
        ok = cancels == 0 and ti["try_number"] == 1 and emu_client.execution(execution_id)["state"] == "succeeded"
        record(matrix, "D6", "its Celery message redelivered while it runs", vendor, cancels, ti["state"], ok)
        assert ok, (vendor, execution_id, cancels, ti)
    created = [r["id"] for r in emu_client.executions() if r["id"] not in before]
    assert sorted(created) == sorted(ids.values())  # one execution per task: the duplicates started nothing
    redelivered = sum(log.read_text(errors="replace").count(said) for log in logs) - redelivered_before
    assert redelivered >= len(ids), f"only {redelivered} redeliveries seen: the row did not test one per task"
