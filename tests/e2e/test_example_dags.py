"""Every example DAG runs with `airflow dags test` against the emulator: the ordinary ones to success with no
cancel sent, the `*_timeout` ones to a failed task whose remote execution was cancelled exactly once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_dags"
KEY = "sk-EXAMPLES-SECRET-0b7e"
VENDORS = ("dune", "izieroma", "bctrl", "meibel", "b3os")
DAG_IDS = sorted(
    {m for f in EXAMPLES.glob("*.py") for m in re.findall(r'dag_id="([a-z0-9_]+)"', f.read_text())}
)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[dict[str, str], EmulatorProcess]]:
    with tempfile.TemporaryDirectory(prefix="apc-examples-") as home, EmulatorProcess("--api-key", KEY) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        })
        for vendor in VENDORS:
            env[f"AIRFLOW_CONN_{vendor.upper()}_DEFAULT"] = json.dumps(
                {"conn_type": vendor, "host": emu.base_url(vendor), "password": KEY}
            )
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        yield env, emu


def test_examples_are_found():
    assert len(DAG_IDS) >= 9, DAG_IDS
    assert {f"example_{v}" for v in VENDORS} <= set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_example_dag_runs_against_the_emulator(sandbox, dag_id):
    env, emu = sandbox
    client = emu.client()
    seen = len(client.journal())
    run = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=600)
    entries = client.journal()[seen:]
    creates = [e for e in entries if e["action"] == "create" and e["status_code"] and e["status_code"] < 300]
    cancels = [e for e in entries if e["action"] == "cancel"]
    output = (run.stdout + run.stderr)[-4000:]
    assert KEY not in run.stdout + run.stderr, "the API key leaked into the task output"
    assert creates, f"{dag_id} started nothing:\n{output}"
    if dag_id.endswith("_timeout"):
        assert run.returncode != 0, f"{dag_id} should fail on its timeout:\n{output}"
        assert len(cancels) == 1, f"{dag_id}: expected exactly one cancel, got {cancels}\n{output}"
    else:
        assert run.returncode == 0, f"{dag_id} failed:\n{output}"
        assert cancels == [], f"{dag_id} sent a cancel on success: {cancels}"
