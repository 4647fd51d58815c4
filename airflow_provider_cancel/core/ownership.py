"""Who owns a remote execution, and whether it should be cancelled now: decided here, and only here.

Three parts, each small:

- `ExecutionRecord` / `RecordStore`: what a task instance writes down as soon as it owns an execution (the id,
  the try that started it, how to reach it), in Airflow 3.3's ``task_state_store`` (shared by every try of the
  task instance, kept across worker deaths) and in XCom. Before 3.3 (no ``task_state_store``; XComs are cleared
  when a new try starts) an Airflow Variable per task instance holds it instead. A later try reads it back
  (`recall`) to adopt or replace the execution; the orphan sweep (`airflow_provider_cancel.orphans`, 3.3+)
  reads it to cancel what no live try owns.
- `decide_existing` and `decide_finished`: pure decisions, no I/O, about an execution an earlier try left and
  about an execution that reached a terminal state.
- `CancelGuard`: the cancel state of the execution this process owns, IDLE -> LIVE -> ENDED | REQUESTED |
  FAILED (| RELEASED), with one atomic `claim()`: a kill, a failure and a timeout may all want to cancel, some
  of them from a signal handler that interrupts another; exactly one of them sends the cancel.

Ordering rules, stated once: an execution is LIVE from the moment its id is known (before any poll, and for an
id the client chooses, before the create is sent). It stops being cancellable when its terminal state is seen
(ENDED), when a cancel was accepted (REQUESTED) or when the task hands it over (RELEASED: `wait_for_completion
=False`, or `cancel_on_kill=False`). A cancel that failed (FAILED) may be claimed again by a later path.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_cancel.core.state import CancelOutcome, ExecutionState

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_EXECUTION_ID = "execution_id"
XCOM_EXECUTION_URL = "execution_url"
# The try that owns the recorded execution now (it started or adopted it). Airflow clears a task's XComs when a
# new try starts, so a trigger of an earlier try tells "still my try, deferred" from "a newer try" by it.
XCOM_EXECUTION_TRY = "execution_try"
STATE_STORE_KEY = "airflow_provider_cancel.execution_id"
# Before 3.3: one Variable per task instance, named by a digest (dag and run ids may be 250 characters each;
# a Variable key may not). Its value names the task instance for whoever reads the Variables list.
VARIABLE_PREFIX = "airflow_provider_cancel.execution."

OnExisting = Literal["reattach", "cancel"]


# -- the record ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutionRecord:
    """What a task instance owns: written before the first poll, read by its later tries and the orphan sweep."""

    execution_id: str
    try_number: int | None = None  # the try that started it
    conn_id: str | None = None
    hook: str | None = None  # class path of the hook that can read and cancel it
    # Whether the orphan sweep may cancel it once no live try owns it (False: cancel_on_kill=False, a handed-over
    # execution, or the operator's cancel_orphans=False).
    cancel_if_orphaned: bool = True

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> ExecutionRecord | None:
        """A stored value, or None when it is not one of ours (a bare id: an earlier version of the provider)."""
        if isinstance(value, str) and value:
            return cls(value)
        if not isinstance(value, Mapping) or not isinstance(value.get("execution_id"), str):
            return None
        fields = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        if not isinstance(fields.get("try_number"), int) or isinstance(fields.get("try_number"), bool):
            fields.pop("try_number", None)
        for name in ("conn_id", "hook"):
            if not isinstance(fields.get(name), str):
                fields.pop(name, None)
        if not isinstance(fields.get("cancel_if_orphaned", True), bool):
            fields["cancel_if_orphaned"] = True
        return cls(**fields)


class RecordStore:
    """A task instance's record of its execution, over the running task's context.

    Where it outlives the try: Airflow 3.3's ``task_state_store`` (in the context), else (3.0-3.2) a Variable
    named after the task instance (`variable_key`). Failures to reach either are logged, never raised: XCom
    still holds the id for this try, and a kill must not wait on them."""

    def __init__(self, context: Context, log: Any) -> None:
        self._context = context
        self._store = context.get("task_state_store")  # Airflow 3.3+
        self._variable = None if self._store or not _variables_hold_records() else _variable_for(context)
        self.log = log

    @property
    def durable(self) -> bool:
        """Does the record outlive this try (so that a retry, or the orphan sweep, finds it)?"""
        return bool(self._store) or self._variable is not None

    def save(self, record: ExecutionRecord) -> None:
        """XCom for people and downstream tasks; the durable record before any poll: a later try (after a crash
        or a clear) and the orphan sweep find it there, even if this worker dies."""
        ti = self._context["ti"]
        ti.xcom_push(key=XCOM_EXECUTION_ID, value=record.execution_id)
        ti.xcom_push(key=XCOM_EXECUTION_TRY, value=ti.try_number)
        try:
            if self._store:
                self._store.set(STATE_STORE_KEY, record.to_value())
            elif self._variable is not None:
                from airflow.providers.common.compat.sdk import Variable

                value = {**record.to_value(), "task_instance": _ti_name(ti)}
                Variable.set(self._variable, json.dumps(value), description="airflow-provider-cancel: the remote "
                             "execution of this task instance (deleted when the task succeeds)")
        except Exception as err:  # an older store API or backend: XCom still holds the id
            self.log.warning("Could not record the execution id where a later try finds it: %s", err)

    def recall(self) -> ExecutionRecord | None:
        """The execution recorded by this task instance (the durable record first, then this try's XCom)."""
        try:
            value = self._durable_value()
        except Exception as err:
            self.log.warning("Could not read the recorded execution id: %s", err)
        else:
            if (record := ExecutionRecord.from_value(value)) is not None:
                return record
        ti = self._context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_EXECUTION_ID, map_indexes=ti.map_index)
        return ExecutionRecord(value) if isinstance(value, str) and value else None

    def forget(self) -> None:
        """Done with it (it succeeded): a later clear of this task runs anew instead of adopting it."""
        try:
            if self._store:
                self._store.delete(STATE_STORE_KEY)
            elif self._variable is not None:
                from airflow.providers.common.compat.sdk import Variable

                Variable.delete(self._variable)
        except Exception as err:
            self.log.warning("Could not clear the recorded execution id: %s", err)

    def _durable_value(self) -> Any:
        if self._store:
            return self._store.get(STATE_STORE_KEY)
        if self._variable is None:
            return None
        from airflow.providers.common.compat.sdk import Variable

        raw = Variable.get(self._variable, default=None)
        return json.loads(raw) if isinstance(raw, str) else None


