"""Shared helpers of the benchmarks: environment, child processes (ended by pid), statistics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
API_KEY = "sk-bench-0000"
DATABRICKS_TOKEN = "dapi-bench-0000"
# Where the baseline providers live: inside the current venv, but on sys.path only for benchmark processes.
BASELINE_DIR = Path(sys.prefix) / "benchmark-baselines"

_AIRFLOW_HOME: str | None = None


def airflow_home() -> str:
    """A throwaway AIRFLOW_HOME for every benchmark process (no airflow.cfg written into the project)."""
    global _AIRFLOW_HOME
    if _AIRFLOW_HOME is None:
        _AIRFLOW_HOME = tempfile.mkdtemp(prefix="bench-airflow-home-")
    return _AIRFLOW_HOME


def bench_env(extra: Mapping[str, str] | None = None, *, baselines: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = os.environ.get("BENCH_AIRFLOW_HOME") or airflow_home()
    env["AIRFLOW_DISABLE_GREENBACK_PORTAL"] = "true"
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "false"
    paths = [str(ROOT), str(BENCH_DIR)]
    if baselines:
        paths.insert(0, str(BASELINE_DIR))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def ours_conn(base_url: str) -> str:
    return json.dumps({"conn_type": "dune", "host": base_url, "password": API_KEY})


def databricks_conn(port: int) -> str:
    return json.dumps(
        {"conn_type": "databricks", "host": "127.0.0.1", "port": port, "schema": "http", "password": DATABRICKS_TOKEN}
    )


# -- child processes -----------------------------------------------------------------------------------------


class Child:
    """A benchmark child process; stop() ends exactly this pid (SIGTERM, then SIGKILL)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], stdout: Any = subprocess.DEVNULL) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(args), env=dict(env), stdout=stdout, stderr=self.log, stdin=subprocess.DEVNULL, cwd=str(ROOT)
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()


def run_child_json(args: Sequence[str], *, env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run a benchmark script that writes one JSON object to the file named by its --out argument."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    child = Child([*args, "--out", path], env=env)
    try:
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no result within {timeout:.0f} s (ended it)") from None
        text = Path(path).read_text() if os.path.exists(path) else ""
        if code != 0 or not text:
            raise RuntimeError(f"{' '.join(args[:3])} ... exited {code}:\n{child.output()[-3000:]}")
        return json.loads(text)  # type: ignore[no-any-return]
    finally:
        child.stop()
        if os.path.exists(path):
            os.unlink(path)


class StandIn:
    """benchmarks/standin.py on a free loopback port."""

    def __init__(self) -> None:
        from airflow_provider_cancel.emulator.testing import free_port

        self.port = free_port()
        self.child = Child([sys.executable, str(BENCH_DIR / "standin.py"), "--port", str(self.port)],
                           env=bench_env(baselines=False))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/_standin/health", timeout=2).json().get("pid") == self.child.pid:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if self.child.proc.poll() is not None or time.monotonic() > deadline:
                output = self.child.output()
                self.child.stop()
                raise RuntimeError(f"stand-in did not start:\n{output[-3000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.child.pid

    def receipts(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_standin/receipts", timeout=10).json()["receipts"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.child.stop()


def create_forever_executions(dune_base_url: str, count: int) -> list[str]:
    """`count` Dune executions that never end by themselves, created on the emulator (64 at a time)."""
    import asyncio

    import aiohttp

    async def create_all() -> list[str]:
        semaphore = asyncio.Semaphore(64)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def one(i: int) -> str:
                async with semaphore, session.post(
                    f"{dune_base_url}/api/v1/sql/execute",
                    json={"sql": f"SELECT {i} -- emulate:forever"},
                    headers={"X-Dune-Api-Key": API_KEY},
                ) as response:
                    response.raise_for_status()
                    return str((await response.json())["execution_id"])

            return list(await asyncio.gather(*(one(i) for i in range(count))))

    return asyncio.run(create_all())


# -- statistics ----------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rss_kb() -> int:
    """Resident set size of this process now (not the peak), from /proc."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024
