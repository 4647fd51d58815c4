"""The real Airflow 3.0-3.2 triggerer with its metadata database replaced by a table in this process.

What runs for real (all from the installed Airflow, in ``airflow/jobs/triggerer_job_runner.py``):

* ``TriggerRunnerSupervisor``, the triggerer's main process: its ``run()`` loop, ``_handle_request`` (the
  ``TriggerStateSync`` that hands the runner the triggers to create and cancel; ``GetTaskStates`` answered
  through an Execution API ``Client``), and its shutdown: the ``kill(escalation_delay=10, force=True)`` of
  ``TriggererJobRunner._execute``.
* ``TriggerRunner`` in the subprocess the supervisor forks: ``create_triggers`` (decrypts the stored kwargs,
  builds the trigger from its classpath, sets ``trigger.task_instance`` to the workload's ``TaskInstanceDTO``),
  ``run_trigger``, ``cancel_triggers`` (``task.cancel()``), the task SDK's ``SUPERVISOR_COMMS``
  (``TriggerCommsDecoder``), and the ``asyncio.run`` teardown that cancels what is still running at shutdown.
* The Execution API client (``airflow.sdk.api.client.Client``) that the supervisor calls for ``GetTaskStates``,
  with its parameter building, response parsing and error hooks.

What stands in for the database (``Metadata``), and only that:

* ``load_triggers`` (``Trigger.assign_unassigned`` + ``Trigger.ids_for_triggerer`` + the ``Trigger.bulk_fetch``
  in ``update_triggers``): the rows of ``Metadata.triggers`` assigned to this triggerer; what to create and what
  to cancel is the same set arithmetic as ``update_triggers``.
* ``clean_unused`` (``Trigger.clean_unused``): deletes the trigger of every task instance that is no longer
  DEFERRED, which is what turns a user kill into a cancelled trigger.
* The Execution API route ``GET /execution/task-instances/states`` (``get_task_instance_states``) is served
  from ``Metadata.tis`` by an ``httpx.MockTransport`` behind the real client (the real triggerer uses an
  in-process ASGI transport to the same route over the metadata DB).
* ``handle_events`` / ``handle_failed_triggers`` record what the real ones would write; ``heartbeat`` and
  ``emit_metrics`` do nothing.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import httpx

try:
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.executors.workloads.trigger import RunTrigger
except ImportError:  # Airflow 3.0-3.1: one workloads module
    from airflow.executors.workloads import RunTrigger  # type: ignore[no-redef,attr-defined]
    from airflow.executors.workloads import TaskInstance as TaskInstanceDTO  # type: ignore[no-redef,attr-defined]
from airflow.jobs.triggerer_job_runner import TriggerLoggingFactory, TriggerRunnerSupervisor
from airflow.models.trigger import Trigger

# TriggererJobRunner._execute: `self.trigger_runner.kill(escalation_delay=10, force=True)`
SHUTDOWN_ESCALATION_DELAY = 10.0


@dataclass
class TaskRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1
    state: str | None = "deferred"
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    dag_version_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def dto(self) -> TaskInstanceDTO:
        return TaskInstanceDTO(
            id=self.id, dag_version_id=self.dag_version_id, task_id=self.task_id, dag_id=self.dag_id,
            run_id=self.run_id, try_number=self.try_number, map_index=self.map_index, pool_slots=1,
            queue="default", priority_weight=1,
        )


@dataclass
class TriggerRow:
    id: int
    classpath: str
    encrypted_kwargs: str
    ti: TaskRow
    triggerer_id: int | None = None


class Metadata:
    """The few rows of the metadata DB that a triggerer reads: task instances and triggers."""

    def __init__(self, log_dir: Path) -> None:
        self.lock = threading.Lock()
        self.tis: list[TaskRow] = []
        self.triggers: dict[int, TriggerRow] = {}
        self.log_dir = log_dir
        self.state_lookups: list[dict[str, Any]] = []  # every GET /task-instances/states the route served
        self.lookup_error: int | None = None  # answer state lookups with this HTTP status instead
        self._next_id = 1

    def defer(self, trigger: Any, ti: TaskRow, triggerer_id: int | None = None) -> int:
        """What TaskInstance.defer_task stores: a Trigger row from serialize() and a DEFERRED TI pointing at it."""
        classpath, kwargs = trigger.serialize()
        with self.lock:
            trigger_id, self._next_id = self._next_id, self._next_id + 1
            if ti not in self.tis:
                self.tis.append(ti)
            ti.state = "deferred"
            self.triggers[trigger_id] = TriggerRow(trigger_id, classpath, Trigger.encrypt_kwargs(kwargs), ti,
                                                   triggerer_id)
        return trigger_id

    def set_state(self, ti: TaskRow, state: str | None) -> None:
        """Mark failed / mark success (TaskInstance.set_state) or clear of a deferred TI (state None)."""
        with self.lock:
            ti.state = state

    def assign(self, trigger_id: int, triggerer_id: int | None) -> None:
        with self.lock:
            self.triggers[trigger_id].triggerer_id = triggerer_id

    def log_path(self, trigger_id: int, job_id: int) -> Path:
        """One log per trigger and triggerer job, as update_triggers names them (`...trigger.<job id>.log`)."""
        return self.log_dir / f"trigger-{trigger_id}.trigger.{job_id}.log"

    def trigger_log(self, trigger_id: int, job_id: int) -> str:
        path = self.log_path(trigger_id, job_id)
        return path.read_text() if path.exists() else ""

    # -- what the triggerer's DB calls return -------------------------------------------------------------
    def ids_for_triggerer(self, job_id: int) -> dict[int, TriggerRow]:
        with self.lock:
            for row in self.triggers.values():  # Trigger.assign_unassigned (capacity is not a concern here)
                if row.triggerer_id is None:
                    row.triggerer_id = job_id
            return {tid: row for tid, row in self.triggers.items() if row.triggerer_id == job_id}

    def clean_unused(self) -> None:
        with self.lock:
            for tid in [tid for tid, row in self.triggers.items() if row.ti.state != "deferred"]:
                del self.triggers[tid]

    def route_task_states(self, request: httpx.Request) -> httpx.Response:
        """GET /execution/task-instances/states, as execution_api/routes/task_instances.py
        get_task_instance_states builds it (3.2.2 lines 1034-1080). An XCom read (the trigger asking which try
        owns its execution) finds none, as for a try that recorded nothing."""
        if "/xcoms/" in request.url.path:
            return httpx.Response(404, json={"detail": {"reason": "not_found", "message": "XCom not found"}})
        assert request.url.path.endswith("/task-instances/states"), request.url
        params = request.url.params
        dag_id = params["dag_id"]
        task_ids = params.get_list("task_ids")
        run_ids = params.get_list("run_ids")
        map_index = int(params["map_index"]) if "map_index" in params else None
        with self.lock:
            self.state_lookups.append({"dag_id": dag_id, "task_ids": task_ids, "run_ids": run_ids,
                                       "map_index": map_index})
            if self.lookup_error is not None:
                return httpx.Response(self.lookup_error, json={"detail": {"reason": "test", "message": "refused"}})
            states: dict[str, dict[str, Any]] = {}
            for ti in self.tis:
                if ti.dag_id != dag_id or (task_ids and ti.task_id not in task_ids):
                    continue
                if (run_ids and ti.run_id not in run_ids) or (map_index is not None and ti.map_index != map_index):
                    continue
                key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
                states.setdefault(ti.run_id, {})[key] = ti.state
        return httpx.Response(200, json={"task_states": states})


class _Job:
    """The triggerer's Job row: the supervisor reads only its id (and hostname in metrics)."""

    def __init__(self, job_id: int) -> None:
        self.id, self.hostname = job_id, "legacy-test"


