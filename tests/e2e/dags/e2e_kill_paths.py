"""One DAG per vendor, one task per kill path, all against the emulator (the scenario rides in the request)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator

# Room for a task that starts slowly on a loaded 2-core machine (seen: ~30 s from queued to execute()) to
# start its execution before the deadline; the tests measure the cancel from the deadline.
TIMEOUT = timedelta(seconds=45)
FAST = {"poll_interval": 1, "max_poll_interval": 2, "retries": 0}


def dune(task_id: str, scenario: str, **kw: Any) -> BaseOperator:
    from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

    return DuneRunQueryOperator(task_id=task_id, sql=f"SELECT 1 -- {task_id} emulate:{scenario}", **kw)


def izieroma(task_id: str, scenario: str, **kw: Any) -> BaseOperator:
    from airflow_provider_cancel.vendors.izieroma import IzieromaRunOperator

    return IzieromaRunOperator(task_id=task_id, goal=f"Research for {task_id} emulate:{scenario}", **kw)


def bctrl(task_id: str, scenario: str, **kw: Any) -> BaseOperator:
    from airflow_provider_cancel.vendors.bctrl import BctrlInvokeOperator

    return BctrlInvokeOperator(
        task_id=task_id,
        space_id="5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01",
        runtime_id="a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7",
        steps=[{"call": "browser.goto", "args": ["https://example.com"]}],
        metadata={"emulate": scenario},
        **kw,
    )


def meibel(task_id: str, scenario: str, **kw: Any) -> BaseOperator:
    from airflow_provider_cancel.vendors.meibel import MeibelRunBatchOperator

    spec = {"name": task_id.replace("_", "-"), "agent": "agent-e2e", "input": {"datasource_id": "ds-e2e"},
            "emulate": scenario}
    return MeibelRunBatchOperator(task_id=task_id, batch_spec=spec, **kw)


def b3os(task_id: str, scenario: str, **kw: Any) -> BaseOperator:
    from airflow_provider_cancel.vendors.b3os import B3osRunWorkflowOperator

    return B3osRunWorkflowOperator(task_id=task_id, workflow_id="wf_e2e", payload={"emulate": scenario}, **kw)


FACTORIES: dict[str, Callable[..., BaseOperator]] = {
    "dune": dune, "izieroma": izieroma, "bctrl": bctrl, "meibel": meibel, "b3os": b3os,
}

def hook_only_the_worker_can_import(task: BaseOperator) -> BaseOperator:
    """K8: a hook subclass defined in a DAG file: the worker has it, the triggerer cannot import it (DAG
    modules get private names), so the trigger crashes at its start: a common mistake, and a real crash."""
    task.hook_class = type(f"DagLocal{task.hook_class.__name__}", (task.hook_class,), {})  # type: ignore[misc]
    return task


RETRY_ONCE = {"retries": 1, "retry_delay": timedelta(seconds=1)}

# task id -> (scenario, deferrable, execution_timeout, extra arguments)
SCENARIOS: dict[str, tuple[str, bool, timedelta | None, dict[str, Any]]] = {
    "k1_sync_markfail": ("forever", False, None, {}),
    "k4_sync_timeout": ("forever", False, TIMEOUT, {}),
    "k6_defer_markfail": ("forever", True, None, {}),
    "k7_defer_timeout": ("forever", True, TIMEOUT, {}),
    "k2_sync_marksuccess": ("forever", False, None, {}),
    "k2_defer_marksuccess": ("forever", True, None, {}),
    "k3_sync_clear": ("forever", False, None, {}),
    "k3_defer_clear": ("forever", True, None, {}),
    "k5_sync_sigterm": ("forever", False, None, {}),
    "k8_trigger_crash": ("forever", True, None, {}),
    "k9_sigkill_reattach": ("forever", False, None, RETRY_ONCE),
    "k9_sigkill_cancel": ("forever", False, None, {**RETRY_ONCE, "on_existing": "cancel"}),
    "k11_remote_cancel": ("remote_cancel:3", False, None, {"retries": 2}),  # must not retry anyway
    "k13_sync_success": ("succeed:3", False, None, {}),
    "k13_defer_success": ("succeed:3", True, None, {}),
}
DAGRUN_TIMEOUT = timedelta(seconds=60)

for vendor, factory in FACTORIES.items():
    with DAG(
        dag_id=f"e2e_{vendor}",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_tasks=len(SCENARIOS),
    ) as dag:
        for task_id, (scenario, deferrable, timeout, extra) in SCENARIOS.items():
            task = factory(task_id, scenario, deferrable=deferrable, execution_timeout=timeout, **{**FAST, **extra})
            if task_id.startswith("k8"):
                hook_only_the_worker_can_import(task)
    globals()[dag.dag_id] = dag

    # K10: the DAG run's own timeout (the scheduler marks unfinished tasks skipped, which kills them)
    with DAG(
        dag_id=f"e2e_{vendor}_dagrun_timeout",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        dagrun_timeout=DAGRUN_TIMEOUT,
    ) as dag:
        factory("k10_sync", "forever", deferrable=False, **FAST)
        factory("k10_defer", "forever", deferrable=True, **FAST)
    globals()[dag.dag_id] = dag

# K12: one deferred task per vendor, long enough (30 polls) to live through a triggerer restart and a takeover,
# which the test makes within the executions' first few polls. K8 backstop: while the triggerer is down, the
# scheduler's defer timeout (the task's deadline + `defer_backstop`) resumes the task with __fail__.
with DAG(dag_id="e2e_handover", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as e2e_handover:
    for vendor, factory in FACTORIES.items():
        factory(f"k12_{vendor}", "succeed:30", deferrable=True, **FAST)
        backstop = factory(f"k8_backstop_{vendor}", "forever", deferrable=True,
                           execution_timeout=timedelta(seconds=45), **FAST)
        backstop.defer_backstop = timedelta(seconds=1)


# N1-N5: the deaths where no provider code runs (docs/kill-paths.md). The orphan sweep, in the scheduler, must
# cancel each execution once; cancel_orphans=False keeps it running.
MARKERS = Path(os.environ.get("E2E_CALLBACK_MARKERS", "/tmp"))


def users_own_failure_callback(context: Any) -> None:
    """A user's on_failure_callback: the sweep must not replace it (it writes a marker the test reads)."""
    ti = context["ti"]
    MARKERS.mkdir(parents=True, exist_ok=True)
    (MARKERS / f"{ti.dag_id}.{ti.task_id}.failed").write_text(json.dumps({"try_number": ti.try_number}))


