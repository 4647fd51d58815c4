"""The kill rows that depend on the Airflow line, on a real stack of the Airflow installed here (one vendor per
line; the full K1-K13 matrix runs on 3.3.2 in tests/e2e/test_kill_paths.py). scripts/test-versions.sh runs
this module in each .venv-af/<version>; rows go to artifacts/versions/<version>.json and, for every line run so
far, artifacts/versions-matrix.md (the README's table by version).

What differs by line (airflow_provider_cancel/version_compat.py):
* K6, a deferred task marked failed: the trigger's ``on_kill`` on 3.3+; on 3.0-3.2 the trigger's
  ``CancelledError`` path, which cancels only after reading that the task has left DEFERRED.
* K12, a triggerer restart: the same ``CancelledError`` on 3.0-3.2; there the task is still DEFERRED, so nothing
  may be cancelled.
* K5, SIGTERM to the worker (the supervisor): forwarded to the task on 3.3, whose ``on_kill`` cancels; on 3.4 a
  warm shutdown: the task keeps running (nothing is killed, nothing cancelled), and after a SIGKILL the retry
  adopts the execution; on 3.0-3.2 it is not forwarded: the supervisor dies, the task is not killed either.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_cancel.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_V_3_4_PLUS, AIRFLOW_VERSION

from .airflow_stack import AirflowStack, pid_alive
from .conftest import ARTIFACTS, E2E_KEY, VENDORS

pytestmark = [pytest.mark.e2e, pytest.mark.versions]

VERSION_DAGS = Path(__file__).parent / "version_dags"
# One vendor per line, a different one for each of the five extra lines (3.3.2 runs every vendor elsewhere).
VENDOR_BY_LINE = {(3, 0): "dune", (3, 1): "izieroma", (3, 2): "bctrl", (3, 3, 1): "meibel", (3, 4): "b3os"}
TIMEOUT = 30  # s: execution_timeout of k4/k7 in version_dags/e2e_versions.py
KILL_DEADLINE, FINISH_DEADLINE = 90, 240
QUIET = 15  # s a K5 warm shutdown is watched for a cancel that must not come


def _version_text() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


VERSION = _version_text()
VENDOR = os.environ.get("VERSION_KILL_VENDOR") or VENDOR_BY_LINE.get(
    AIRFLOW_VERSION, VENDOR_BY_LINE.get(AIRFLOW_VERSION[:2], "dune")
)
DAG_ID = f"versions_{VENDOR}"
assert VENDOR in VENDORS, VENDOR


@pytest.fixture(scope="module")
def vstack(e2e_emulator):
    env = {
        f"AIRFLOW_CONN_{vendor.upper()}_DEFAULT": json.dumps(
            {"conn_type": vendor, "host": e2e_emulator.base_url(vendor), "password": E2E_KEY}
        )
        for vendor in VENDORS
    }
    # K5 on 3.4: once the worker is SIGKILLed nothing heartbeats; the scheduler fails the try after this long
    env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "60"
    with AirflowStack(VERSION_DAGS, env=env, parallelism=12) as stack:
        yield stack


@pytest.fixture(scope="module")
def run_id(vstack) -> str:
    vstack.wait_dag(DAG_ID, timeout=180)
    return vstack.trigger(DAG_ID)


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, path: str, mode: str, mechanism: str, ok: bool, cancels: int, state: str,
            seconds: float | None) -> None:
        self.rows.append({"version": VERSION, "path": path, "mode": mode, "vendor": VENDOR, "mechanism": mechanism,
                          "result": "pass" if ok else "FAIL", "cancels": cancels, "state": state,
                          "seconds": None if seconds is None else round(seconds, 1)})

    def write(self) -> None:
        if not self.rows:
            return
        folder = ARTIFACTS / "versions"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{VERSION}.json").write_text(json.dumps(self.rows, indent=1))
        (ARTIFACTS / "versions-matrix.md").write_text(matrix_markdown(folder))


def _version_key(text: str):
    from packaging.version import Version

    return Version(text)


def matrix_markdown(folder: Path) -> str:
    """One table, every line run so far: version, path, vendor, result, cancels, seconds (kill -> cancel)."""
    lines = ["| Airflow | path | mode | how Airflow kills | vendor | result | cancels | final state | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for file in sorted(folder.glob("*.json"), key=lambda f: _version_key(f.stem)):
        for r in json.loads(file.read_text()):
            seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
            lines.append(f"| {r['version']} | {r['path']} | {r['mode']} | {r['mechanism']} | {r['vendor']} | "
                         f"{r['result']} | {r['cancels']} | {r['state']} | {seconds} |")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def rows():
    table = Rows()
    yield table
    table.write()


def recorded(stack, emu, run_id: str, task_id: str, since: float = 0) -> str:
    """The task's execution id (XCom), once the emulator has seen it polled after `since`."""
    execution_id = stack.wait_until(lambda: stack.xcom(DAG_ID, run_id, task_id, key="execution_id"),
                                    timeout=FINISH_DEADLINE, message=f"{task_id} recorded its execution id")
    stack.wait_until(lambda: [e for e in emu.journal(action="status", execution_id=execution_id) if e["ts"] > since],
                     timeout=FINISH_DEADLINE, message=f"a status poll of {execution_id}")
    return execution_id