@attrs.define(kw_only=True)
class DatabaselessSupervisor(TriggerRunnerSupervisor):
    metadata: Metadata
    fired_events: list = attrs.field(factory=list)
    failures: list = attrs.field(factory=list)

    @functools.cached_property
    def client(self):  # the real class: Client(dry_run=True, transport=in_process_api_server().transport)
        from airflow.sdk.api.client import Client

        client = Client(base_url=None, token="", dry_run=True,
                        transport=httpx.MockTransport(self.metadata.route_task_states))
        client.base_url = "http://in-process.invalid./"
        return client

    def load_triggers(self) -> None:
        rows = self.metadata.ids_for_triggerer(self.job.id)
        requested = set(rows)
        # update_triggers, minus its DB reads
        known = (
            self.running_triggers.union(x[0] for x in self.events)
            .union(self.cancelling_triggers)
            .union(trigger[0] for trigger in self.failed_triggers)
            .union(trigger.id for trigger in self.creating_triggers)
        )
        for new_id in requested - known:
            row = rows[new_id]
            ser_ti = row.ti.dto()
            self.logger_cache[new_id] = TriggerLoggingFactory(
                log_path=str(self.metadata.log_path(new_id, self.job.id)), ti=ser_ti
            )
            self.creating_triggers.append(RunTrigger(id=new_id, ti=ser_ti, classpath=row.classpath,
                                                     encrypted_kwargs=row.encrypted_kwargs))
        if cancel := self.running_triggers - requested:
            self.cancelling_triggers.update(cancel)

    def handle_events(self) -> None:
        while self.events:
            self.fired_events.append(self.events.popleft())

    def handle_failed_triggers(self) -> None:
        while self.failed_triggers:
            self.failures.append(self.failed_triggers.popleft())

    def clean_unused(self) -> None:
        self.metadata.clean_unused()

    def heartbeat(self) -> None:
        pass

    def emit_metrics(self) -> None:
        pass


