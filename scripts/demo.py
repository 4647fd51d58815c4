"""The README's main job: a Dune query that outlives its task, against the bundled emulator.

It starts the emulator, runs the example DAG `example_dune_timeout` with `airflow dags test` in a throwaway
Airflow home, and shows what reached the API: the execution started, polled, and cancelled when the task
hit its 8 s execution_timeout. Exits non-zero if that is not what happened.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from airflow_provider_cancel.emulator.testing import EmulatorProcess

ROOT = Path(__file__).resolve().parents[1]
# The DAGs folder: the checkout's example_dags/, or any copy of it (scripts/test-wheel.sh runs this script from
# outside the checkout, against the installed wheel).
DAGS_FOLDER = Path(os.environ.get("APC_DEMO_DAGS_FOLDER", ROOT / "example_dags"))
DAG_ID = "example_dune_timeout"
KEY = "sk-demo-key"
SHOW = re.compile(r"Dune execution|Cancelled|cancel|Timeout|timed out|Task failed|AirflowTaskTimeout|Marking task")


def main() -> int:
    airflow = str(Path(sys.executable).with_name("airflow"))
    with tempfile.TemporaryDirectory(prefix="apc-demo-") as home, EmulatorProcess("--api-key", KEY) as emulator:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DUNE_DEFAULT": json.dumps(
                {"conn_type": "dune", "host": emulator.base_url("dune"), "password": KEY}
            ),
        }
        print(f"Emulator on {emulator.url}; Airflow home {home}")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        print(f"$ airflow dags test {DAG_ID}    (task long_query: execution_timeout=8s, query never ends)\n")
        run = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True)
        for line in (run.stdout + run.stderr).splitlines():
            if SHOW.search(line) and not line.lstrip().startswith(("File ", "raise ")):
                print("  " + line.strip()[:220])

        entries = emulator.client().journal(vendor="dune")
        print("\nWhat the Dune API (emulator) received:")
        start = entries[0]["ts"] if entries else 0.0
        for entry in entries:
            print(f"  +{entry['ts'] - start:5.1f}s  {entry['method']:<4} {entry['path']:<60} -> {entry['status_code']}")
        created = [e["execution_id"] for e in entries if e["action"] == "create"]
        cancels = [e for e in entries if e["action"] == "cancel"]
        polls = [e for e in entries if e["action"] == "status"]
        state = emulator.client().execution(created[0])["state"] if created else "none"
        print(f"\nExecution {created[0] if created else '?'}: {len(polls)} status polls, "
              f"{len(cancels)} cancel, final remote state: {state}")
        ok = len(created) == 1 and len(cancels) == 1 and state == "cancelled" and run.returncode != 0
        print("OK: the task timed out and its remote execution was cancelled exactly once." if ok
              else "UNEXPECTED: see the output above.")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
