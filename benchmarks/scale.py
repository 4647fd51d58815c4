"""Triggerer scale, one client process: N triggers in one event loop, run the way Airflow's triggerer runs them.

Each trigger runs inside `TriggerRunner.run_trigger` (the triggerer's own wrapper) as one asyncio task of one
event loop; hooks resolve their connection from AIRFLOW_CONN_* variables. The server (emulator or stand-in)
is another process, so the CPU time read here (time.process_time: user + system, all threads) is the
client's alone. Phases, all bounded in time: start N triggers spread evenly over one poll interval, let
every trigger complete one more interval (pools warm, first-poll costs paid), then measure a window.

Clients:
  ours        ExecutionTrigger + DuneHook, polling the emulator's Dune status endpoint
  databricks  DatabricksExecutionTrigger (its own aiohttp session per trigger) polling the runs/get stand-in
  httpx       a minimal trigger on one shared plain `httpx.AsyncClient()` (default transport and limits)
  aiohttp     a minimal trigger on one shared plain `aiohttp.ClientSession()` (the floor)
  idle        a trigger that only sleeps: the triggerer's own memory per trigger

Writes one JSON object to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import API_KEY, percentile, rss_kb
from airflow.triggers.base import BaseTrigger, TriggerEvent

OURS_HOOK = "airflow_provider_cancel.vendors.dune.DuneHook"


class Meter:
    """Counts completed polls, their latency, and how late each poll's sleep woke up (event-loop lag)."""

    def __init__(self) -> None:
        self.recording = False
        self.polls = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.woke_at: list[float] = []  # when each of `lateness` happened: does the lag grow through the window?
        self._sleep = asyncio.sleep

    def wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def polled(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except Exception:
                if self.recording:
                    self.errors += 1
                raise
            if self.recording:
                self.polls += 1
                self.latencies.append(time.perf_counter() - start)
            return result

        return polled

    async def sleep(self, delay: float, result: Any = None) -> Any:
        start = time.perf_counter()
        value = await self._sleep(delay, result)
        if self.recording and delay > 0:
            now = time.perf_counter()
            self.lateness.append(now - start - delay)
            self.woke_at.append(now)
        return value


class AsyncioWithMeteredSleep:
    """Stands in for the `asyncio` module inside a trigger module: everything as is, but `sleep` is metered."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        return await self._meter.sleep(delay, result)


# -- plain baselines -------------------------------------------------------------------------------------------

_SHARED: dict[str, Any] = {}


class PlainPollTrigger(BaseTrigger):
    """The least a trigger can do: GET the Dune status, parse the JSON, sleep; on one shared client."""

    meter: Meter

    def __init__(self, kind: str, base_url: str, execution_id: str, interval: float) -> None:
        super().__init__()
        self.kind, self.base_url, self.execution_id, self.interval = kind, base_url, execution_id, interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("scale.PlainPollTrigger", {"kind": self.kind, "base_url": self.base_url,
                                           "execution_id": self.execution_id, "interval": self.interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        url = f"{self.base_url}/api/v1/execution/{self.execution_id}/status"
        headers = {"X-Dune-Api-Key": API_KEY}
        if self.kind == "idle":  # no request at all: what the triggerer itself keeps per trigger
            while True:
                await self.meter.sleep(self.interval)
                if self.interval < 0:
                    yield TriggerEvent({})
        if self.kind == "httpx":
            import httpx

            client = _SHARED.setdefault("httpx", httpx.AsyncClient())

            async def get() -> Any:
                response = await client.get(url, headers=headers)
                response.raise_for_status()
                return response.json()
        else:
            import aiohttp

            session = _SHARED.setdefault("aiohttp", aiohttp.ClientSession())

            async def get() -> Any:
                async with session.get(url, headers=headers) as response:
                    response.raise_for_status()
                    return await response.json()

        poll = self.meter.wrap(get)
        while True:
            try:
                body = await poll()
            except Exception:  # e.g. httpx's PoolTimeout when it falls behind: counted, and go on polling
                body = {}
            if body.get("is_execution_finished"):
                yield TriggerEvent(body)
                return
            await self.meter.sleep(self.interval)


# -- building the triggers -------------------------------------------------------------------------------------


def build(client: str, meter: Meter, args: argparse.Namespace, ids: list[str]) -> tuple[list[BaseTrigger], Any]:
    """The N triggers, instrumented; plus a coroutine function that pre-warms one-time costs (imports, config)."""
    n, interval = args.n, args.interval
    if client.startswith("ours"):
        import aiohttp  # noqa: F401, RUF100 - imported on first poll anyway; a one-time cost, not per execution

        from airflow_provider_cancel.core import trigger as trigger_module
        from airflow_provider_cancel.vendors.dune import DuneHook

        DuneHook.aget_status = meter.wrap(DuneHook.aget_status)  # type: ignore[method-assign]
        trigger_module.asyncio = AsyncioWithMeteredSleep(meter)  # type: ignore[attr-defined]
        triggers: list[BaseTrigger] = [
            trigger_module.ExecutionTrigger(
                hook_class=OURS_HOOK, conn_id="dune_bench", execution_id=ids[i],
                poll_interval=interval, max_poll_interval=interval,
            )
            for i in range(n)
        ]

        async def warm() -> None:
            # One status read before the baseline: the payload model's schema (built on first use), the shared
            # session and its first connection are paid once per triggerer, not per execution.
            await DuneHook("dune_bench").aget_status(ids[0])

        return triggers, warm
    if client == "databricks":
        from airflow.providers.databricks.hooks.databricks import DatabricksHook
        from airflow.providers.databricks.triggers import databricks as trigger_module

        DatabricksHook.a_get_run_state = meter.wrap(DatabricksHook.a_get_run_state)  # type: ignore[method-assign]
        trigger_module.asyncio = AsyncioWithMeteredSleep(meter)  # type: ignore[attr-defined]
        triggers = [
            trigger_module.DatabricksExecutionTrigger(
                run_id=i + 1, databricks_conn_id="databricks_bench", polling_period_seconds=int(interval)
            )
            for i in range(n)
        ]

        async def warm() -> None:
            from airflow.providers.common.compat.connection import get_async_connection
            from airflow.providers_manager import ProvidersManager

            manager = ProvidersManager()
            _ = manager.hooks["databricks"], manager.providers  # the user-agent lookup, once per process
            await get_async_connection("databricks_bench")

        return triggers, warm
    PlainPollTrigger.meter = meter
    if client == "httpx":
        import httpx
    elif client == "aiohttp":
        import aiohttp
    triggers = [PlainPollTrigger(client, args.url, ids[i], interval) for i in range(n)]

    async def warm() -> None:  # the shared client and its first connection, paid once (as for ours)
        url, headers = f"{args.url}/api/v1/execution/{ids[0]}/status", {"X-Dune-Api-Key": API_KEY}
        if client == "httpx":
            await _SHARED.setdefault("httpx", httpx.AsyncClient()).get(url, headers=headers)
        elif client == "aiohttp":
            async with _SHARED.setdefault("aiohttp", aiohttp.ClientSession()).get(url, headers=headers) as response:
                await response.read()

    return triggers, warm


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    ids = json.loads(Path(args.ids_file).read_text()) if args.ids_file else [f"{i:026d}" for i in range(args.n)]
    meter = Meter()
    triggers, warm = build(args.client, meter, args, ids)
    runner = TriggerRunner()
    await warm()
    gc.collect()
    rss_base = rss_kb()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc)
        before = tracemalloc.take_snapshot()

    # Each trigger starts at its own random moment of the first interval, as deferred tasks arrive in a
    # triggerer: no artificial batches of triggers that would wake together (and share loop iterations).
    loop = asyncio.get_running_loop()
    offsets = sorted(random.uniform(0, args.interval) for _ in range(args.n))
    tasks: list[asyncio.Task[Any]] = []
    began = loop.time()
    for trigger_id, offset in enumerate(offsets):
        wait = began + offset - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        runner.triggers[trigger_id] = {"name": f"bench-{trigger_id}", "events": 0}
        tasks.append(asyncio.create_task(runner.run_trigger(trigger_id, triggers[trigger_id])))
    del triggers
    await asyncio.sleep(args.interval + args.settle)

    rss_start = rss_kb()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    meter.recording = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(args.window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    meter.recording = False
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    rss_end = rss_kb()
    ended = sum(task.done() for task in tasks)
    if args.tracemalloc:  # where the memory per execution goes: the largest growths since before the triggers
        gc.collect()
        growth = tracemalloc.take_snapshot().compare_to(before, "traceback")
        for stat in growth[:40]:
            print(f"{stat.size_diff / args.n:8.0f} B/exec {stat.count_diff / args.n:6.1f} blocks/exec", file=sys.stderr)
            for line in stat.traceback.format()[-2 * args.tracemalloc:]:
                print("    " + line, file=sys.stderr)
        print(f"total {sum(s.size_diff for s in growth) / args.n:.0f} B/exec", file=sys.stderr)

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for shared in _SHARED.values():
        close = getattr(shared, "aclose", None) or shared.close
        await close()

    wall = wall1 - wall0
    expected = args.n * wall / args.interval
    middle = wall0 + wall / 2
    first, second = ([late for late, at in zip(meter.lateness, meter.woke_at, strict=True) if (at < middle) == is_first]
                     for is_first in (True, False))
    half = {f"sleep_late_p{q}_{name}_half_ms": 1000 * percentile(values, q) if values else math.nan
            for q in (50, 99) for name, values in (("first", first), ("second", second))}
    return {
        "client": args.client,
        "n": args.n,
        "interval_s": args.interval,
        "window_s": wall,
        "polls": meter.polls,
        "errors": meter.errors,
        "triggers_ended_early": ended,
        "cpu_s": cpu1 - cpu0,
        "cpu_ms_per_poll": 1000 * (cpu1 - cpu0) / max(1, meter.polls),
        "cpu_share": (cpu1 - cpu0) / wall,
        "rss_base_kb": rss_base,
        "rss_start_kb": rss_start,
        "rss_end_kb": rss_end,
        # Held by the N deferred executions, before the window: the meter's own lists grow during it.
        "kb_per_execution": (rss_start - rss_base) / args.n,
        "window_growth_kb": rss_end - rss_start,
        "poll_rate_ratio": meter.polls / expected if expected else 0.0,
        "latency_p50_ms": 1000 * percentile(meter.latencies, 50),
        "latency_p99_ms": 1000 * percentile(meter.latencies, 99),
        "sleep_late_p50_ms": 1000 * percentile(meter.lateness, 50),
        "sleep_late_p99_ms": 1000 * percentile(meter.lateness, 99),
        **half,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", required=True,
                        choices=["ours", "databricks", "httpx", "aiohttp", "idle"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True, help="seconds between two polls of one trigger")
    parser.add_argument("--window", type=float, required=True, help="seconds measured")
    parser.add_argument("--settle", type=float, default=1.0, help="extra seconds before the window")
    parser.add_argument("--url", default="", help="Dune base URL for the plain clients")
    parser.add_argument("--ids-file", default="", help="JSON list of execution ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="", help="write cProfile stats of the window to this file")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="print where the memory per execution goes (tracebacks of FRAMES frames)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    random.seed(args.seed)
    result = asyncio.run(measure(args))
    Path(args.out).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of N finished triggers: nothing left to measure


if __name__ == "__main__":
    main()