def _variables_hold_records() -> bool:
    from airflow_provider_cancel.version_compat import AIRFLOW_V_3_3_PLUS

    return not AIRFLOW_V_3_3_PLUS


def _variable_for(context: Context) -> str | None:
    try:
        return variable_key(context["ti"])
    except (KeyError, AttributeError):  # not a real task's context (a test's, a probe's): nothing durable
        return None


def _ti_name(ti: Any) -> str:
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}" + ("" if ti.map_index in (None, -1) else f"[{ti.map_index}]")


def variable_key(ti: Any) -> str:
    """The Variable holding a task instance's record before Airflow 3.3: the same for every try of it."""
    identity = json.dumps([ti.dag_id, ti.run_id, ti.task_id, ti.map_index])
    return VARIABLE_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:32]


# -- decisions -----------------------------------------------------------------------------------------------
class Existing(str, enum.Enum):
    """What a new try does with the execution an earlier try recorded."""

    START = "start"  # nothing live to adopt (none, unknown to the vendor, failed or cancelled): start anew
    USE_RESULT = "use_result"  # it succeeded after its try died: use its result instead of recomputing
    REATTACH = "reattach"  # still live: wait for it instead of starting another
    CANCEL_THEN_START = "cancel_then_start"  # still live, policy "cancel": cancel, wait until it ended, start
    WAIT_THEN_START = "wait_then_start"  # already stopping: wait until it ended, then start


def decide_existing(state: ExecutionState | None, on_existing: OnExisting) -> Existing:
    """`state`: the earlier execution's state now, None when the vendor does not know it (404). Either way, never
    two live executions: one that is stopping is waited for before a new start."""
    if state is None:
        return Existing.START
    if state is ExecutionState.SUCCEEDED:
        return Existing.USE_RESULT if on_existing == "reattach" else Existing.START
    if state.is_terminal:
        return Existing.START
    if state is ExecutionState.CANCELLING:
        return Existing.WAIT_THEN_START
    return Existing.REATTACH if on_existing == "reattach" else Existing.CANCEL_THEN_START


class Finish(str, enum.Enum):
    """How a task ends once its execution reached a terminal state."""

    RESULT = "result"
    RESTART = "restart"  # adopted from an earlier try and cancelled (most likely by that try's own kill): start once
    CANCELLED_REMOTELY = "cancelled_remotely"  # someone else stopped it: fail without retry
    FAILED = "failed"


def decide_finished(state: ExecutionState, *, adopted: bool, restarted: bool) -> Finish:
    """`adopted`: this try did not start it; `restarted`: this try already started its own once."""
    if state is ExecutionState.SUCCEEDED:
        return Finish.RESULT
    if state is ExecutionState.CANCELLED:
        return Finish.RESTART if adopted and not restarted else Finish.CANCELLED_REMOTELY
    return Finish.FAILED


