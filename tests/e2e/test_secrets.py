"""The API key never leaks: real tasks on a real Airflow 3.3 (a success, a vendor failure, a timeout that cancels and
a deferred success, per vendor) run with a recognizable key, then every place a user or an attacker could read is
searched for it, in plain, base64 and URL-encoded form: task logs (every try, exception texts included), XComs,
rendered fields, the task-instance records, the emulator's journal and records, the metadata database (a full
dump), and every file in AIRFLOW_HOME (logs, the database server's own files)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from .airflow_stack import render_log_line
from .conftest import E2E_KEY, VENDORS

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_secrets"
EXPECTED = {"succeed": "success", "fail": "failed", "timeout": "failed", "deferred": "success"}


def leak_forms(key: str) -> dict[str, bytes]:
    """The key as it could appear: plain, URL-encoded, and base64 at each of the three byte alignments (the middle
    of the encoding, which does not depend on what surrounds the key)."""
    forms = {"plain": key.encode(), "url": urllib.parse.quote(key, safe="").encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"x" * shift + key.encode())
        forms[f"base64+{shift}"] = encoded[4:-4]  # drop the characters that mix in the neighbours
    return forms


def hits(blobs: dict[str, bytes], key: str) -> list[str]:
    forms = leak_forms(key)
    return [f"{where}: {form}" for where, blob in blobs.items() for form, needle in forms.items() if needle in blob]


def test_leak_forms_find_the_key_in_every_form():
    key = E2E_KEY
    for prefix in (b"", b"a", b"ab", b"Bearer "):
        assert hits({"b64": base64.b64encode(prefix + key.encode())}, key)
    assert hits({"url": urllib.parse.quote(f"k={key}").encode()}, key)
    assert not hits({"clean": b"sk-E2E-SECRET-xxxx"}, key)


def test_the_key_appears_nowhere(stack, emu_client):
    stack.wait_dag(DAG_ID)
    stack.unpause(DAG_ID)
    run_id = stack.trigger(DAG_ID)
    stack.wait_run(DAG_ID, run_id, {"success", "failed"}, timeout=180)
    tis = {ti["task_id"]: ti for ti in stack.tis(DAG_ID, run_id)}
    expected = {f"{vendor}_{name}": state for vendor in VENDORS for name, state in EXPECTED.items()}
    wrong = {t: ti["state"] for t, ti in tis.items() if ti["state"] != expected.get(t)}
    assert not wrong and len(tis) == len(expected), "\n".join(
        f"{t}: {state}\n{stack.task_log(DAG_ID, run_id, t, tis[t]['try_number'])[-2500:]}" for t, state in wrong.items()
    )

    blobs: dict[str, bytes] = {}
    logs: dict[str, str] = {}
    for task_id, ti in tis.items():
        for attempt in range(1, int(ti["try_number"]) + 1):
            entries = stack.task_log_entries(DAG_ID, run_id, task_id, attempt)
            logs[task_id] = "\n".join(render_log_line(e) for e in entries)  # as the UI shows it
            blobs[f"log {task_id} try {attempt}"] = (logs[task_id] + json.dumps(entries)).encode()
        blobs[f"task instance {task_id}"] = json.dumps(ti).encode()
        blobs[f"rendered fields {task_id}"] = json.dumps(stack.rendered_fields(DAG_ID, run_id, task_id)).encode()
        xcoms = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries")
        for entry in xcoms["xcom_entries"]:
            value = stack.xcom(DAG_ID, run_id, task_id, key=entry["key"])
            blobs[f"xcom {task_id} {entry['key']}"] = json.dumps(value, default=repr).encode()
    blobs["emulator journal"] = json.dumps(emu_client.journal()).encode()
    blobs["emulator executions"] = json.dumps(emu_client.executions()).encode()
    blobs["metadata database"] = stack.dump_database()  # XComs, rendered fields, triggers' kwargs, TI records
    assert stack.home is not None
    for path in Path(stack.home).rglob("*"):
        if path.is_file():
            blobs[f"file {path.relative_to(stack.home)}"] = path.read_bytes()

    # The search reached what it claims to: results, the vendors' errors, the timeouts' cancels, the deferrals.
    for vendor in VENDORS:
        assert blobs.get(f"xcom {vendor}_succeed execution_id") and blobs.get(f"xcom {vendor}_deferred return_value")
        assert "ExecutionFailed: " in logs[f"{vendor}_fail"], logs[f"{vendor}_fail"][-3000:]  # the exception text
        assert "Cancelled" in logs[f"{vendor}_timeout"]
    execution_ids = [json.loads(blobs[f"xcom {vendor}_succeed execution_id"]) for vendor in VENDORS]
    assert all(str(eid).encode() in blobs["metadata database"] for eid in execution_ids)  # the dump holds the XComs
    journal = emu_client.journal()
    assert {e["auth"] for e in journal if e["vendor"] in VENDORS} == {"ok"}  # the key was really sent

    assert hits(blobs, E2E_KEY) == [], "the API key leaked"
    print(f"\nsecrets: searched {len(blobs)} sources, {sum(map(len, blobs.values())):,} bytes: 0 hits")
