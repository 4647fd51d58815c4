"""Many tasks on one API key against a vendor rate limit: they slow down together instead of failing.

40 deferred tasks (ExecutionTrigger under Airflow's TriggerRunner) and 6 polling operators per vendor share one key:
izieroma answers with X-RateLimit-Remaining/Reset and Retry-After, Dune (as its API does) only with Retry-After on
its 429s. Every task must end in its execution's true state with no 429 reaching it, however long the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from airflow.jobs.triggerer_job_runner import TriggerRunner

from airflow_provider_cancel.core.errors import ExecutionFailed
from airflow_provider_cancel.core.trigger import ExecutionTrigger
from airflow_provider_cancel.emulator.testing import EmulatorProcess, operator_args
from airflow_provider_cancel.vendors.dune import DuneHook, DuneRunQueryOperator
from airflow_provider_cancel.vendors.izieroma import IzieromaHook, IzieromaRunOperator
from tests.airflow_compat import fired_events, prepare_trigger

from ..integration.conftest import FakeTI, make_context

RATE = "20/2s"  # the same shape as the vendors' own limits (Dune: 40 status calls a minute), ten times shorter
TRIGGERS, OPERATORS = 40, 6
HOOKS = {"izieroma": IzieromaHook, "dune": DuneHook}


def start(vendor: str, scenario: str) -> str:
    hook = HOOKS[vendor](f"{vendor}_soak")
    if vendor == "dune":
        return hook.execute_sql(f"SELECT 1 -- emulate:{scenario}")
    return hook.create_execution(f"Rate-limited run emulate:{scenario}")


def operator(vendor: str, index: int, scenario: str):
    op = DuneRunQueryOperator if vendor == "dune" else IzieromaRunOperator
    return op(task_id=f"op{index}", conn_id=f"{vendor}_soak", deferrable=False, poll_interval=0.1,
              max_poll_interval=0.5, **operator_args(vendor, scenario, f"op{index}"))


def run_operator(task) -> str:
    try:
        task.execute(make_context(FakeTI(task_id=task.task_id)))
        return "succeeded"
    except ExecutionFailed:
        return "failed"


async def run_triggers(triggers: list[ExecutionTrigger]) -> list[dict]:
    runner = TriggerRunner()
    for i in range(len(triggers)):
        runner.triggers[i] = {"name": f"rate-{i}", "events": 0}
    tasks = [asyncio.create_task(runner.run_trigger(i, prepare_trigger(t))) for i, t in enumerate(triggers)]
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    by_id = dict(fired_events(runner))
    return [by_id.get(i, {}) for i in range(len(triggers))]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("vendor", ["izieroma", "dune"])
def test_tasks_on_one_key_slow_down_together_instead_of_failing(soak_emulator: EmulatorProcess, vendor: str) -> None:
    emu = soak_emulator.client(timeout=30)
    emu.reset()
    scenarios = ["fail@3s" if i % 5 == 0 else "succeed@3s" for i in range(TRIGGERS + OPERATORS)]
    ids = [start(vendor, s) for s in scenarios[:TRIGGERS]]  # started before the limit: only waiting is measured
    triggers = [
        ExecutionTrigger(hook_class=f"{HOOKS[vendor].__module__}.{HOOKS[vendor].__qualname__}",
                         conn_id=f"{vendor}_soak", execution_id=eid, poll_interval=0.1, max_poll_interval=0.5)
        for eid in ids
    ]
    tasks = [operator(vendor, i, s) for i, s in enumerate(scenarios[TRIGGERS:])]
    emu.set_rate_limit(vendor, RATE)
    since = emu.journal()[-1]["seq"]
    began = time.time()
    try:
        with ThreadPoolExecutor(OPERATORS) as pool:
            outcomes = pool.map(run_operator, tasks)
            events = asyncio.run(run_triggers(triggers))
            outcomes = list(outcomes)
    finally:
        emu.set_rate_limit(vendor, None)
    took = time.time() - began
    journal = emu.journal(vendor=vendor, since=since)
    emu.close()

    served = [e for e in journal if e["status_code"] != 429]
    refused = len(journal) - len(served)
    limit, window = 20, 2.0
    busiest = max(sum(1 for f in served if e["ts"] <= f["ts"] < e["ts"] + window) for e in served)
    figures = {
        "vendor": vendor, "tasks": TRIGGERS + OPERATORS, "limit": RATE, "seconds": round(took, 1),
        "requests": len(journal), "served": len(served), "refused_429": refused,
        "served_per_s": round(len(served) / took, 1), "busiest_window": busiest,
        "outcomes": dict(Counter([e.get("state", e.get("kind")) for e in events] + outcomes)),
    }
    print("\nrate limit:", json.dumps(figures))

    expected = ["failed" if s.startswith("fail") else "succeeded" for s in scenarios]
    assert [e.get("kind") for e in events] == ["terminal"] * TRIGGERS, events  # no 429 ended a wait
    assert [e["state"] for e in events] + outcomes == expected
    assert busiest <= limit
    # They queued rather than hammered: at most one refused request per task per second of throttling (generous).
    assert refused <= (TRIGGERS + OPERATORS) * (took + 1)
