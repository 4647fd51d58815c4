"""The baseline providers (Databricks, dbt Cloud), installed for the benchmarks only, never as project dependencies.

They go into `<venv>/benchmark-baselines` with `pip install --no-deps --target`, pinned, and only benchmark
processes put that folder on sys.path. Why not a plain `pip install` into site-packages:
- `apache-airflow-providers-databricks` pulls databricks-sql-connector, which pins python-dateutil<3 and would
  downgrade the venv's python-dateutil, and pandas + pyarrow + numpy + thrift (~200 MB): none of them is
  imported by the two modules measured here (the operator module and the trigger);
- installed in site-packages, both providers would be discovered by every Airflow process of the venv,
  including the project's test suite.
Everything else they import (aiohttp, requests, tenacity, asgiref, common-compat, common-sql) is already
in the venv with Airflow 3.3.2.
"""

from __future__ import annotations

import subprocess
import sys

from _common import BASELINE_DIR, bench_env

PINS = {
    "apache-airflow-providers-databricks": "7.23.0",  # compatible with apache-airflow 3.3.2
    "apache-airflow-providers-dbt-cloud": "4.11.1",
    "apache-airflow-providers-http": "6.3.0",  # dbt Cloud's hook builds on it
    "mergedeep": "1.3.4",  # imported by the Databricks operator module
    "requests-toolbelt": "1.0.0",  # imported by the http provider's hook
}
MODULES = (
    "airflow.providers.databricks.operators.databricks",
    "airflow.providers.databricks.triggers.databricks",
    "airflow.providers.dbt.cloud.operators.dbt",
)

_CHECK = """
import importlib, importlib.metadata as md, json, sys
pins = json.loads(sys.argv[1])
for module in sys.argv[2:]:
    importlib.import_module(module)
wrong = {name: md.version(name) for name in pins if md.version(name) != pins[name]}
print(json.dumps(wrong))
"""


def _check() -> str | None:
    """None when the pinned baselines import from BASELINE_DIR; otherwise what went wrong."""
    import json

    result = subprocess.run(
        [sys.executable, "-c", _CHECK, json.dumps(PINS), *MODULES],
        env=bench_env(), capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
    wrong = json.loads(result.stdout.strip().splitlines()[-1])
    return f"unexpected versions {wrong}" if wrong else None


def ensure(log: object = print) -> None:
    """Install the pinned baselines if they are missing, then prove they import. Raises RuntimeError if not."""
    problem = _check()
    if problem is None:
        return
    log(f"installing the baseline providers into {BASELINE_DIR} (benchmark only; was: {problem})")  # type: ignore[operator]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--upgrade",
        "--target", str(BASELINE_DIR), *(f"{name}=={version}" for name, version in PINS.items()),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"pip install of the baselines failed:\n{result.stdout}\n{result.stderr}")
    problem = _check()
    if problem is not None:
        raise RuntimeError(f"the baseline providers were installed but do not import: {problem}")


if __name__ == "__main__":
    ensure()
    print(f"baselines ready in {BASELINE_DIR}: {', '.join(f'{k}=={v}' for k, v in PINS.items())}")
