"""The orphan sweep: cancel recorded executions that no live try of their task owns any more.

Some deaths leave no provider code to run: a worker killed hard with no retry left (SIGKILL, OOM, a lost node),
a deferred task killed before any triggerer started its trigger, a kill whose every cancel attempt failed
because the vendor was down, `on_kill` cut short by SIGKILL, a deferred task that Airflow failed without
resuming it (docs/kill-paths.md). In each case the task instance ends finished while the execution it recorded
(`core.ownership.ExecutionRecord`, in ``task_state_store``) runs on. The sweep finds those records and applies
the one rule of `core.ownership.decide_orphan`: a finished task instance owns nothing, so a live execution of
it is cancelled; a task instance that is not finished (running, deferred, up for retry, cleared) is never
touched, so a retry that adopts, a trigger that moved and a healthy run are never cancelled.

Where it runs: in every scheduler (the listener of this module's plugin starts a thread when a scheduler job
starts; schedulers and the API server have the database, workers do not). Several schedulers agree through an
atomic claim written into the record before anyone acts, so one cancel is sent, not one per scheduler. It waits
a grace period after the task instance finished (the owner's own cancel, `on_kill` or the trigger's, lands
within it) and reads the execution's state before cancelling; a cancel that fails is tried again on the next
round. Settings, in ``[provider_cancel]``: ``orphan_sweep`` (on), ``orphan_sweep_interval`` (30 s),
``orphan_sweep_grace`` (90 s), ``orphan_sweep_horizon`` (1 day: how far back finished task instances are
looked at). Needs Airflow 3.3+ (``task_state_store``) on its default metadata-database backend.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_cancel.core.ownership import (
    FINISHED_TI_STATES,
    STATE_STORE_KEY,
    ExecutionRecord,
    OrphanAction,
    decide_orphan,
)
from airflow_provider_cancel.core.state import CancelOutcome, ExecutionState

log = logging.getLogger(__name__)

SECTION = "provider_cancel"
CLAIM_TTL = 600.0  # a claim older than this was left by a sweeper that died mid-round: another may take it
BATCH = 500  # records looked at per round, oldest finished first


@dataclass(frozen=True)
class SweepSettings:
    enabled: bool = True
    interval: float = 30.0
    grace: float = 90.0
    horizon: float = 86400.0

    @classmethod
    def from_config(cls) -> SweepSettings:
        from airflow.configuration import conf

        return cls(
            enabled=conf.getboolean(SECTION, "orphan_sweep", fallback=True),
            interval=conf.getfloat(SECTION, "orphan_sweep_interval", fallback=cls.interval),
            grace=conf.getfloat(SECTION, "orphan_sweep_grace", fallback=cls.grace),
            horizon=conf.getfloat(SECTION, "orphan_sweep_horizon", fallback=cls.horizon),
        )


@dataclass(frozen=True)
class Found:
    """A recorded execution whose task instance has finished."""

    row_id: int
    value: str  # the stored text, for the claim's compare-and-set
    dag_id: str
    run_id: str
    task_id: str
    map_index: int  # Airflow 3.4: the row's region_index
    ti_state: str
    record: ExecutionRecord
    region_id: Any = None  # Airflow 3.4's dynamic region of the task instance (None before 3.4)

    @property
    def task(self) -> str:
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{index} (run {self.run_id})"


@dataclass(frozen=True)
class Verdict:
    found: Found
    action: OrphanAction
    outcome: CancelOutcome | None = None
    error: str | None = None


def _metastore_backend() -> bool:
    """The sweep reads task_state_store's table: only the default backend keeps records there."""
    try:
        from airflow.state import get_state_backend
        from airflow.state.metastore import MetastoreBackend
    except ImportError:  # Airflow < 3.3: no task_state_store
        return False
    return isinstance(get_state_backend(), MetastoreBackend)


