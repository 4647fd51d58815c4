"""Every example DAG runs with `airflow dags test` against the emulator: the ordinary ones to success with no
cancel sent, the `*_timeout` ones to a failed task whose remote execution was cancelled exactly once. The
complete example of each vendor's docs page (docs/<vendor>.md) runs to success too, so the docs stay true."""

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
from airflow_provider_cancel.registry import CONN_TYPES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_dags"
KEY = "sk-EXAMPLES-SECRET-0b7e"
VENDORS = CONN_TYPES
DAG_IDS = sorted(
    {m for f in EXAMPLES.glob("*.py") for m in re.findall(r'dag_id="([a-z0-9_]+)"', f.read_text())}
)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DOC_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def doc_example(vendor: str) -> str:
    """The complete example of a vendor's docs page: its code block that defines a DAG."""
    blocks = [b for b in DOC_BLOCK.findall((ROOT / "docs" / f"{vendor}.md").read_text()) if "with DAG(" in b]
    assert len(blocks) == 1, f"docs/{vendor}.md should have exactly one complete example"
    return blocks[0]


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


def dags_test(sandbox: tuple[dict[str, str], EmulatorProcess], dag_id: str, dags_folder: Path = EXAMPLES):
    """`airflow dags test` one DAG; returns the run, the emulator's journal entries it made, and its output."""
    env, emu = sandbox
    client = emu.client()
    seen = len(client.journal())
    run = subprocess.run([AIRFLOW, "dags", "test", dag_id], env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder)},
                         capture_output=True, text=True, timeout=600)
    assert KEY not in run.stdout + run.stderr, "the API key leaked into the task output"
    return run, client.journal()[seen:], (run.stdout + run.stderr)[-4000:]


def started_and_cancelled(entries: list[dict]) -> tuple[list[dict], list[dict]]:
    creates = [e for e in entries if e["action"] == "create" and e["status_code"] and e["status_code"] < 300]
    return creates, [e for e in entries if e["action"] == "cancel"]


def test_examples_are_found():
    assert len(DAG_IDS) >= 9, DAG_IDS
    assert {f"example_{v}" for v in VENDORS} <= set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_example_dag_runs_against_the_emulator(sandbox, dag_id):
    run, entries, output = dags_test(sandbox, dag_id)
    creates, cancels = started_and_cancelled(entries)
    assert creates, f"{dag_id} started nothing:\n{output}"
    if dag_id == "example_cleanup":  # its clean-up task cancels the execution it left running, once
        assert run.returncode == 0 and len(creates) == 1, f"{dag_id} failed:\n{output}"
        assert [c["execution_id"] for c in cancels] == [creates[0]["execution_id"]], output
    elif dag_id.endswith("_timeout"):
        assert run.returncode != 0, f"{dag_id} should fail on its timeout:\n{output}"
        assert len(cancels) == 1, f"{dag_id}: expected exactly one cancel, got {cancels}\n{output}"
    else:
        assert run.returncode == 0, f"{dag_id} failed:\n{output}"
        assert cancels == [], f"{dag_id} sent a cancel on success: {cancels}"


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_docs_complete_example_runs_against_the_emulator(sandbox, vendor, tmp_path):
    code = doc_example(vendor)
    (tmp_path / f"docs_{vendor}.py").write_text(code)
    dag_id = re.search(r'dag_id="([a-z0-9_]+)"', code).group(1)
    run, entries, output = dags_test(sandbox, dag_id, tmp_path)
    creates, cancels = started_and_cancelled(entries)
    assert run.returncode == 0 and creates, f"docs/{vendor}.md's example {dag_id} failed:\n{output}"
    assert cancels == [], f"docs/{vendor}.md's example sent a cancel on success: {cancels}"
