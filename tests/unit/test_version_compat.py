"""What version_compat says about the running Airflow, checked against the Airflow installed here."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from packaging.version import Version

from airflow_provider_cancel import version_compat
from airflow_provider_cancel.version_compat import AIRFLOW_V_3_4_PLUS, kill_budget_seconds


def test_the_flags_match_the_installed_airflow():
    installed = Version(Version(version("apache-airflow-core")).base_version)
    assert (installed >= Version("3.3")) == version_compat.AIRFLOW_V_3_3_PLUS
    assert hasattr(__import__("airflow.triggers.base").triggers.base.BaseTrigger,
                                                     "on_kill") == version_compat.TRIGGER_ON_KILL


@pytest.mark.parametrize(("cleanup", "budget"), [("60", 17.0), ("10", 8.5), ("1", 0.5), ("x", 17.0)])
def test_kill_budget_follows_the_cleanup_time_only_on_3_4(monkeypatch, cleanup, budget):
    monkeypatch.setenv("AIRFLOW__CORE__KILLED_TASK_CLEANUP_TIME", cleanup)
    # Up to 3.3 SIGKILL follows 5 s after SIGTERM, whatever the setting says (it is read by nothing there).
    assert kill_budget_seconds() == (budget if AIRFLOW_V_3_4_PLUS else 3.5)


def test_3_4_supervisor_waits_the_cleanup_time_and_does_not_forward_sigterm():
    if not AIRFLOW_V_3_4_PLUS:
        pytest.skip("the 3.4 supervisor facts: this Airflow is older")
    from pathlib import Path

    from airflow.sdk.execution_time import coordinator, supervisor

    source = Path(supervisor.__file__).read_text()
    assert "escalation_delay=KILLED_TASK_CLEANUP_TIME" in source and "_forward_signal" not in source
    assert "warm shutdown" in Path(coordinator.__file__).read_text()
