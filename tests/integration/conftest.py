"""Integration tests: hooks, operators, sensors and the trigger over real HTTP against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from airflow_provider_cancel.registry import CONN_TYPES

API_KEY = "sk-INTEGRATION-SECRET-7f3a"
# scripts/test-versions.sh runs one vendor per extra Airflow line (TEST_VENDORS=bctrl); 3.3.2 runs all five.
VENDORS = tuple(v for v in os.environ.get("TEST_VENDORS", ",".join(CONN_TYPES)).split(",") if v in CONN_TYPES)

os.environ.setdefault("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--api-key", API_KEY) as process:
        for vendor in CONN_TYPES:  # every vendor's connection: a few tests use one vendor as the example
            conn = {"conn_type": vendor, "host": process.base_url(vendor), "password": API_KEY}
            os.environ[f"AIRFLOW_CONN_{vendor.upper()}_EMU"] = json.dumps(conn)
            bad = {**conn, "password": "sk-wrong-key"}
            os.environ[f"AIRFLOW_CONN_{vendor.upper()}_BADKEY"] = json.dumps(bad)
        yield process


@pytest.fixture
def emu(emulator: EmulatorProcess) -> Iterator[EmulatorClient]:
    client = emulator.client()
    client.clear_faults()
    yield client
    client.clear_faults()
    client.close()


class FakeStore:
    """Stands in for Airflow 3.3's task_state_store (shared by every try of one task instance)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class FakeTI:
    def __init__(self, task_id: str = "t", try_number: int = 1) -> None:
        self.dag_id, self.run_id, self.task_id = "d", "manual__1", task_id
        self.map_index, self.try_number = -1, try_number
        self.start_date = datetime.now(UTC)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


def make_context(ti: FakeTI | None = None, store: FakeStore | None = None) -> dict[str, Any]:
    return {"ti": ti or FakeTI(), "task_state_store": store if store is not None else FakeStore()}


async def drive_trigger(trigger: Any, *, cancel_when: Callable[[], Any] | None = None, cancel_msg: str | None = None,
                        timeout: float = 60.0) -> list[dict]:
    """Run a trigger the way Airflow's triggerer does (TriggerRunner.run_trigger). Once `cancel_when()` is
    true, cancel it as a user action (cancel_msg = the triggerer's user-action message) or, without a
    message, as a triggerer shutdown. Returns the event payloads."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    from tests.airflow_compat import fired_events, prepare_trigger

    runner = TriggerRunner()
    runner.triggers[1] = {"name": "test-trigger", "events": 0}
    prepare_trigger(trigger)
    task = asyncio.create_task(runner.run_trigger(1, trigger))
    deadline = time.monotonic() + timeout
    if cancel_when is not None:
        while not await asyncio.to_thread(cancel_when):
            assert time.monotonic() < deadline, "cancel condition never met"
            assert not task.done(), f"trigger ended before the cancel condition: {runner.events}"
            await asyncio.sleep(0.05)
        task.cancel(cancel_msg) if cancel_msg else task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, max(1.0, deadline - time.monotonic()))
    return [payload for _, payload in fired_events(runner)]


def in_thread(task: Any, context: dict[str, Any]) -> tuple[threading.Thread, dict]:
    """Run ``task.execute(context)`` in a worker thread, as a task runner would (``on_kill`` then comes from another
    thread); the dict gets ``result`` or ``error``."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = task.execute(context)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def defer(task: Any, context: dict[str, Any]) -> Any:
    """Run `task` until it defers; return its trigger rebuilt from its own serialized form, as Airflow does."""
    from airflow_provider_cancel.core.trigger import ExecutionTrigger
    from tests.airflow_compat import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, ExecutionTrigger)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_cancel.core.trigger.ExecutionTrigger"
    assert kwargs["hook_class"] == f"{task.hook_class.__module__}.{task.hook_class.__qualname__}"
    return ExecutionTrigger(**kwargs)