class LegacyTriggerer:
    """One triggerer: the supervisor runs in a thread of this process, the runner in the subprocess it forks."""

    def __init__(self, metadata: Metadata, job_id: int) -> None:
        self.metadata, self.job_id = metadata, job_id
        self.supervisor: DatabaselessSupervisor | None = None
        self.shutdown_seconds: float | None = None
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> LegacyTriggerer:
        self.supervisor = DatabaselessSupervisor.start(job=_Job(self.job_id), capacity=100, metadata=self.metadata)
        self._thread = threading.Thread(target=self._execute, name=f"triggerer-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def _execute(self) -> None:
        """TriggererJobRunner._execute: run() until stopped, then kill the runner as its `finally` does."""
        assert self.supervisor is not None
        try:
            self.supervisor.run()
        except BaseException as err:  # surfaced by shutdown()
            self._error = err
        finally:
            started = time.monotonic()
            self.supervisor.kill(escalation_delay=SHUTDOWN_ESCALATION_DELAY, force=True)
            self.shutdown_seconds = time.monotonic() - started
            self.exit_code = self.supervisor._exit_code

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def is_running(self, trigger_id: int) -> bool:
        assert self.supervisor is not None
        return trigger_id in self.supervisor.running_triggers

    def shutdown(self, timeout: float = 4 * SHUTDOWN_ESCALATION_DELAY) -> None:
        """SIGTERM to the triggerer: _exit_gracefully sets `trigger_runner.stop = True`."""
        if self.supervisor is None or self._thread is None:
            return
        self.supervisor.stop = True
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the triggerer did not shut down"
        for factory in list(self.supervisor.logger_cache.values()):
            # flush the trigger logs of triggers that never reported "finished" (3.0's factory has no close:
            # its structlog BytesLogger flushes every line)
            if (close := getattr(factory, "close", None)) is not None:
                close()
        if self._error is not None:
            raise self._error


def wait_until(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(0.05)
    return value
