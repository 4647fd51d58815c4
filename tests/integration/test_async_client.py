"""The async path (straight on aiohttp) over real HTTP: the same retry, error and secret rules as the sync
path, and the shared per-loop session is closed when its loop ends (no "Unclosed client session" at exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http import ApiCall, RetryPolicy
from airflow_provider_cancel.vendors.dune import DuneHook

from .conftest import API_KEY

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


def attempts(emu, action: str, execution_id: str | None = None) -> list[dict]:
    return emu.journal(vendor="dune", action=action, **({"execution_id": execution_id} if execution_id else {}))


async def test_a_dropped_read_and_a_429_are_retried_then_answered(emu):
    hook = DuneHook("dune_emu", retry=FAST_RETRY)
    execution_id = DuneHook("dune_emu").execute_sql("SELECT 1 -- emulate:forever")
    emu.add_fault(vendor="dune", action="status", kind="drop", count=1)
    assert (await hook.aget_status(execution_id)).state.value == "queued"
    assert [entry["fault"] for entry in attempts(emu, "status", execution_id)] == ["drop", None]
    emu.add_fault(vendor="dune", action="cancel", kind="429", retry_after=0, count=1)
    assert (await hook.acancel(execution_id)).value == "requested"
    assert [entry["fault"] for entry in attempts(emu, "cancel", execution_id)] == ["429", None]


async def test_an_ambiguous_failure_of_a_create_is_not_retried(emu):
    client = await DuneHook("dune_emu", retry=FAST_RETRY).aclient()
    before = len(attempts(emu, "create"))
    emu.add_fault(vendor="dune", action="create", kind="drop", count=1)
    call = ApiCall("POST", "/api/v1/sql/execute", "create", json={"sql": "SELECT 1 -- emulate:forever"},
                   retry_safe=False)
    with pytest.raises(httpx.TransportError):
        await client.arequest(call)
    assert len(attempts(emu, "create")) == before + 1


async def test_a_wrong_key_is_a_clear_error_without_the_key(emu):
    with pytest.raises(ExecutionApiError) as raised:
        await DuneHook("dune_badkey").aget_status("01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert raised.value.status_code == 401
    assert "sk-" not in str(raised.value) and API_KEY not in repr(raised.value)

# What `airflow dags test` does with a deferred task (InProcessTestSupervisor.run_trigger_in_process): take
# the trigger's first event inside asyncio.run, then carry on until the process exits.
SCRIPT = """
import asyncio, json, sys
from airflow_provider_cancel.core.trigger import ExecutionTrigger
trigger = ExecutionTrigger(hook_class="airflow_provider_cancel.vendors.dune.DuneHook", conn_id="dune_emu",
                           execution_id=sys.argv[1], poll_interval=0.05, max_poll_interval=0.2)
event = asyncio.run(anext(trigger.run(), None))
print("EVENT", json.dumps(event.payload))
"""


def test_no_unclosed_session_when_the_trigger_ran_in_asyncio_run(emu):
    execution_id = DuneHook("dune_emu").execute_sql("SELECT 1 -- emulate:succeed:1")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, execution_id],
        env={**os.environ, "AIRFLOW_DISABLE_GREENBACK_PORTAL": "true"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith("EVENT ")]
    assert [event["state"] for event in events] == ["succeeded"]
    output = result.stdout + result.stderr  # Airflow's logging writes to stdout
    assert "Unclosed" not in output, output
