"""What the tests need from Airflow, on every Airflow 3 line the provider supports (3.0 to 3.4).

The provider itself imports what some lines lack through common-compat; the tests reach further into Airflow
(the triggerer's runner, the task runner's timeout, DAG serialization), and those paths moved between lines.
Tests that prove something only one line has are marked with a skip that says why, never skipped silently.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.jobs import triggerer_job_runner
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    TaskDeferred,
)

from airflow_provider_cancel.version_compat import AIRFLOW_VERSION, TRIGGER_ON_KILL

try:
    from airflow.sdk.exceptions import TaskDeferralError
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import TaskDeferralError  # type: ignore[no-redef,attr-defined]

try:
    from airflow.sdk.execution_time.timeout import timeout as airflow_timeout
except ImportError:  # Airflow 3.0: the task runner's execution_timeout wrapper
    from airflow.utils.timeout import timeout as airflow_timeout  # type: ignore[no-redef,attr-defined]

try:
    from airflow.serialization.serialized_objects import DagSerialization
except ImportError:  # Airflow < 3.2 (the same to_dict under its old name)
    from airflow.serialization.serialized_objects import (  # type: ignore[attr-defined,no-redef]
        SerializedDAG as DagSerialization,
    )

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.2
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined]



def dag_bag(folder: str) -> Any:
    """The DAGs of ``folder`` alone: 3.0-3.1 add Airflow's own examples unless told not to (3.2+ has no such
    argument)."""
    try:
        return DagBag(dag_folder=folder, include_examples=False)
    except TypeError:
        return DagBag(dag_folder=folder)


__all__ = [
    "AIRFLOW_VERSION",
    "USER_ACTION_CANCEL_MSG",
    "AirflowException",
    "AirflowFailException",
    "AirflowTaskTimeout",
    "DagBag",
    "DagSerialization",
    "TaskDeferralError",
    "TaskDeferred",
    "airflow_timeout",
    "dag_bag",
    "fired_events",
    "prepare_trigger",
    "requires_trigger_on_kill",
]

# The message the 3.3+ triggerer cancels a trigger with on a user kill, which makes it call on_kill. Older lines
# cancel with no message at all; there a user kill is told from a shutdown by the task's state (tests/legacy).
USER_ACTION_CANCEL_MSG: str | None = getattr(triggerer_job_runner, "_USER_ACTION_CANCEL_MSG", None)

requires_trigger_on_kill = pytest.mark.skipif(
    not TRIGGER_ON_KILL,
    reason=f"trigger on_kill is Airflow 3.3+ (apache/airflow#65590), this is {'.'.join(map(str, AIRFLOW_VERSION))}: "
    "a deferred task's user kill takes the legacy CancelledError path here, proven by tests/legacy (the real "
    "triggerer) and tests/e2e/test_version_kill_rows.py (K6 on a real stack)",
)


def prepare_trigger(trigger: Any) -> Any:
    """What the triggerer's ``create_triggers`` sets on a trigger before it runs it, where ``run_trigger`` reads
    it from the trigger: on 3.0 its ``timeout_after`` (later lines pass it as an argument)."""
    if not hasattr(trigger, "timeout_after"):
        trigger.timeout_after = None
    return trigger


def fired_events(runner: Any) -> list[tuple[int, dict]]:
    """(trigger id, event payload) for each event a TriggerRunner fired: 3.0 keeps plain (id, event) tuples,
    later lines named tuples with ``trigger_id`` and ``event`` (and more fields)."""
    pairs = []
    for entry in runner.events:
        trigger_id, event = (entry.trigger_id, entry.event) if hasattr(entry, "trigger_id") else entry
        pairs.append((trigger_id, event.payload))
    return pairs
