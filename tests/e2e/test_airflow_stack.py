"""Self-test of tests/e2e/airflow_stack.py against a real Airflow 3.3 stack.

One stack and one DAG run (``selftest_dags/selftest_stack.py``) serve every test: all scenarios run
concurrently inside that run, and the tests only act on / observe their own task. The tests are ordered so the
long waits overlap (pytest runs them in file order): the triggerer restart happens first, its deferred task
completes while the other tests run, and the last test stops the stack and checks that nothing survived.
Run: ``python -m pytest tests/e2e/test_airflow_stack.py -q -x``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import airflow_stack
from tests.e2e.airflow_stack import AirflowStack, StackError, pid_alive

pytestmark = pytest.mark.e2e

DAG_ID = "selftest_stack"
RUN_ID = "selftest_run"
SELFTEST_DAGS = Path(__file__).parent / "selftest_dags"

# Generous deadlines: the machine may be slow and loaded (2 cores).
KILL_DEADLINE = 60  # PATCH -> process gone: ~1 s heartbeat + 5 s SIGTERM->SIGKILL escalation, normally ~7 s
STATE_DEADLINE = 180


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    dags = tmp_path_factory.mktemp("selftest_dags")
    shutil.copytree(SELFTEST_DAGS, dags, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    s = AirflowStack(dags, parallelism=6, heartbeat=1)
    s.start()
    print(f"\n[airflow-stack] startup_seconds={s.startup_seconds:.1f} home={s.home} port={s.port}")
    try:
        s.wait_dag(DAG_ID, timeout=120)
        s.unpause(DAG_ID)
        assert s.trigger(DAG_ID, RUN_ID) == RUN_ID
        yield s
    finally:
        s.stop()
        if s.stop_seconds is not None:
            print(f"\n[airflow-stack] stop_seconds={s.stop_seconds:.1f}")


def test_leader_cleans_up_when_test_process_vanishes(tmp_path):
    """If pytest dies without stop()/atexit, the leader sees EOF on stdin and kills everything it started,
    including an orphan that left the session (setsid) - it is re-parented to the leader (child subreaper)."""
    leader = subprocess.Popen(
        [sys.executable, airflow_stack.__file__, "--leader", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )

    def spawn(argv):
        req = {"op": "spawn", "argv": argv, "log": str(tmp_path / "spawn.log"), "env": None}
        leader.stdin.write((json.dumps(req) + "\n").encode())
        leader.stdin.flush()
        resp = json.loads(leader.stdout.readline())
        assert resp["ok"], resp
        return resp["pid"]

    try:
        child = spawn(["sleep", "300"])
        assert pid_alive(child)
        assert os.getsid(child) == leader.pid and os.getpgid(child) == leader.pid
        spawn(["sh", "-c", "setsid sleep 301 >/dev/null 2>&1 &"])  # sh exits, the sleep escapes the session

        def escaped():
            return [
                p
                for p in airflow_stack._all_procs()
                if p.cmdline == ("sleep", "301") and p.ppid == leader.pid and p.alive
            ]

        orphan = AirflowStack.wait_until(escaped, timeout=10, interval=0.05)[0]
        assert os.getsid(orphan.pid) != leader.pid
        leader.stdin.close()  # what the kernel does when the test process dies
        leader.wait(timeout=30)
        AirflowStack.wait_until(lambda: not pid_alive(child) and not pid_alive(orphan.pid), timeout=10, interval=0.05)
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()


def test_stack_is_healthy_and_patch_works(stack):
    health = stack.health()
    for comp in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[comp]["status"] == "healthy", health
    assert stack.startup_seconds is not None and stack.startup_seconds > 0
    # PATCH through the REST API works without a token (simple auth manager, all admins)
    assert stack.pause(DAG_ID)["is_paused"] is True
    assert stack.unpause(DAG_ID)["is_paused"] is False
    env = stack.env
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{stack.base_url}/execution/"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    if stack.database == "postgres":  # the stack's own server, on loopback, not SQLite
        assert stack.postgres is not None and stack.postgres.process is not None
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://airflow@127.0.0.1:{stack.postgres.port}/airflow"
        assert health["metadatabase"]["status"] == "healthy"


def test_restart_triggerer_keeps_deferred_task(stack):
    """(4a) restart_triggerer() while a task is deferred: still deferred, picked up by the new triggerer."""
    ti = stack.wait_ti(DAG_ID, RUN_ID, "defer_restart", {"deferred"}, timeout=STATE_DEADLINE)
    old_pids = stack.triggerer_pids()
    assert len(old_pids) == 1, old_pids
    old_job = ti["trigger"]["triggerer_id"] if ti.get("trigger") else None
    t0 = time.monotonic()
    new_pid = stack.restart_triggerer()
    took = time.monotonic() - t0
    print(f"\n[airflow-stack] restart_triggerer took {took:.1f}s")
    assert not any(pid_alive(p) for p in old_pids)
    assert stack.triggerer_pids() == [new_pid]
    assert os.getpgid(new_pid) == stack.pgid and os.getsid(new_pid) == stack.sid
    new_job = stack.triggerer_jobs()[0]["id"]
    assert new_job != old_job
    assert stack.ti(DAG_ID, RUN_ID, "defer_restart")["state"] == "deferred"

    def picked_up():
        t = stack.ti(DAG_ID, RUN_ID, "defer_restart")
        assert t["state"] in ("deferred", "success"), t["state"]
        return t["state"] == "success" or (t.get("trigger") or {}).get("triggerer_id") == new_job

    stack.wait_until(picked_up, timeout=STATE_DEADLINE, message="trigger re-assigned to the new triggerer")


def test_rest_reads(stack):
    stack.wait_ti(DAG_ID, RUN_ID, "produce", {"success"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    assert stack.xcom(DAG_ID, RUN_ID, "produce") == {"answer": 42, "items": [1, 2, 3], "try": 1}
    assert stack.xcom(DAG_ID, RUN_ID, "produce", key="no_such_key") is None
    assert stack.xcom(DAG_ID, RUN_ID, "produce", key="tup") == (1, "a")  # serde-tagged value, decoded
    log = stack.task_log(DAG_ID, RUN_ID, "produce", 1)
    assert "produce says hello" in log
    assert "INFO - Done. Returned value was" in log  # rendered like the UI: "[ts] LEVEL - event k=v"

    stack.wait_ti(DAG_ID, RUN_ID, "templated", {"success"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    fields = stack.rendered_fields(DAG_ID, RUN_ID, "templated")
    assert fields["bash_command"] == f"echo run={RUN_ID} && echo last-line-1"
    assert stack.xcom(DAG_ID, RUN_ID, "templated") == "last-line-1"
    ids = {t["task_id"] for t in stack.tis(DAG_ID, RUN_ID)}
    assert {"sleep_markfail", "sleep_clear", "produce", "templated", "defer_markfail", "defer_restart"} <= ids


def test_mark_running_task_failed(stack):
    """(1) PATCH new_state=failed on the RUNNING sleeper: it ends failed and its task process is gone."""
    stack.wait_ti(DAG_ID, RUN_ID, "sleep_markfail", {"running"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    procs = stack.wait_task_pids(DAG_ID, RUN_ID, "sleep_markfail", timeout=60)
    assert procs.runner == procs.rest_pid  # the TI's REST `pid` is the task runner
    assert os.getsid(procs.runner) == stack.sid and os.getpgid(procs.runner) == procs.runner
    assert os.getpgid(procs.supervisor) == stack.pgid
    t0 = time.monotonic()
    stack.set_ti_state(DAG_ID, RUN_ID, "sleep_markfail", "failed")
    stack.wait_ti(DAG_ID, RUN_ID, "sleep_markfail", {"failed"}, timeout=KILL_DEADLINE)
    stack.wait_until(lambda: not pid_alive(procs.runner), timeout=KILL_DEADLINE, interval=0.1)
    gone = time.monotonic() - t0
    # the supervisor is a pooled LocalExecutor worker: it stays, but no longer carries the TI id
    stack.wait_until(lambda: not stack.task_pids(DAG_ID, RUN_ID, "sleep_markfail").processes, timeout=KILL_DEADLINE)
    print(f"\n[airflow-stack] mark-failed -> task process gone after {gone:.1f}s")
    assert stack.ti(DAG_ID, RUN_ID, "sleep_markfail")["state"] == "failed"


def test_mark_deferred_task_failed(stack):
    """(2) PATCH new_state=failed on the DEFERRED task: it ends failed and its trigger is dropped."""
    stack.wait_ti(DAG_ID, RUN_ID, "defer_markfail", {"deferred"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    stack.set_ti_state(DAG_ID, RUN_ID, "defer_markfail", "failed")
    stack.wait_ti(DAG_ID, RUN_ID, "defer_markfail", {"failed"}, timeout=KILL_DEADLINE)
    stack.wait_until(
        lambda: stack.ti(DAG_ID, RUN_ID, "defer_markfail").get("trigger") is None,
        timeout=KILL_DEADLINE,
        message="trigger removed",
    )
    assert stack.ti(DAG_ID, RUN_ID, "defer_markfail")["state"] == "failed"


def test_clear_running_task(stack):
    """(3) Clear the RUNNING sleeper: try 1 is killed, try 2 runs (and, being short, succeeds)."""
    ti = stack.wait_ti(DAG_ID, RUN_ID, "sleep_clear", {"running"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    assert ti["try_number"] == 1
    procs = stack.wait_task_pids(DAG_ID, RUN_ID, "sleep_clear", timeout=60)
    stack.clear_ti(DAG_ID, RUN_ID, "sleep_clear")
    stack.wait_until(lambda: not pid_alive(procs.runner), timeout=KILL_DEADLINE, interval=0.1)
    ti2 = stack.wait_ti(DAG_ID, RUN_ID, "sleep_clear", {"running", "success"}, timeout=STATE_DEADLINE, min_try=2)
    assert ti2["try_number"] == 2 and ti2["id"] != ti["id"]  # a clear gives the TI a new id
    ti2 = stack.wait_ti(DAG_ID, RUN_ID, "sleep_clear", {"success"}, timeout=STATE_DEADLINE, min_try=2)
    assert ti2["try_number"] == 2
    assert "sleeper start try=2 seconds=2" in stack.task_log(DAG_ID, RUN_ID, "sleep_clear", 2)
    assert "sleeper start try=1 seconds=300" in stack.task_log(DAG_ID, RUN_ID, "sleep_clear", 1)
    assert stack.xcom(DAG_ID, RUN_ID, "sleep_clear") == {"slept": 2, "try": 2}
    assert [t["try_number"] for t in stack.ti_tries(DAG_ID, RUN_ID, "sleep_clear")] == [1, 2]


def test_new_dag_file_and_import_error(stack):
    """New files in the dags folder are picked up quickly; wait_dag fails fast on an import error."""
    folder = stack.dags_folder
    (folder / "selftest_broken.py").write_text(
        'from airflow.sdk import dag\n\n@dag(dag_id="selftest_broken", schedule=None)\n'
        "def broken():\n    pass\n\nraise RuntimeError('selftest boom')\n"
    )
    (folder / "selftest_new.py").write_text(
        "from airflow.sdk import dag, task\n\n"
        '@dag(dag_id="selftest_new", schedule=None)\n'
        "def new():\n    @task\n    def hello():\n        return 1\n    hello()\n\nnew()\n"
    )
    t0 = time.monotonic()
    with pytest.raises(StackError, match="selftest boom"):
        stack.wait_dag("selftest_broken", timeout=120)
    details = stack.wait_dag("selftest_new", timeout=120)
    print(f"\n[airflow-stack] new DAG file + import error seen after {time.monotonic() - t0:.1f}s")
    assert details["dag_id"] == "selftest_new"


def test_extra_triggerer(stack):
    """start_extra_triggerer(): a second triggerer joins the stack's group and heartbeats."""
    before = stack.triggerer_pids()
    pid = stack.start_extra_triggerer()
    assert pid not in before and sorted([*before, pid]) == stack.triggerer_pids()
    assert os.getpgid(pid) == stack.pgid
    assert len(stack.triggerer_jobs()) == 2  # two alive TriggererJobs