# task id prefix -> (deferrable, extra arguments)
DEATHS: dict[str, tuple[bool, dict[str, Any]]] = {
    "n1_oom": (False, {}),  # the task process SIGKILLed (the OOM killer's way), no retry left
    "n1_off": (False, {"cancel_orphans": False}),  # the same with the sweep turned off: left running
    "n2_lost": (False, {"on_failure_callback": users_own_failure_callback}),  # the whole worker lost
    "n3_nottrig": (True, {}),  # deferred, killed before any triggerer started its trigger
    "n4_refused": (False, {}),  # marked failed while the vendor refuses every cancel of on_kill
    "n5_cutshort": (False, {}),  # marked failed, then SIGKILLed before on_kill could send anything
}

with DAG(dag_id="e2e_orphans", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
         max_active_tasks=64) as e2e_orphans:
    for vendor, factory in FACTORIES.items():
        for prefix, (deferrable, extra) in DEATHS.items():
            factory(f"{prefix}_{vendor}", "forever", deferrable=deferrable, **{**FAST, **extra})


# D1-D5: faults only a distributed Airflow has (tests/e2e/test_distributed.py, on the CELERY topology). One DAG
# per row, one task per vendor: the rows run one after another, since each stops or kills whole components.
# row -> (scenario, deferrable, extra arguments)
DISTRIBUTED: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "d1_stall": ("succeed@75s", True, {}),  # its triggerer stalls (SIGSTOP) past the health threshold, comes back
    "d2_trigkill": ("forever", True, {}),  # its triggerer SIGKILLed; the other takes over; then marked failed
    "d3_warm": ("succeed@25s", False, {}),  # its worker is shut down warm (SIGTERM): it runs to its end
    "d3_grace": ("forever", False, RETRY_ONCE),  # the same, then SIGKILLed after a grace: the retry adopts
    "d4_lost": ("forever", False, RETRY_ONCE),  # every process of its worker SIGKILLed: the retry adopts
    "d5_sched": ("forever", False, {}),  # a scheduler SIGKILLed: the other schedules; a kill still cancels
    "d6_redeliver": ("succeed@70s", False, {}),  # its Celery message redelivered (visibility timeout) while it runs
}
for row in ("d1", "d2", "d3", "d4", "d5", "d6"):
    with DAG(dag_id=f"e2e_{row}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
             max_active_tasks=32) as dag:
        for name, (scenario, deferrable, extra) in DISTRIBUTED.items():
            if name.startswith(row):
                for vendor, factory in FACTORIES.items():
                    factory(f"{name}_{vendor}", scenario, deferrable=deferrable, **{**FAST, **extra})
    globals()[dag.dag_id] = dag
