"""The shared per-loop aiohttp session is closed when its loop ends: no "Unclosed client session" at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from airflow_provider_cancel.vendors.dune import DuneHook

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
