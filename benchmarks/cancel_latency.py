"""Cancel latency, one client process: from `on_kill` being called to the cancel request reaching the API.

Kinds:
  trigger              our ExecutionTrigger run by TriggerRunner.run_trigger, cancelled the way the triggerer
                       does on a user action (task.cancel with the user-action message, so run_trigger calls
                       on_kill), while `--background` other triggers keep polling in the same loop
  operator             our DuneRunQueryOperator polling in a worker thread (deferrable=False); on_kill is
                       called from another thread, as the task runner's SIGTERM handler does
  databricks-trigger   DatabricksExecutionTrigger, same procedure, against the runs/get + runs/cancel stand-in
  databricks-operator  DatabricksSubmitRunOperator.on_kill for a known run id, against the stand-in

`on_kill` is wrapped to note time.time() as it is entered; the server (emulator journal / stand-in receipts)
notes time.time() when the cancel request reaches its handler: both clocks are this machine's. One kill
at a time, `--kills` times. Writes one JSON object to --out: the kill and on_kill times per execution
id; the orchestrator joins them with the server's receipt times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OURS_HOOK = "airflow_provider_cancel.vendors.dune.DuneHook"


def timed_on_kill(cls: type, stamps: dict[str, float], key: str) -> None:
    """Wrap cls.on_kill (sync or async) to record when it is entered, under the instance's `key` attribute."""
    original = cls.on_kill
    if asyncio.iscoroutinefunction(original):

        async def on_kill(self: Any) -> None:
            stamps[str(getattr(self, key))] = time.time()
            await original(self)
    else:

        def on_kill(self: Any) -> None:  # type: ignore[misc]
            stamps[str(getattr(self, key))] = time.time()
            original(self)

    cls.on_kill = on_kill


async def kill_triggers(kind: str, ids: list[str], background_ids: list[str], interval: float) -> dict[str, Any]:
    from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG, TriggerRunner

    stamps: dict[str, float] = {}
    kills: dict[str, float] = {}
    polled: dict[str, asyncio.Event] = {}

    if kind == "trigger":
        from airflow_provider_cancel.core.trigger import ExecutionTrigger
        from airflow_provider_cancel.vendors.dune import DuneHook

        timed_on_kill(ExecutionTrigger, stamps, "execution_id")
        status = DuneHook.aget_status

        async def aget_status(self: Any, execution_id: str) -> Any:
            result = await status(self, execution_id)
            if execution_id in polled:
                polled[execution_id].set()
            return result

        DuneHook.aget_status = aget_status  # type: ignore[method-assign]

        def make(execution_id: str, poll: float) -> Any:
            return ExecutionTrigger(hook_class=OURS_HOOK, conn_id="dune_bench", execution_id=execution_id,
                                    poll_interval=poll, max_poll_interval=poll)
    else:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook
        from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

        timed_on_kill(DatabricksExecutionTrigger, stamps, "run_id")
        state = DatabricksHook.a_get_run_state

        async def a_get_run_state(self: Any, run_id: int) -> Any:
            result = await state(self, run_id)
            if str(run_id) in polled:
                polled[str(run_id)].set()
            return result

        DatabricksHook.a_get_run_state = a_get_run_state  # type: ignore[method-assign]

        def make(execution_id: str, poll: float) -> Any:
            return DatabricksExecutionTrigger(run_id=int(execution_id), databricks_conn_id="databricks_bench",
                                              polling_period_seconds=max(1, int(poll)))

    runner = TriggerRunner()
    background = []
    for number, execution_id in enumerate(background_ids):
        runner.triggers[number] = {"name": f"background-{number}", "events": 0}
        background.append(asyncio.create_task(runner.run_trigger(number, make(execution_id, interval))))
        await asyncio.sleep(interval / max(1, len(background_ids)))
    await asyncio.sleep(1.0)

    for number, execution_id in enumerate(ids, start=len(background_ids)):
        polled[execution_id] = asyncio.Event()
        runner.triggers[number] = {"name": f"killed-{number}", "events": 0}
        task = asyncio.create_task(runner.run_trigger(number, make(execution_id, 30.0)))
        await asyncio.wait_for(polled[execution_id].wait(), 30)
        await asyncio.sleep(0.05)  # now in its poll sleep, where a kill finds a deferred task
        kills[execution_id] = time.time()
        task.cancel(_USER_ACTION_CANCEL_MSG)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 40)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    return {"on_kill": stamps, "kill": kills}


class FakeTI:
    def __init__(self, task_id: str) -> None:
        self.dag_id, self.run_id, self.task_id = "bench", "manual__bench", task_id
        self.map_index, self.try_number = -1, 1
        self.start_date = datetime.now(UTC)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


class FakeStore(dict):  # type: ignore[type-arg]
    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value


def kill_operators(kind: str, count: int, run_ids: list[str]) -> dict[str, Any]:
    stamps: dict[str, float] = {}
    if kind == "operator":
        from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

        timed_on_kill(DuneRunQueryOperator, stamps, "execution_id")
        for number in range(count):
            op = DuneRunQueryOperator(task_id=f"kill_{number}", sql=f"SELECT {number} -- emulate:forever",
                                      conn_id="dune_bench", deferrable=False, poll_interval=0.2,
                                      max_poll_interval=0.2)
            polls = threading.Event()
            get_status = op.hook.get_status

            def counted(execution_id: str, _get: Any = get_status, _polls: threading.Event = polls) -> Any:
                result = _get(execution_id)
                _polls.set()
                return result

            op.hook.get_status = counted  # type: ignore[method-assign]
            context = {"ti": FakeTI(op.task_id), "task_state_store": FakeStore()}
            worker = threading.Thread(target=_run_quietly, args=(op, context), daemon=True)
            worker.start()
            if not polls.wait(30):
                raise RuntimeError("the operator never polled")
            time.sleep(0.05)
            op.on_kill()
            worker.join(30)
    else:
        from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

        timed_on_kill(DatabricksSubmitRunOperator, stamps, "run_id")
        for number, run_id in enumerate(run_ids[:count]):
            op = DatabricksSubmitRunOperator(task_id=f"kill_{number}", databricks_conn_id="databricks_bench",
                                             json={"run_name": "bench"})
            op.run_id = int(run_id)
            op.on_kill()
            time.sleep(0.05)
    return {"on_kill": stamps, "kill": {}}


def _run_quietly(op: Any, context: Any) -> None:
    with contextlib.suppress(Exception):  # ExecutionKilled: the expected end
        op.execute(context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True,
                        choices=["trigger", "operator", "databricks-trigger", "databricks-operator"])
    parser.add_argument("--kills", type=int, required=True)
    parser.add_argument("--ids-file", default="", help="JSON list of live execution ids (triggers)")
    parser.add_argument("--background", type=int, default=0, help="other triggers polling in the same loop")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of the background triggers")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ids = json.loads(Path(args.ids_file).read_text()) if args.ids_file else []
    if args.kind.startswith("databricks"):
        ids = [str(1_000_000 + i) for i in range(args.kills + args.background)]
    if args.kind.endswith("trigger"):
        result = asyncio.run(kill_triggers(args.kind, ids[: args.kills], ids[args.kills:][: args.background],
                                           args.interval))
    else:
        result = kill_operators(args.kind, args.kills, ids)
    Path(args.out).write_text(json.dumps(result))
    os._exit(0)


if __name__ == "__main__":
    main()
