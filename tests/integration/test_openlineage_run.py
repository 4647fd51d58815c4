"""OpenLineage on a real run: `airflow dags test` of a DAG with every vendor's operator against the bundled
emulator, OpenLineage's own listener writing to its file transport. Each task's COMPLETE (or FAIL) event
carries our facets, and no event carries the API key in any form."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorProcess
from airflow_provider_cancel.registry import VENDORS
from airflow_provider_cancel.version_compat import AIRFLOW_VERSION

pytest.importorskip("airflow.providers.openlineage")
# On 3.0.6 `airflow dags test` turns the DAG into a scheduler DAG by deep-copying it, which failed on the operators'
# thread locks ("cannot pickle '_thread.lock' object") before the tasks became copyable
# (tests/integration/test_running_paths.py::test_a_copied_task_runs_and_cancels_on_its_own). This real run is
# proven on 3.3+ only, where the example DAGs run too (tests/e2e/test_example_dags.py); the facets themselves are
# tested on every line (tests/unit/test_lineage_facets.py).
pytestmark = pytest.mark.skipif(AIRFLOW_VERSION < (3, 3, 0), reason="airflow dags test deep-copies the DAG before 3.3")

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
KEY = "sk-LINEAGE-SECRET-5f1d"
DAG_ID = "lineage_run"
DAG = textwrap.dedent(
    f'''
    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_cancel.emulator.testing import operator_args
    from airflow_provider_cancel.vendors import b3os, bctrl, dune, izieroma, meibel

    fast = dict(poll_interval=0.2, max_poll_interval=0.5, retries=0)
    with DAG(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        dune.DuneRunQueryOperator(task_id="dune", **operator_args("dune", "succeed:1", "lineage"), **fast)
        dune.DuneRunQueryOperator(task_id="dune_saved", query_id=3493826, query_parameters={{"min_block": 17}},
                                  **fast)
        dune.DuneRunQueryOperator(task_id="dune_fails", **operator_args("dune", "fail:1", "lineage"), **fast)
        izieroma.IzieromaRunOperator(task_id="izieroma", **operator_args("izieroma", "succeed:1", "l"), **fast)
        bctrl.BctrlInvokeOperator(task_id="bctrl", **operator_args("bctrl", "succeed:1", "l"), **fast)
        meibel.MeibelRunBatchOperator(task_id="meibel", **operator_args("meibel", "succeed:1", "l"), **fast)
        b3os.B3osRunWorkflowOperator(task_id="b3os", **operator_args("b3os", "succeed:1", "l"), **fast)
    '''
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], str, list[dict]]:
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "lineage_run.py").write_text(DAG)
    log_file = home / "openlineage.jsonl"
    with EmulatorProcess("--api-key", KEY) as emulator:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENLINEAGE"))}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "lineage-test",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(log_file), "append": True}
            ),
        })
        for vendor in VENDORS:
            env[f"AIRFLOW_CONN_{vendor.conn_type.upper()}_DEFAULT"] = json.dumps(
                {"conn_type": vendor.conn_type, "host": emulator.base_url(vendor.conn_type), "password": KEY}
            )
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        run = subprocess.run([AIRFLOW, "dags", "test", DAG_ID], env=env, capture_output=True, text=True,
                             timeout=600)
        journal = emulator.client().journal()
    output = run.stdout + run.stderr
    assert log_file.exists(), f"no OpenLineage events were written:\n{output[-4000:]}"
    text = log_file.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()], text, journal


def task_event(events: list[dict[str, Any]], task_id: str, event_type: str) -> dict[str, Any]:
    found = [e for e in events if e["eventType"] == event_type and e["job"]["name"] == f"{DAG_ID}.{task_id}"]
    assert len(found) == 1, (task_id, event_type, [(e["eventType"], e["job"]["name"]) for e in events])
    return found[0]


def created_id(journal: list[dict], vendor: str) -> list[str]:
    return [e["execution_id"] for e in journal if e["vendor"] == vendor and e["action"] == "create"
            and e["status_code"] and e["status_code"] < 300]


@pytest.mark.parametrize("vendor", [v.conn_type for v in VENDORS])
def test_complete_event_names_the_vendor_execution_and_page(events: Any, vendor: str) -> None:
    found, _, journal = events
    run_facets = task_event(found, vendor, "COMPLETE")["run"]["facets"]
    facet = run_facets["remoteExecution"]
    assert facet["vendor"] == vendor
    assert facet["connectionId"] == f"{vendor}_default"
    assert facet["executionId"] in created_id(journal, vendor)
    assert run_facets["externalQuery"] == {**run_facets["externalQuery"], "externalQueryId": facet["executionId"],
                                           "source": vendor}
    if vendor in ("meibel", "b3os"):  # the vendors whose page these arguments have (izieroma, bctrl: none)
        assert facet["executionUrl"].startswith("https://")


def test_dune_sql_and_saved_query_job_facets(events: Any) -> None:
    found, _, _ = events
    adhoc = task_event(found, "dune", "COMPLETE")["job"]["facets"]
    assert adhoc["sql"]["query"].startswith("SELECT 1 -- emulate:succeed:1")
    assert adhoc["sql"]["dialect"] == "dune"
    saved = task_event(found, "dune_saved", "COMPLETE")
    assert "sql" not in saved["job"]["facets"]
    assert saved["job"]["facets"]["duneQuery"]["queryId"] == 3493826
    assert saved["job"]["facets"]["duneQuery"]["parameters"] == {"min_block": 17}
    assert saved["run"]["facets"]["remoteExecution"]["executionUrl"] == "https://dune.com/queries/3493826"


def test_a_failed_task_reports_its_execution_too(events: Any) -> None:
    found, _, journal = events
    failed = task_event(found, "dune_fails", "FAIL")
    facet = failed["run"]["facets"]["remoteExecution"]
    assert facet["vendor"] == "dune"
    assert facet["executionId"] in created_id(journal, "dune")
    assert failed["job"]["facets"]["sql"]["query"].startswith("SELECT 1 -- emulate:fail:1")


def test_no_event_carries_the_api_key(events: Any) -> None:
    found, text, _ = events
    assert len(found) >= 2 * 7  # a START and an end event per task at least
    forms = {KEY, base64.b64encode(KEY.encode()).decode(), urllib.parse.quote(KEY), KEY[3:]}
    assert [form for form in forms if form in text] == []
