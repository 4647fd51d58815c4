"""DAG-parse cost: what importing an operator module adds on top of `airflow.sdk`, in fresh processes.

Each sample is a new interpreter that imports `airflow.sdk` (as every DAG file does), then times
`import <modules>`: CPU time of the process (time.process_time), which is what a DAG processor spends and
what neighbours on a shared machine disturb least; wall time is kept in the raw results. One unmeasured
run first, so bytecode caches exist, as on a deployed DAG processor (see probe_env). Our side is every
module in airflow_provider_cancel/vendors/ that exists when the benchmark runs (alone, and all together in
one process); the baselines are the Databricks and dbt Cloud operator modules. Also reports which heavy
modules an import drags in (they must stay out of DAG parsing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import ROOT, airflow_home, bench_env, median

BASELINE_MODULES = {
    "Databricks operators": "airflow.providers.databricks.operators.databricks",
    "dbt Cloud operators": "airflow.providers.dbt.cloud.operators.dbt",
}
HEAVY = ("aiohttp", "tenacity", "fastapi", "uvicorn", "starlette", "airflow_provider_cancel.emulator", "pandas")

_PROBE = """
import json, sys, time
import airflow.sdk
before = set(sys.modules)
start, cpu_start = time.perf_counter(), time.process_time()
for name in sys.argv[2:]:
    __import__(name)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
heavy = sorted(h for h in json.loads(sys.argv[1]) if h in sys.modules and h not in before)
print(json.dumps({"ms": 1000 * cpu, "wall_ms": 1000 * elapsed, "heavy": heavy}))
"""


def vendor_modules() -> list[str]:
    """Every vendor module present now (the five land one by one)."""
    folder = ROOT / "airflow_provider_cancel" / "vendors"
    return [f"airflow_provider_cancel.vendors.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]


def probe_env() -> dict[str, str]:
    """Bytecode caches on, as on a deployed DAG processor (the project's shells set PYTHONDONTWRITEBYTECODE,
    which made every sample compile our modules from source), kept out of the source tree."""
    env = bench_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(airflow_home()) / "pycache")
    return env


def probe(modules: Sequence[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), *modules],
        env=probe_env(), capture_output=True, text=True, timeout=300, cwd=str(ROOT),
    )
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(repeats: int) -> list[dict[str, Any]]:
    """Rows: name, modules, samples (ms), median_ms, heavy modules, error."""
    ours = vendor_modules()
    cases: list[tuple[str, list[str], str]] = [(m.rsplit(".", 1)[-1], [m], "ours") for m in ours]
    cases.append((f"all {len(ours)} of ours together", ours, "ours-all"))
    cases += [(name, [module], "baseline") for name, module in BASELINE_MODULES.items()]
    rows: list[dict[str, Any]] = []
    for name, modules, side in cases:
        warm = probe(modules)  # writes bytecode caches; not counted
        row: dict[str, Any] = {"name": name, "modules": modules, "side": side, "samples": [], "heavy": []}
        if "error" in warm:
            row["error"] = warm["error"]
            rows.append(row)
            continue
        rows.append(row)
    for _ in range(repeats):  # interleaved, so machine noise hits every case alike
        for row in rows:
            if "error" in row:
                continue
            sample = probe(row["modules"])
            if "error" in sample:
                row["error"] = sample["error"]
                continue
            row["samples"].append(sample["ms"])
            row.setdefault("wall_samples", []).append(sample["wall_ms"])
            row["heavy"] = sample["heavy"]
    for row in rows:
        row["median_ms"] = median(row["samples"]) if row["samples"] else None
    return rows


if __name__ == "__main__":
    for row in measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        print(json.dumps(row))
