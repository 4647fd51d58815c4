"""The command line: --help, argument errors, start-up faults/scenario/limits, reset, and process control."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import run_sql, status


@pytest.fixture(scope="module")
def emulator_args() -> list[str]:
    return [
        "--default-scenario", "fail:0",
        "--fault", "kind=503,action=create,retry_after=1",
        "--rate-limit", "dune=100/min",
        "--seed", "7",
        "--log-level", "error",
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_cancel.emulator", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_help_documents_scenarios_and_faults() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("emulate:<outcome>[:<N>|@<S>s][,rows=<R>]", "remote_cancel", "partial", "forever",
                 "kind=K", "429", "slow", "drop", "malformed", "probability", "retry_after", "--rate-limit",
                 "/_emulator", "dune", "wf_approval", "AIRFLOW_CONN_DUNE_DEFAULT", "EmulatorProcess",
                 "docs/emulator.md"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--default-scenario", "maybe"], "invalid scenario"),
        (["--fault", "kind=418"], "invalid fault"),
        (["--fault", "503"], "invalid fault"),
        (["--rate-limit", "dune"], "VENDOR=RATE"),
        (["--rate-limit", "dune=often"], "invalid rate limit"),
        (["--rate-limit", "nope=1/min"], "unknown vendor"),
    ],
)
def test_bad_arguments(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr


def test_startup_configuration_applies_and_reset_restores_it(
    dune: httpx.Client, control: EmulatorClient
) -> None:
    refused = dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"})
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1")
    assert status(dune, run_sql(dune))["state"] == "QUERY_STATE_FAILED"  # --default-scenario fail:0
    assert control.faults() == []
    control.clear_faults()
    control.set_default_scenario("succeed:0")
    control.reset()
    assert dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"}).status_code == 503
    assert control.stats()["faults"] == {"503": 1}
    assert httpx.get(f"{control.url}/_emulator/rate-limits").json() == {"dune": "100/60s"}


def test_process_stops_by_pid() -> None:
    process = EmulatorProcess("--log-level", "error").start()
    pid = process.pid
    assert pid is not None
    with process.client() as client:
        assert client.health()
    process.stop()
    assert process.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    process.stop()  # idempotent


def test_fixed_port_in_use_fails_clearly(emulator: EmulatorProcess) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        EmulatorProcess(port=emulator.port, startup_timeout=30).start()


def test_console_script_help() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "airflow-provider-cancel-emulator")
    if not os.path.exists(script):
        pytest.skip("package not installed with its console script")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "emulate:<outcome>" in result.stdout