def live(stack, emu, run_id: str, task_id: str, state: str) -> str:
    stack.wait_ti(DAG_ID, run_id, task_id, {state}, timeout=FINISH_DEADLINE)
    return recorded(stack, emu, run_id, task_id, since=time.time() if state == "deferred" else 0)


def settled_cancels(stack, emu, execution_id: str, runner_pid: int | None = None) -> int:
    if runner_pid:
        stack.wait_until(lambda: not pid_alive(runner_pid), timeout=60, message=f"task process {runner_pid} gone")
    return len(emu.cancels(execution_id))


def logged_anywhere(stack, *needles: str) -> bool:
    """Whether a line with every needle is in a log of the stack (task and trigger logs, component output)."""
    assert stack.home is not None
    for path in stack.home.rglob("*.log"):
        with path.open(errors="replace") as text:
            if any(all(n in line for n in needles) for line in text):
                return True
    return False


def started_at(ti: dict) -> float:
    return datetime.fromisoformat(ti["start_date"].replace("Z", "+00:00")).timestamp()


def test_k13_success_never_cancels(vstack, emu_client, run_id, rows):
    for task_id, mode in (("k13_sync_success", "running"), ("k13_defer_success", "deferred")):
        vstack.wait_ti(DAG_ID, run_id, task_id, {"success"}, timeout=FINISH_DEADLINE, fail_states={"failed"})
        execution_id = vstack.xcom(DAG_ID, run_id, task_id, key="execution_id")
        result = vstack.xcom(DAG_ID, run_id, task_id)
        cancels = settled_cancels(vstack, emu_client, execution_id)
        rows.add("K13", mode, "none (success)", cancels == 0 and bool(result), cancels, "success", None)
        assert result and cancels == 0


def test_k1_running_mark_failed_cancels_once(vstack, emu_client, run_id, rows):
    task_id = "k1_sync_markfail"
    execution_id = live(vstack, emu_client, run_id, task_id, "running")
    runner = vstack.wait_task_pids(DAG_ID, run_id, task_id).runner
    killed_at = time.time()
    vstack.set_ti_state(DAG_ID, run_id, task_id, "failed")
    cancel = vstack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                               message=f"a cancel of {execution_id}")[0]
    cancels = settled_cancels(vstack, emu_client, execution_id, runner)
    state = vstack.ti(DAG_ID, run_id, task_id)["state"]
    rows.add("K1", "running", "heartbeat 409 -> SIGTERM -> on_kill", cancels == 1 and state == "failed", cancels,
             state, cancel["ts"] - killed_at)
    assert cancels == 1 and state == "failed"


def test_k6_deferred_mark_failed_cancels_once(vstack, emu_client, run_id, rows):
    task_id = "k6_defer_markfail"
    execution_id = live(vstack, emu_client, run_id, task_id, "deferred")
    killed_at = time.time()
    vstack.set_ti_state(DAG_ID, run_id, task_id, "failed")
    cancel = vstack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                               message=f"a cancel of {execution_id}")[0]
    state = vstack.ti(DAG_ID, run_id, task_id)["state"]
    if AIRFLOW_V_3_3_PLUS:
        mechanism, reason = "trigger on_kill", "the deferred task was killed"
    else:
        mechanism, reason = "CancelledError + task-state check (legacy)", "the deferred task was killed (legacy path)"
    said = vstack.wait_until(lambda: logged_anywhere(vstack, execution_id, reason), timeout=60,
                             message=f"the trigger logging {reason!r}", raise_on_timeout=False)
    cancels = len(emu_client.cancels(execution_id))  # after the log search: a late duplicate would be counted
    ok = cancels == 1 and state == "failed" and bool(said)
    rows.add("K6", "deferred", mechanism, ok, cancels, state, cancel["ts"] - killed_at)
    assert cancels == 1 and state == "failed"
    assert said, f"no trigger log line {reason!r} for {execution_id}"


def test_k12_triggerer_restart_cancels_nothing(vstack, emu_client, run_id, rows):
    task_id = "k12_defer_restart"
    execution_id = live(vstack, emu_client, run_id, task_id, "deferred")
    restarted_at = time.time()
    vstack.restart_triggerer(signal.SIGTERM)
    vstack.wait_until(lambda: [e for e in emu_client.journal(action="status", execution_id=execution_id)
                               if e["ts"] > restarted_at], timeout=FINISH_DEADLINE,
                      message="polling resumed on the restarted triggerer")
    ti = vstack.wait_ti(DAG_ID, run_id, task_id, {"success"}, timeout=FINISH_DEADLINE, fail_states={"failed"})
    cancels = len(emu_client.cancels(execution_id))
    lived_through = emu_client.execution(execution_id)["finished_at"] > restarted_at
    mechanism = "shutdown: no on_kill" if AIRFLOW_V_3_3_PLUS else "CancelledError + task-state check (legacy)"
    ok = cancels == 0 and lived_through and ti["try_number"] == 1
    rows.add("K12", "deferred, triggerer restart", mechanism, ok, cancels, ti["state"], None)
    assert ok, (cancels, lived_through, ti["try_number"])