def test_restarted_deferred_task_completes(stack):
    """(4b) the task deferred across the triggerer restart completes (the trigger fires on the new one)."""
    ti = stack.wait_ti(DAG_ID, RUN_ID, "defer_restart", {"success"}, timeout=STATE_DEADLINE, fail_states={"failed"})
    assert ti["try_number"] == 1


def test_stop_leaves_no_process(stack):
    """(5) stop(): SIGTERM the group, SIGKILL after the grace; no process of the session/group survives."""
    sid = stack.sid
    running = stack.wait_task_pids(DAG_ID, RUN_ID, "sleep_until_stop", timeout=60)
    # the task runner leads its own process group in the stack's session: killpg(sid) alone misses it
    assert os.getpgid(running.runner) == running.runner != sid and os.getsid(running.runner) == sid
    before = stack.processes()
    assert len(before) > 8  # standalone, 4 components, log servers, workers, task runners...
    port = stack.port
    database = stack.postgres.process if stack.postgres else None
    stack.stop(grace=5)
    print(f"\n[airflow-stack] stop took {stack.stop_seconds:.1f}s for {len(before)} processes")
    assert not any(pid_alive(p.pid) for p in before)

    def session_members(include_zombies: bool) -> list[int]:
        return [
            p.pid
            for p in airflow_stack._all_procs()
            if (p.sid == sid or p.pgid == sid) and (include_zombies or p.alive)
        ]

    assert session_members(include_zombies=False) == []
    # not even zombies: the leader (a child subreaper) reaps what was re-parented to it before it exits
    AirflowStack.wait_until(lambda: not session_members(include_zombies=True), timeout=10, interval=0.1)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the api-server is gone
    if database is not None:  # the private PostgreSQL server is ended too (it has its own session)
        assert database.poll() is not None and not pid_alive(database.pid)
    stack.stop()  # idempotent
