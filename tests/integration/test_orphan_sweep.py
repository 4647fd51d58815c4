"""The orphan sweep against a real Airflow metadata database (SQLite, migrated by the probe) and the emulator.

Task instances in every state the sweep must tell apart, each with the record its task would have written; two
"schedulers" racing for the same records; a vendor that cannot be read for one round. The emulator's journal is
the witness (the e2e rows N1-N5 prove the same on a real stack, driven by the scheduler itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from airflow_provider_cancel.version_compat import AIRFLOW_V_3_3_PLUS

from .conftest import API_KEY, VENDORS, FakeStore, FakeTI, make_context
from .vendor_ops import scenario_operator

# The sweep reads task_state_store, which Airflow has from 3.3 (docs/kill-paths.md "Limits").
pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the orphan sweep needs Airflow 3.3's task_state_store")

CASES = ("failed_orphan", "marked_success", "still_running", "deferred", "up_for_retry", "kept_by_user",
         "within_grace", "already_cancelled", "vendor_down")
CANCELLED_BY_THE_SWEEP = {"failed_orphan", "marked_success", "vendor_down"}


def start(vendor: str) -> str:
    task_id = f"sweep-{uuid.uuid4().hex[:8]}"
    return scenario_operator(vendor, "forever", task_id=task_id, wait_for_completion=False).execute(
        make_context(FakeTI(task_id), FakeStore()))


@pytest.fixture
def probe_env(emulator, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/airflow.db"
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    for vendor in VENDORS:
        conn = {"conn_type": vendor, "host": emulator.base_url(vendor), "password": API_KEY,
                "extra": {"max_retries": 0}}
        env[f"AIRFLOW_CONN_{vendor.upper()}_PROBE"] = json.dumps(conn)
    return env


def said(probe: subprocess.Popen) -> dict:
    """The probe's next message (its other output is Airflow's logging)."""
    from .sweep_probe import PREFIX

    assert probe.stdout is not None
    for line in probe.stdout:
        if line.startswith(PREFIX):
            return dict(json.loads(line[len(PREFIX):]))
    raise AssertionError(f"the probe ended without a message: {probe.stderr.read() if probe.stderr else ''}")


def test_the_sweep_cancels_only_what_no_live_try_owns(emu, probe_env):
    ids = {vendor: {case: start(vendor) for case in CASES} for vendor in VENDORS}
    for vendor in VENDORS:
        scenario_operator(vendor, "forever").hook.cancel(ids[vendor]["already_cancelled"])
        emu.add_fault(vendor=vendor, action="status", kind="503", count=1, retry_after=0)  # vendor_down's read
    probe = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.sweep_probe", ",".join(VENDORS), json.dumps(ids)],
        env=probe_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        assert probe.stdin
        first = said(probe)
        for vendor in VENDORS:  # round 1: the vendor could not be read for vendor_down; everything else done
            assert "vendor_down" in first["left"][vendor]
            assert len([c for c in emu.cancels(ids[vendor]["vendor_down"]) if not c["fault"]]) == 0
        emu.clear_faults()
        probe.stdin.write("\n")
        probe.stdin.flush()
        said(probe)
        probe.stdin.write("\n")
        probe.stdin.flush()
        result = said(probe)
        assert probe.wait(60) == 0
    finally:
        if probe.poll() is None:
            probe.kill()
    assert result["claims"] == {"a": result["seen"], "b": 0}  # the second scheduler's claims all lost
    assert result["seen"] == len(VENDORS) * 5  # finished, outside the grace period: what a round looks at
    for vendor in VENDORS:
        for case in CASES:
            cancels = [c for c in emu.cancels(ids[vendor][case]) if not c["fault"]]
            expected = 1 if case in CANCELLED_BY_THE_SWEEP or case == "already_cancelled" else 0
            assert len(cancels) == expected, (vendor, case, cancels)
        # settled records are dropped; what a live try owns, what the user kept and what is in its grace stay
        assert result["left"][vendor] == sorted(["still_running", "deferred", "up_for_retry", "kept_by_user",
                                                 "within_grace"])
    for vendor in VENDORS:  # clean up what the test left running
        hook = scenario_operator(vendor, "forever").hook
        for case in ("still_running", "deferred", "up_for_retry", "kept_by_user", "within_grace"):
            hook.cancel(ids[vendor][case])