@pytest.mark.parametrize(("path", "task_id", "mode"), [("K4", "k4_sync_timeout", "running"),
                                                        ("K7", "k7_defer_timeout", "deferred")])
def test_k4_k7_execution_timeout_cancels_once(vstack, emu_client, run_id, rows, path, task_id, mode):
    execution_id = vstack.wait_until(lambda: vstack.xcom(DAG_ID, run_id, task_id, key="execution_id"),
                                     timeout=FINISH_DEADLINE, message=f"{task_id} recorded its execution id")
    ti = vstack.wait_ti(DAG_ID, run_id, task_id, {"failed"}, timeout=FINISH_DEADLINE,
                        fail_states={"success", "up_for_retry"})
    cancel = vstack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                               message=f"a cancel of {execution_id}")[0]
    cancels = settled_cancels(vstack, emu_client, execution_id)
    late = cancel["ts"] - (started_at(ti) + TIMEOUT)
    mechanism = "AirflowTaskTimeout -> on_kill" if mode == "running" else "the trigger's own deadline"
    rows.add(path, mode, mechanism, cancels == 1 and late < KILL_DEADLINE, cancels, ti["state"], late)
    assert cancels == 1 and late < KILL_DEADLINE


def test_k5_sigterm_to_the_worker(vstack, emu_client, run_id, rows):
    task_id = "k5_sync_sigterm"
    execution_id = live(vstack, emu_client, run_id, task_id, "running")
    pids = vstack.wait_task_pids(DAG_ID, run_id, task_id)
    signalled_at = time.time()
    os.kill(pids.supervisor, signal.SIGTERM)
    if AIRFLOW_V_3_3_PLUS and not AIRFLOW_V_3_4_PLUS:  # forwarded: on_kill cancels, the task never succeeds
        cancel = vstack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                                   message=f"a cancel of {execution_id}")[0]
        ti = vstack.wait_ti(DAG_ID, run_id, task_id, {"failed", "up_for_retry"}, timeout=FINISH_DEADLINE,
                            fail_states={"success"})
        cancels = settled_cancels(vstack, emu_client, execution_id, pids.runner)
        rows.add("K5", "running", "SIGTERM forwarded -> on_kill", cancels == 1, cancels, ti["state"],
                 cancel["ts"] - signalled_at)
        assert cancels == 1
        if ti["state"] == "up_for_retry":  # its retry starts a new execution: end it
            vstack.wait_ti(DAG_ID, run_id, task_id, {"running"}, timeout=FINISH_DEADLINE, min_try=2)
            vstack.set_ti_state(DAG_ID, run_id, task_id, "failed")
        return
    # 3.4 (warm shutdown) and 3.0-3.2 (not forwarded): the task is not killed; it keeps its execution running
    quiet_until = time.time() + QUIET
    vstack.wait_until(lambda: time.time() > quiet_until or emu_client.cancels(execution_id), timeout=QUIET + 5,
                      message="the quiet period")
    polled = [e for e in emu_client.journal(action="status", execution_id=execution_id) if e["ts"] > signalled_at + 5]
    ti = vstack.ti(DAG_ID, run_id, task_id)
    still_running = not emu_client.cancels(execution_id) and bool(polled) and ti["state"] == "running"
    mechanism = "warm shutdown: not forwarded" if AIRFLOW_V_3_4_PLUS else "not forwarded"
    # The platform's SIGKILL at the end of its grace period: the whole worker, no code runs
    for pid in (pids.runner, pids.supervisor):
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    retry = vstack.wait_ti(DAG_ID, run_id, task_id, {"running"}, timeout=FINISH_DEADLINE, min_try=2,
                           fail_states={"failed"})
    vstack.wait_until(lambda: "reattaching" in vstack.task_log(DAG_ID, run_id, task_id, retry["try_number"]),
                      timeout=FINISH_DEADLINE, message="the retry reattaching to the execution")
    adopted = vstack.xcom(DAG_ID, run_id, task_id, key="execution_id") == execution_id
    vstack.set_ti_state(DAG_ID, run_id, task_id, "failed")  # the retry owns the execution: its kill cancels it
    cancel = vstack.wait_until(lambda: emu_client.cancels(execution_id), timeout=KILL_DEADLINE,
                               message=f"a cancel of {execution_id} by the retry's kill")
    ok = still_running and adopted and len(cancel) == 1
    rows.add("K5", "running: SIGTERM, then SIGKILL; the retry adopts", mechanism, ok, len(cancel),
             f"running until SIGKILL; try {retry['try_number']} adopted", None)
    assert still_running, (ti["state"], len(polled), emu_client.cancels(execution_id))
    assert adopted and len(cancel) == 1


def test_the_stack_is_the_airflow_under_test(vstack):
    version = vstack.get("/api/v2/version")["version"]
    assert version == VERSION, (version, VERSION)

