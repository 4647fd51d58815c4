"""The example DAGs parse with no import error, and each vendor shows the ways people use it (the e2e test
`tests/e2e/test_example_dags.py` then runs them all against the emulator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.registry import CONN_TYPES
from tests.airflow_compat import DagBag, dag_bag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
VENDORS = CONN_TYPES


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return dag_bag(str(EXAMPLES))


def test_every_example_parses(dagbag):
    assert dagbag.import_errors == {}
    assert {f"example_{v}" for v in VENDORS} | {f"example_{v}_timeout" for v in VENDORS} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_vendor_example_shows_real_usage(dagbag, vendor):
    tasks = dagbag.dags[f"example_{vendor}"].tasks
    operators = [t for t in tasks if isinstance(t, ExecutionOperator)]
    sensors = [t for t in tasks if isinstance(t, ExecutionSensor)]
    templated = " ".join(repr(getattr(t, f)) for t in operators for f in t.template_fields)

    assert "params." in templated and "xcom_pull" in templated, "arguments from params and from upstream XCom"
    assert {t.deferrable for t in operators} == {True, False}, "deferrable and not"
    assert any(not t.wait_for_completion for t in operators) or sensors, "an execution started elsewhere"
    assert any("xcom_pull" in s.execution_id for s in sensors), "a sensor on an id from another task"
    [timeout] = dagbag.dags[f"example_{vendor}_timeout"].tasks
    assert timeout.execution_timeout and timeout.cancel_on_kill, "a timeout that cancels"