class OrphanSweep:
    """One round at a time (`sweep_once`); the thread that repeats it is `SweepThread`."""

    def __init__(self, settings: SweepSettings, *, name: str | None = None,
                 hook_for: Callable[[ExecutionRecord], Any] | None = None) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._hook_for = hook_for or _hook_for
        self._left: set[tuple[int, str]] = set()  # (row, value) not ours to cancel: not looked at again

    # -- one round -----------------------------------------------------------------------------------------
    def sweep_once(self, now: float | None = None) -> list[Verdict]:
        now = time.time() if now is None else now
        verdicts = []
        for found in self._find(now):
            if (found.row_id, found.value) in self._left or not self._claim(found, now):
                continue
            verdict = self._settle(found)
            verdicts.append(verdict)
        return verdicts

    def _settle(self, found: Found) -> Verdict:
        record = found.record
        try:
            hook = self._hook_for(record)
            hook.trust(record.execution_id)
            state: ExecutionState | None = self._state(hook, record.execution_id)
        except Exception as err:  # the vendor is down, the connection is missing here...: next round
            self._release(found)
            log.warning("Orphan sweep: could not read %s execution %s of %s (%s); will try again", record.hook,
                        record.execution_id, found.task, err)
            return Verdict(found, OrphanAction.LEAVE, error=str(err))
        action = decide_orphan(record, found.ti_state, state)
        if action is OrphanAction.LEAVE:
            self._release(found)
            self._left.add((found.row_id, found.value))
            return Verdict(found, action)
        if action is OrphanAction.FORGET:
            self._forget(found)
            return Verdict(found, action)
        if not self._still_finished(found):
            self._release(found)
            return Verdict(found, OrphanAction.LEAVE)
        outcome = CancelOutcome.FAILED
        try:
            outcome = hook.cancel(record.execution_id)
        except Exception as err:
            log.error("Orphan sweep: could not cancel %s execution %s of %s: %s; will try again", hook.vendor,
                      record.execution_id, found.task, err)
        if outcome.settled:
            log.warning("Orphan sweep: cancelled %s execution %s (%s): its task %s is %s and no try of it owns the "
                        "execution any more", hook.vendor, record.execution_id, outcome.value, found.task,
                        found.ti_state)
            self._forget(found)
        else:
            self._release(found)
        return Verdict(found, action, outcome=outcome)

    @staticmethod
    def _state(hook: Any, execution_id: str) -> ExecutionState | None:
        from airflow_provider_cancel.core.errors import ExecutionApiError

        try:
            return hook.get_status(execution_id).state  # type: ignore[no-any-return]
        except ExecutionApiError as err:
            if err.status_code == 404:
                return None
            raise

    # -- the records, in Airflow's metadata database -------------------------------------------------------
    def _find(self, now: float) -> list[Found]:
        from airflow.models.task_state_store import TaskStateStoreModel as Store
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import and_, func, null, select

        finished = func.coalesce(TaskInstance.end_date, TaskInstance.updated_at)
        newest = _utc(now - self.settings.grace)
        oldest = _utc(now - self.settings.horizon)
        regions = _has_regions(Store)
        index = (Store.region_index if regions else Store.map_index).label("map_index")
        region = (Store.region_id if regions else null()).label("region_id")
        same_index = (and_(TaskInstance.region_id == Store.region_id, TaskInstance.region_index == Store.region_index)
                      if regions else TaskInstance.map_index == Store.map_index)
        query = (
            select(Store.id, Store.value, Store.dag_id, Store.run_id, Store.task_id, index, region,
                   TaskInstance.state)
            .join(TaskInstance, and_(TaskInstance.dag_id == Store.dag_id, TaskInstance.run_id == Store.run_id,
                                     TaskInstance.task_id == Store.task_id, same_index))
            .where(Store.key == STATE_STORE_KEY, TaskInstance.state.in_(sorted(FINISHED_TI_STATES)),
                   finished <= newest, finished >= oldest)
            .order_by(finished)
            .limit(BATCH)
        )
        with create_session() as session:
            rows = session.execute(query).all()
        found = []
        for row in rows:
            record = ExecutionRecord.from_value(_loads(row.value))
            if record is None or _claimed_by_other(row.value, self.name, now):
                continue
            found.append(Found(row.id, row.value, row.dag_id, row.run_id, row.task_id, row.map_index,
                               str(row.state), record, row.region_id))
        return found

    def _claim(self, found: Found, now: float) -> bool:
        """Compare-and-set: write our claim into the record only if nobody changed it since we read it."""
        value = _loads(found.value)
        value = dict(value) if isinstance(value, dict) else {"execution_id": found.record.execution_id}
        value["sweep"] = {"by": self.name, "at": now}
        return self._replace(found.row_id, found.value, json.dumps(value))

    def _release(self, found: Found) -> None:
        """Put the record back as it was: the next round (here or in another scheduler) looks again."""
        self._replace_claimed(found.row_id, found.value)

    def _still_finished(self, found: Found) -> bool:
        """Right before a cancel: the task instance was not cleared (its new try would adopt the execution)."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        same_index = ([TaskInstance.region_id == found.region_id, TaskInstance.region_index == found.map_index]
                      if _has_regions(TaskInstance) else [TaskInstance.map_index == found.map_index])
        with create_session() as session:
            state = session.scalar(select(TaskInstance.state).where(
                TaskInstance.dag_id == found.dag_id, TaskInstance.run_id == found.run_id,
                TaskInstance.task_id == found.task_id, *same_index))
        return state in FINISHED_TI_STATES

    def _replace(self, row_id: int, old: str, new: str) -> bool:
        from airflow.models.task_state_store import TaskStateStoreModel as Store
        from airflow.utils.session import create_session
        from sqlalchemy import update

        with create_session() as session:
            result = session.execute(update(Store).where(Store.id == row_id, Store.value == old).values(value=new))
            return bool(getattr(result, "rowcount", 0) == 1)

    def _replace_claimed(self, row_id: int, original: str) -> None:
        """Undo our claim (whatever its timestamp) unless the task wrote a new record meanwhile."""
        from airflow.models.task_state_store import TaskStateStoreModel as Store
        from airflow.utils.session import create_session
        from sqlalchemy import select, update

        with create_session() as session:
            current = session.scalar(select(Store.value).where(Store.id == row_id))
            if current is not None and _claimed_by(current) == self.name:
                session.execute(update(Store).where(Store.id == row_id, Store.value == current)
                                .values(value=original))

    def _forget(self, found: Found) -> None:
        """The execution has ended (or was cancelled now): drop the record, unless a new try wrote its own."""
        from airflow.models.task_state_store import TaskStateStoreModel as Store
        from airflow.utils.session import create_session
        from sqlalchemy import delete, select

        with create_session() as session:
            current = session.scalar(select(Store.value).where(Store.id == found.row_id))
            if current is not None and _claimed_by(current) == self.name:
                session.execute(delete(Store).where(Store.id == found.row_id, Store.value == current))


def _hook_for(record: ExecutionRecord) -> Any:
    """The hook the task used (its class, when this process can import it), else the connection's own type's."""
    from airflow_provider_cancel.cancel import hook_for_connection
    from airflow_provider_cancel.core.hook import ExecutionHook

    if record.conn_id is None:
        raise ValueError("the record names no connection (written by an older version of the provider)")
    if record.hook:
        try:
            from airflow.utils.module_loading import import_string

            hook_class = import_string(record.hook)
        except Exception:  # e.g. a hook subclass defined in a DAG file: the connection's type still tells
            hook_class = None
        if isinstance(hook_class, type) and issubclass(hook_class, ExecutionHook):
            return hook_class(record.conn_id)
    return hook_for_connection(record.conn_id)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _claimed_by(text: str) -> str | None:
    value = _loads(text)
    sweep = value.get("sweep") if isinstance(value, dict) else None
    return sweep.get("by") if isinstance(sweep, dict) else None


def _claimed_by_other(text: str, name: str, now: float) -> bool:
    value = _loads(text)
    sweep = value.get("sweep") if isinstance(value, dict) else None
    if not isinstance(sweep, dict) or sweep.get("by") in (None, name):
        return False
    at = sweep.get("at")
    return isinstance(at, (int, float)) and now - at < CLAIM_TTL


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


# -- the thread, started in each scheduler -------------------------------------------------------------------
class SweepThread(threading.Thread):
    def __init__(self, job: Any, settings: SweepSettings) -> None:
        super().__init__(name="airflow-provider-cancel-orphan-sweep", daemon=True)
        self.job, self.settings = job, settings
        self.stopping = threading.Event()

    def run(self) -> None:
        # The job's type is set just after the listener is told it starts: wait for it, sweep only in a scheduler.
        deadline = time.monotonic() + 120
        while getattr(self.job, "job_type", None) is None and time.monotonic() < deadline:
            if self.stopping.wait(1.0):
                return
        if getattr(self.job, "job_type", None) != "SchedulerJob":
            return
        if not _metastore_backend():
            log.warning("Orphan sweep off: it needs Airflow 3.3+'s task_state_store on the metadata database")
            return
        sweep = OrphanSweep(self.settings)
        log.info("Orphan sweep on in this scheduler (%s): every %.0f s, %.0f s after a task finished", sweep.name,
                 self.settings.interval, self.settings.grace)
        while not self.stopping.wait(self.settings.interval):
            try:
                sweep.sweep_once()
            except Exception:  # never take the scheduler down; the next round tries again
                log.exception("Orphan sweep round failed")


class _Listener:
    """Airflow's listener hooks: start the sweep with each scheduler job, stop it with the job."""

    def __init__(self) -> None:
        self.threads: dict[int, SweepThread] = {}

    def on_starting(self, component: Any) -> None:
        try:
            from airflow.jobs.job import Job
        except ImportError:
            return
        if not isinstance(component, Job):
            return  # a task runner, for one
        settings = SweepSettings.from_config()
        if settings.enabled:
            thread = self.threads[id(component)] = SweepThread(component, settings)
            thread.start()

    def before_stopping(self, component: Any) -> None:
        thread = self.threads.pop(id(component), None)
        if thread is not None:
            thread.stopping.set()


def _hookimpl(function: Callable[..., Any]) -> Callable[..., Any]:
    try:
        from airflow.listeners import hookimpl
    except ImportError:  # pragma: no cover
        return function
    return hookimpl(function)  # type: ignore[no-any-return]


_Listener.on_starting = _hookimpl(_Listener.on_starting)  # type: ignore[method-assign]
_Listener.before_stopping = _hookimpl(_Listener.before_stopping)  # type: ignore[method-assign]
LISTENER = _Listener()


def _has_regions(model: Any) -> bool:
    """Airflow 3.4 names a task instance (its row and its task_state_store rows) by (region_id, region_index)
    where 3.3 had map_index."""
    return hasattr(model, "region_index")
