"""Runs the orphan sweep against a real Airflow metadata database (SQLite, migrated here) and the emulator.

Started by test_orphan_sweep.py in a process of its own (its own AIRFLOW_HOME, so the test session's Airflow
settings stay untouched). Writes task instances and their records as Airflow would, runs sweep rounds, and prints
one JSON line: what each round did, and which records are left.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

PREFIX = "SWEEP-PROBE "


def main() -> None:
    vendors = sys.argv[1].split(",")
    scenario_of = json.loads(sys.argv[2])  # vendor -> execution id per case, started by the test
    from airflow.utils.db import initdb

    initdb()
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import insert, select

    from airflow_provider_cancel.core.ownership import STATE_STORE_KEY, ExecutionRecord
    from airflow_provider_cancel.orphans import OrphanSweep, SweepSettings, _has_regions
    from airflow_provider_cancel.registry import BY_CONN_TYPE

    index = {"region_index": -1} if _has_regions(TaskInstance) else {"map_index": -1}  # 3.4 renamed it
    now = datetime.now(UTC)
    oldest, long_ago = now - timedelta(seconds=2000), now - timedelta(seconds=1000)
    just_now = now - timedelta(seconds=5)
    cases = {  # case -> (task instance state, when it finished, cancel_if_orphaned)
        "failed_orphan": ("failed", long_ago, True),
        "marked_success": ("success", long_ago, True),
        "still_running": ("running", None, True),
        "deferred": ("deferred", None, True),
        "up_for_retry": ("up_for_retry", long_ago, True),
        "kept_by_user": ("failed", long_ago, False),
        "within_grace": ("failed", just_now, True),
        "already_cancelled": ("failed", long_ago, True),
        "vendor_down": ("failed", oldest, True),  # looked at first in each round: the test faults that read
    }
    with create_session() as session:
        for vendor in vendors:
            run_id = f"manual__{vendor}"
            session.execute(insert(DagRun.__table__).values(
                dag_id="d", run_id=run_id, run_type="manual", run_after=now, data_interval_end=None,
                logical_date=None, state="running"))
            dag_run_id = session.scalar(select(DagRun.id).where(DagRun.run_id == run_id))
            for case, (state, ended, cancel) in cases.items():
                session.execute(insert(TaskInstance.__table__).values(
                    dag_id="d", run_id=run_id, task_id=case, **index, try_number=1, state=state,
                    end_date=ended, updated_at=ended or now, pool="default_pool"))
                record = ExecutionRecord(scenario_of[vendor][case], try_number=1, conn_id=f"{vendor}_probe",
                                         hook=BY_CONN_TYPE[vendor].hook_path, cancel_if_orphaned=cancel)
                session.execute(insert(Store).values(dag_run_id=dag_run_id, dag_id="d", run_id=run_id,
                                                     task_id=case, **index, key=STATE_STORE_KEY,
                                                     value=json.dumps(record.to_value()), updated_at=now))

    def left() -> dict[str, list[str]]:
        with create_session() as session:
            rows = session.execute(select(Store.run_id, Store.task_id)).all()
        return {vendor: sorted(r.task_id for r in rows if r.run_id == f"manual__{vendor}") for vendor in vendors}

    settings = SweepSettings(interval=1, grace=60, horizon=86400)
    first, second = OrphanSweep(settings, name="scheduler-a"), OrphanSweep(settings, name="scheduler-b")
    # Two schedulers read the same records in the same round: only one claim wins.
    seen_a, seen_b = first._find(time.time()), second._find(time.time())
    claims = {"a": sum(first._claim(f, time.time()) for f in seen_a),
              "b": sum(second._claim(f, time.time()) for f in seen_b)}
    for found in seen_a:
        first._release(found)
    rounds = []
    for sweep in (first, second):
        rounds.append([{"task": v.found.task_id, "vendor": v.found.run_id.split("__")[1], "action": v.action.value,
                        "outcome": v.outcome.value if v.outcome else None} for v in sweep.sweep_once()])
        say({"round": len(rounds), "left": left()})
        sys.stdin.readline()  # the test lets the vendor come back before the second round
    say({"claims": claims, "seen": len(seen_a), "rounds": rounds, "left": left()})


def say(message: dict) -> None:
    """One line for the test (Airflow logs to stdout too: the prefix tells them apart)."""
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