# -- the cancel guard ----------------------------------------------------------------------------------------
class CancelState(str, enum.Enum):
    IDLE = "idle"  # no execution owned yet
    LIVE = "live"  # owned and maybe running: a kill must cancel it
    ENDED = "ended"  # its terminal state was seen: nothing to cancel
    REQUESTED = "requested"  # a cancel was accepted (or the vendor said it had nothing left to cancel)
    FAILED = "failed"  # every attempt to cancel failed: a later path may try again
    RELEASED = "released"  # not ours to cancel (cancel_on_kill=False, or handed over)


class KillFlag(threading.Event):
    """Set when the task is killed; a copy of the task gets its own flag (an Event holds a lock)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> KillFlag:
        copied = KillFlag()
        if self.is_set():
            copied.set()
        return copied


class CancelGuard:
    """The cancel state of the one execution a task (or trigger) owns, with an atomic claim on cancelling it.

    `claim()` is a non-blocking lock acquire: atomic across threads and safe in a signal handler that interrupts
    the thread holding it (the handler's claim fails at once instead of waiting forever)."""

    def __init__(self, *, cancel_on_kill: bool = True) -> None:
        self.cancel_on_kill = cancel_on_kill
        self.execution_id: str | None = None
        self.state = CancelState.IDLE
        self._claim = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> CancelGuard:
        """A copy of the task (`airflow dags test` on 3.0, `DAG.partial_subset`) gets its own lock: a lock cannot
        be copied, and sharing one would let the copy's claim block the original's."""
        copied = CancelGuard(cancel_on_kill=self.cancel_on_kill)
        copied.execution_id, copied.state = self.execution_id, self.state
        return copied

    def own(self, execution_id: str) -> None:
        """This task owns `execution_id` from now on (new, adopted, or resumed after a deferral)."""
        self.execution_id = execution_id
        self.state = CancelState.LIVE if self.cancel_on_kill else CancelState.RELEASED
        self._claim = threading.Lock()

    def ended(self) -> None:
        if self.state in (CancelState.LIVE, CancelState.FAILED):
            self.state = CancelState.ENDED

    def release(self) -> None:
        self.state = CancelState.RELEASED

    @property
    def due(self) -> bool:
        """Would a kill now have to cancel?"""
        return self.state in (CancelState.LIVE, CancelState.FAILED)

    def claim(self) -> str | None:
        """The execution to cancel, if the caller is the one to send the cancel now; else None."""
        if not self.due or not self._claim.acquire(blocking=False):
            return None
        if not self.due:  # settled while we acquired
            self._claim.release()
            return None
        return self.execution_id

    def settle(self, outcome: CancelOutcome) -> None:
        """The claimed cancel's outcome. A failed one frees the claim for a later path to try again."""
        if outcome.settled:
            self.state = CancelState.REQUESTED
        else:
            self.state = CancelState.FAILED
            self._claim.release()

    def adopt_outcome(self, outcome: CancelOutcome | None) -> None:
        """What another process (the trigger) did about this execution's cancel."""
        if outcome is not None and outcome.settled:
            self.state = CancelState.REQUESTED
        elif outcome is CancelOutcome.FAILED and self.state is CancelState.LIVE:
            self.state = CancelState.FAILED


# -- orphans -------------------------------------------------------------------------------------------------
# Task instance states after which no try of it runs any more (until someone clears it).
FINISHED_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class OrphanAction(str, enum.Enum):
    """What the orphan sweep does with a recorded execution."""

    LEAVE = "leave"  # a live try may own it, or it is not ours to cancel: leave it (and its record) alone
    FORGET = "forget"  # it has ended, or the vendor does not know it: nothing to cancel, drop the record
    CANCEL = "cancel"  # no live try owns it and it still runs: cancel it


def decide_orphan(record: ExecutionRecord, ti_state: str | None, state: ExecutionState | None) -> OrphanAction:
    """The one rule for executions whose task died without any provider code running: `ti_state` is the task
    instance's state now (after the sweep's grace period), `state` the execution's (None: unknown to the vendor).

    A task instance that is not finished (queued, running, deferred, up for retry, restarting after a clear) has
    a live or coming try that owns or adopts the execution: never touched. A finished one owns nothing any more."""
    if ti_state not in FINISHED_TI_STATES or not record.cancel_if_orphaned:
        return OrphanAction.LEAVE
    if state is None or state.is_terminal or state is ExecutionState.CANCELLING:
        return OrphanAction.FORGET
    return OrphanAction.CANCEL
