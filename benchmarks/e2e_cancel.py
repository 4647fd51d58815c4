"""End-to-end cancel latency on a real Airflow 3.3: from the REST "mark failed" to the cancel reaching the API.

One AirflowStack (tests/e2e/airflow_stack.py: scheduler, triggerer, dag-processor, api-server, LocalExecutor)
and the emulator, both on loopback, Airflow's own heartbeat settings (`[workers] min_heartbeat_interval` = 5 s,
its default, not the 1 s the e2e tests use). DAG runs of `e2e_dags/bench_cancel.py` hold tasks that poll a
never-ending Dune execution, half running in a worker, half deferred to the triggerer. Once a task's
execution has been polled, it is marked failed through the REST API as the UI does; the latency is the
emulator journal's timestamp of the cancel minus the moment before the PATCH (both time.time() on this
machine). Kills are one at a time. Airflow's heartbeat and triggerer intervals are read from the stack's
config, as the baseline: a running task can only learn of the kill at its supervisor's next heartbeat.

    python benchmarks/e2e_cancel.py --kills 12 --per-run 4    # ~10 minutes on the 2-core machine
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, ROOT, median, percentile

sys.path.insert(0, str(ROOT))  # tests/e2e/airflow_stack.py

KEY = "sk-BENCH-E2E-7c21"
DAG_ID = "bench_cancel"
CONFIG = (("workers", "min_heartbeat_interval"), ("scheduler", "task_instance_heartbeat_sec"),
          ("scheduler", "scheduler_heartbeat_sec"), ("triggerer", "job_heartbeat_sec"))
HEARTBEAT = 5  # Airflow's default [workers] min_heartbeat_interval


def kill_once(stack: Any, emu: Any, run_id: str, task_id: str, state: str) -> float:
    """Seconds from the REST mark-failed to the cancel of the task's execution reaching the emulator."""
    stack.wait_ti(DAG_ID, run_id, task_id, {state}, timeout=300)
    execution_id = stack.wait_until(lambda: stack.xcom(DAG_ID, run_id, task_id, key="execution_id"), timeout=300,
                                    message=f"{task_id} recorded its execution id")
    stack.wait_until(lambda: emu.journal(action="status", execution_id=execution_id), timeout=300,
                     message=f"a status poll of {execution_id}")
    stack.wait_ti(DAG_ID, run_id, task_id, {state}, timeout=30)
    killed_at = time.time()
    stack.set_ti_state(DAG_ID, run_id, task_id, "failed")
    cancel = stack.wait_until(lambda: emu.cancels(execution_id), timeout=120, interval=0.05,
                              message=f"a cancel of {execution_id}")[0]
    return float(cancel["ts"]) - killed_at


def measure(kills: int, per_run: int) -> dict[str, Any]:
    from airflow_provider_cancel.emulator.testing import EmulatorProcess
    from tests.e2e.airflow_stack import AirflowStack

    latencies: dict[str, list[float]] = {"running": [], "deferred": []}
    with EmulatorProcess("--api-key", KEY) as emulator, emulator.client() as emu:
        env = {"AIRFLOW_CONN_DUNE_DEFAULT": json.dumps(
                   {"conn_type": "dune", "host": emulator.base_url("dune"), "password": KEY}),
               "BENCH_E2E_PER_RUN": str(per_run)}
        with AirflowStack(BENCH_DIR / "e2e_dags", env=env, parallelism=per_run + 2, heartbeat=HEARTBEAT) as stack:
            config = {f"{section}.{key}": stack.run_cli("config", "get-value", section, key, check=False).stdout.strip()
                      for section, key in CONFIG}
            stack.wait_dag(DAG_ID, timeout=300)
            for _ in range(math.ceil(kills / per_run)):
                run_id = stack.trigger(DAG_ID)
                for i in range(per_run):  # alternate the kinds, so machine noise hits both alike
                    for kind in ("running", "deferred"):
                        latency = kill_once(stack, emu, run_id, f"{kind}_{i}", kind)
                        latencies[kind].append(latency)
                        print(f"{kind}: {latency:.2f} s", file=sys.stderr, flush=True)
                stack.wait_run(DAG_ID, run_id, {"failed"}, timeout=300)
    result: dict[str, Any] = {"config": config, "heartbeat_set": HEARTBEAT}
    for kind, values in latencies.items():
        result[kind] = {"kills": len(values), "median_s": median(values), "p99_s": percentile(values, 99),
                        "max_s": max(values), "samples_s": values}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=12, help="kills of each kind (running, deferred)")
    parser.add_argument("--per-run", type=int, default=4, help="tasks of each kind per DAG run")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    data = measure(args.kills, args.per_run)
    text = json.dumps(data, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
