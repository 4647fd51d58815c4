"""The vendor-neutral lifecycle of one remote execution, and every way it gets cancelled when the task dies.

start (owned the moment its id is known) -> recorded (core.ownership) -> wait (core.poll here, or deferred to
core.trigger) -> terminal state -> result, or a failure carrying the vendor's own error.

Who owns the execution and whether a cancel is due is decided in `core.ownership`; this module wires those
decisions to Airflow's kill paths (docs/kill-paths.md, K1-K13):
- `on_kill` (UI mark failed/success, clear, SIGTERM, execution_timeout): one cancel with a fresh short-timeout
  client, never raises; the wait then raises so the task never reports success.
- any other exception while the execution is live (e.g. the API starts refusing the key): cancel, re-raise.
- `resume_execution("__fail__")` (defer timeout backstop, trigger crash): cancel the recorded id.
- a deferred task's own deadline is enforced by the trigger (Airflow 3.3 does not while deferred); a deadline
  cancel that failed there is sent again here.
- a retry after a hard worker crash finds the recorded id and reattaches or cancels it (`on_existing`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout, BaseOperator, TaskDeferred

from airflow_provider_cancel.core import poll
from airflow_provider_cancel.core.docs import default_doc_md, inherit_params
from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.http import ClientTimeouts, RetryPolicy, may_have_acted
from airflow_provider_cancel.core.ownership import (
    STATE_STORE_KEY,
    XCOM_EXECUTION_ID,
    XCOM_EXECUTION_URL,
    CancelGuard,
    CancelState,
    ExecutionRecord,
    Existing,
    Finish,
    KillFlag,
    OnExisting,
    RecordStore,
    decide_existing,
    decide_finished,
)
from airflow_provider_cancel.core.poll import PollSchedule, format_duration
from airflow_provider_cancel.core.state import CancelOutcome, ExecutionStatus
from airflow_provider_cancel.version_compat import kill_budget_seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "STATE_STORE_KEY",
    "XCOM_EXECUTION_ID",
    "XCOM_EXECUTION_URL",
    "ExecutionOperator",
    "default_deferrable",
]

# on_kill has ~5 s before SIGKILL in Airflow 3.3: short timeouts, brief retries (KILL_RETRY), no waiting for the
# execution to confirm it stopped.
KILL_TIMEOUTS = ClientTimeouts(connect=2.0, read=2.5)
# A 429, 503 or dropped connection must not leave the execution running: on_kill sends its cancel again, briefly,
# while Airflow's ~5 s between SIGTERM and SIGKILL last. Retry-After is cut short: a late cancel is a lost one.
KILL_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=0.8, max_retry_after=0.5,
                         give_up_after=3.5)
# Extra time past the task's deadline before Airflow's own defer timeout fires as a backstop (K8).
DEFER_BACKSTOP = timedelta(minutes=5)
STOP_WAIT = 120.0  # how long a new try waits for an earlier try's cancelled execution to end before starting
HookT = TypeVar("HookT", bound=ExecutionHook)


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, as every official provider reads it."""
    from airflow.providers.common.compat.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _type_names(expected: tuple[type, ...]) -> str:
    names = {bool: "True or False", str: "a string", int: "a number", float: "a number", type(None): "None"}
    return " or ".join(dict.fromkeys(names.get(kind, kind.__name__) for kind in expected))


class ExecutionOperator(BaseOperator, Generic[HookT]):
    """Start one remote execution, wait for it, return its result; cancel it whenever the task dies.

    :param conn_id: the Airflow connection of the vendor API (templated; default: ``<vendor>_default``).
    :param deferrable: wait in the triggerer instead of holding a worker slot
        (default: ``[operators] default_deferrable``).
    :param wait_for_completion: False returns the execution id as soon as it has started (and never
        cancels it: the task has ended, nothing is killed).
    :param poll_interval: first delay between status reads, in seconds (default 1); later reads stretch
        with the run time (lag under 10% of it) up to ``max_poll_interval``, and slow down when the
        vendor's rate limit says so.
    :param max_poll_interval: the longest delay between status reads, in seconds (default 30).
    :param cancel_on_kill: cancel the remote execution when the task is killed, times out or fails
        (default True).
    :param on_existing: what a new try does with an execution recorded by an earlier try of the same task
        (its worker died, or the task was cleared): ``"reattach"`` (default) waits for a live one and uses
        the result of one that already succeeded (no duplicate work, no lost result); ``"cancel"`` cancels
        it and starts afresh. Either way, never two live executions.
    :param durable: the AIP-103 spelling (Airflow 3.3's ``ResumableJobMixin``) of ``on_existing``:
        ``True`` is ``"reattach"``, ``False`` is ``"cancel"`` (a new try starts afresh, after cancelling the
        earlier try's execution, where ``ResumableJobMixin`` would leave it running). Give one of the two.
    :param cancel_orphans: let the orphan sweep (run by the schedulers) cancel the execution when this task
        dies in a way that runs no code of this provider (its worker lost with no retry left, a deferred task
        killed before its trigger started, every cancel attempt failed) (default True; it follows
        ``cancel_on_kill``: with that False nothing cancels the execution).

    Airflow's own ``execution_timeout`` is the deadline of the remote execution too: when it passes the
    execution is cancelled, running or deferred. The execution id is pushed to XCom under
    ``execution_id`` (and its page under ``execution_url``, where the vendor has one) as soon as it
    has started.
    """

    # Set by every concrete operator (`class DuneRunQueryOperator(ExecutionOperator[DuneHook])`). Not a ClassVar:
    # a ClassVar may not hold a type variable.
    hook_class: type[HookT]
    defer_backstop: ClassVar[timedelta] = DEFER_BACKSTOP
    template_fields: Sequence[str] = ("conn_id",)
    ui_color = "#f4e6ff"

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        """A concrete operator without a `hook_class` fails here, at import, not at its first run.
        ``class MyBase(ExecutionOperator[H], abstract=True)`` declares an intermediate base."""
        super().__init_subclass__(**kwargs)
        if not abstract and not isinstance(getattr(cls, "hook_class", None), type):
            raise TypeError(f"{cls.__qualname__} must set hook_class to its vendor's ExecutionHook subclass")
        inherit_params(cls, ExecutionOperator, "Arguments of every operator of this provider:")

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        deferrable: bool | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 1.0,
        max_poll_interval: float = 30.0,
        cancel_on_kill: bool = True,
        on_existing: OnExisting | None = None,
        cancel_orphans: bool = True,
        durable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._check_types(
            conn_id=(conn_id, (str, type(None))), deferrable=(deferrable, (bool, type(None))),
            wait_for_completion=(wait_for_completion, (bool,)), cancel_on_kill=(cancel_on_kill, (bool,)),
            poll_interval=(poll_interval, (int, float)), max_poll_interval=(max_poll_interval, (int, float)),
            cancel_orphans=(cancel_orphans, (bool,)),
        )
        if durable is not None and not isinstance(durable, bool):
            raise ProviderConfigError(f"{self.task_id}: durable must be True or False, got {durable!r}")
        implied: OnExisting | None = None if durable is None else ("reattach" if durable else "cancel")
        if on_existing is not None and implied is not None and on_existing != implied:
            raise ProviderConfigError(
                f"{self.task_id}: durable={durable} means on_existing={implied!r}, but on_existing={on_existing!r} "
                "was given too: give one of them"
            )
        on_existing = on_existing or implied or "reattach"
        if on_existing not in ("reattach", "cancel"):
            raise ProviderConfigError(
                f"{self.task_id}: on_existing must be 'reattach' or 'cancel', got {on_existing!r}"
            )
        if not (0 < poll_interval <= max_poll_interval):
            raise ProviderConfigError(
                f"{self.task_id}: need 0 < poll_interval <= max_poll_interval, got {poll_interval} and "
                f"{max_poll_interval}"
            )
        self.conn_id = conn_id or self.hook_class.default_conn_name
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.on_existing = on_existing
        self.cancel_orphans = cancel_orphans
        # Runtime state; on_kill may run in a signal handler and reads only the guard and the kill flag.
        self._hook: HookT | None = None
        self._guard = CancelGuard(cancel_on_kill=cancel_on_kill)
        self._killed = KillFlag()
        self._records: RecordStore | None = None
        self._adopted = False  # the execution was started by an earlier try
        self._restarted = False  # this try already replaced an adopted execution once
        default_doc_md(self)

    def _check_types(self, **arguments: tuple[Any, tuple[type, ...]]) -> None:
        """At DAG parse: "no" is not False and "5" is not 5 (a truthy string would still cancel, defer...)."""
        for name, (value, expected) in arguments.items():
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                raise ProviderConfigError(f"{self.task_id}: {name} must be {_type_names(expected)}, got {value!r}")

    # -- vendor adapter: required override ------------------------------------------------------------
    def start_execution(self, hook: HookT, context: Context) -> str:
        """Start the remote execution and return its id. Use `self.idempotency_key(context)` if the vendor can."""
        raise NotImplementedError

    # -- vendor adapter: optional overrides ------------------------------------------------------------
    def validate_request(self) -> None:
        """Check rendered arguments before any request; raise ProviderConfigError naming the field."""

    def fetch_result(self, hook: HookT, status: ExecutionStatus) -> Any:
        """The task's return value (XCom) for a succeeded execution."""
        return None

    def link_info(self) -> Mapping[str, Any]:
        """What the vendor's execution page URL needs beyond the execution id."""
        return {}

    def lineage_job_facets(self) -> Mapping[str, Any]:
        """OpenLineage job facets of what this operator runs (core.lineage; called only by OpenLineage)."""
        return {}

    # -- OpenLineage (apache-airflow-providers-openlineage calls these; nothing is imported before) ------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The vendor, execution id and page as run facets, and the vendor's job facets (docs/lineage.md)."""
        from airflow_provider_cancel.core.lineage import operator_lineage

        return operator_lineage(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion: a failed (or cancelled) execution is named the same way."""
        from airflow_provider_cancel.core.lineage import operator_lineage

        return operator_lineage(self, task_instance)

    # -- helpers for adapters --------------------------------------------------------------------------
    @property
    def hook(self) -> HookT:
        if self._hook is None:
            self._hook = self.hook_class(self.conn_id)
        return self._hook

    @property
    def execution_id(self) -> str | None:
        """The execution this task owns (None before it has started one)."""
        return self._guard.execution_id

    @execution_id.setter
    def execution_id(self, value: str) -> None:
        """Own `value` (an execution this task started elsewhere, e.g. in a test)."""
        self._guard.own(self.hook.trust(value))

    def idempotency_key(self, context: Context) -> str:
        """Stable for one try of one task instance: a retried create of the same try starts nothing new."""
        ti = context["ti"]
        map_part = f".{ti.map_index}" if ti.map_index is not None and ti.map_index >= 0 else ""
        key = f"airflow:{ti.dag_id}:{ti.run_id}:{ti.task_id}{map_part}:try{ti.try_number}"
        if len(key) <= 128 and key.isascii() and key.isprintable():
            return key  # readable in the vendor's logs
        return "airflow-" + hashlib.sha256(key.encode()).hexdigest()[:40]  # header-safe for any run id

    # -- lifecycle -------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        try:
            return self._execute(context)
        finally:
            self._close()

    def _execute(self, context: Context) -> Any:
        self.validate_request()
        hook = self.hook
        hook.client.sleep = self._sleep  # a kill interrupts retry back-offs too
        status = self._adopt_existing(hook, context)
        if self.execution_id is None:
            self._start(hook, context)
        assert self.execution_id is not None
        if not self.wait_for_completion:
            self._hand_over(context)
            return self.execution_id
        return self._guarded(lambda: self._wait(hook, context, status))

    def _start(self, hook: HookT, context: Context) -> None:
        """Start a new execution. The hook reports its id the moment it is known (`hook.started`), before
        anything else in the answer is read, so an answer that is then unreadable still leaves it owned; an id
        the client chooses (`hook.planned`) is recorded before the create is sent."""
        planned: list[str] = []

        def on_planned(execution_id: str) -> None:
            planned.append(execution_id)
            self._record(context, execution_id, verb="to be started")

        hook.on_planned = on_planned
        hook.on_started = lambda execution_id: self._own(context, execution_id, adopted=False)
        try:
            execution_id = self.start_execution(hook, context)
        except BaseException as err:
            if self.execution_id is None and planned and may_have_acted(err):
                self._own(context, planned[-1], adopted=False)  # it may exist: own it, so it is cancelled below
            if self.execution_id is not None:
                self._cancel_once(f"its start failed ({type(err).__name__})")
                err.add_note(f"{self.hook.vendor} execution {self.execution_id} may have been started by this "
                             "create: the task cancelled it (the log has the outcome)")
            raise
        finally:
            hook.on_planned = hook.on_started = None
        if execution_id != self.execution_id:  # an adapter that did not report it through hook.started
            self._own(context, hook.trust(execution_id), adopted=False)

    def _wait(self, hook: HookT, context: Context, status: ExecutionStatus | None) -> Any:
        assert self.execution_id is not None
        self._raise_if_killed()  # killed while the create was in flight: cancel what it started
        if self.deferrable:
            status = status or hook.get_status(self.execution_id)
            if not status.state.is_terminal:
                self._defer(context)
        return self._finish(hook, context, self._poll(hook, status))

    def _poll(self, hook: HookT, status: ExecutionStatus | None) -> ExecutionStatus:
        """Wait here until the execution ends (Airflow's execution_timeout, or a kill, ends the wait sooner)."""
        execution_id = self.execution_id
        assert execution_id is not None
        waiter = poll.Waiter(hook.vendor, execution_id, schedule=self._schedule(), started_at=time.monotonic(),
                             log=self.log)
        def read(left: float | None) -> ExecutionStatus:
            return self._unless_killed(hook.get_status(execution_id, deadline=poll.request_deadline(left)))

        ending = poll.wait(waiter, read, self._sleep, status=status)
        assert isinstance(ending, poll.Finished)  # no deadline of its own
        self._guard.ended()
        return ending.status

    def _finish(self, hook: HookT, context: Context, status: ExecutionStatus) -> Any:
        self._guard.ended()
        name = f"{hook.vendor} execution {status.execution_id}"
        finish = decide_finished(status.state, adopted=self._adopted, restarted=self._restarted)
        if finish is Finish.RESULT:
            self.log.info("%s succeeded (%s)", name, status.vendor_status)
            result = self.fetch_result(hook, status)
            self._store(context).forget()
            return result
        if finish is Finish.RESTART:
            # Adopted from an earlier try whose own kill (clear, mark failed, a deferred trigger's on_kill racing
            # this try's start) may be what cancelled it: this try has started nothing yet, so start once.
            self.log.warning("%s, adopted from an earlier try, ended cancelled (%s): starting a new execution",
                             name, status.vendor_status)
            self._restarted = True
            self._start(hook, context)
            return self._wait(hook, context, None)
        if finish is Finish.CANCELLED_REMOTELY:
            raise ExecutionCancelledRemotely(
                f"{name} was cancelled outside this task ({status.vendor_status})"
                + (f": {status.error}" if status.error else "")
                + ". Not retrying: a retry would restart what someone stopped."
            )
        raise ExecutionFailed(f"{name} failed ({status.vendor_status}): {status.error or 'no error message given'}")

    def _schedule(self) -> PollSchedule:
        return PollSchedule(self.poll_interval, self.max_poll_interval)

    # -- deferral --------------------------------------------------------------------------------------
    def _deadline(self, context: Context) -> float | None:
        if not self.execution_timeout:
            return None
        start = getattr(context["ti"], "start_date", None)
        begun = start.timestamp() if start else time.time()
        return begun + self.execution_timeout.total_seconds()

    def _defer(self, context: Context) -> None:
        from airflow_provider_cancel.core.trigger import ExecutionTrigger

        assert self.execution_id is not None
        deadline = self._deadline(context)
        self.defer(
            trigger=ExecutionTrigger(
                hook_class=f"{self.hook_class.__module__}.{self.hook_class.__qualname__}",
                conn_id=self.conn_id,
                execution_id=self.execution_id,
                deadline=deadline,
                started_at=time.time(),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            timeout=(
                timedelta(seconds=deadline - time.time()) + self.defer_backstop if deadline is not None else None
            ),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        try:
            return self._execute_complete(context, event)
        finally:
            self._close()

    def _execute_complete(self, context: Context, event: Any) -> Any:
        from airflow_provider_cancel.core.trigger import TriggerOutcome

        outcome = TriggerOutcome.parse_event(event)
        self._own(context, self.hook.trust(outcome.execution_id), adopted=self._was_adopted(context), record=False)
        if outcome.kind == "timeout":
            self._guard.adopt_outcome(outcome.cancel)
            if self._guard.due:  # the trigger's deadline cancel failed (or was not sent): this worker tries again
                self._cancel_once("the task's execution_timeout passed while deferred")
            raise AirflowTaskTimeout(
                f"{self.hook.vendor} execution {outcome.execution_id} ran past the task's execution_timeout "
                f"while deferred; {outcome.describe_cancel()}"
            )
        return self._guarded(lambda: self._complete(context, outcome))

    def _complete(self, context: Context, outcome: Any) -> Any:
        hook = self.hook
        assert self.execution_id is not None
        if outcome.kind == "error":
            raise AirflowException(f"Waiting for {hook.vendor} execution {self.execution_id} failed: {outcome.message}")
        # Re-read once on the worker: the event stays small and the result comes from fresh data. A re-read that
        # is no longer terminal (a vendor that went back to "running") goes back to waiting: never left alone.
        status = hook.get_status(self.execution_id)
        if not status.state.is_terminal:
            self.log.warning("%s execution %s reads %s after the trigger saw it end; waiting again", hook.vendor,
                             self.execution_id, status.describe())
            return self._wait(hook, context, status)
        return self._finish(hook, context, status)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == "__fail__":  # the defer timeout fired or the trigger crashed: nobody is watching
            record = self._store(context).recall()
            if self.execution_id is None and record is not None:
                self._own(context, self.hook.trust(record.execution_id), adopted=False, record=False)
            self._cancel_once("the trigger failed or timed out")
        return super().resume_execution(next_method, next_kwargs, context)

    def _close(self) -> None:
        """The hook's connections: a process that runs many tasks (``airflow dags test``) must not pile them up."""
        if self._hook is not None:
            self._hook.close()

    # -- ownership (core.ownership decides; this records and acts) -------------------------------------
    def _store(self, context: Context) -> RecordStore:
        if self._records is None:
            self._records = RecordStore(context, self.log)
        return self._records

    def _own(self, context: Context, execution_id: str, *, adopted: bool, record: bool = True) -> None:
        self._guard.own(execution_id)
        self._adopted = adopted
        if record:
            self._record(context, execution_id)

    def _record(self, context: Context, execution_id: str, *, try_number: int | None = None,
                verb: str | None = None) -> None:
        hook = self.hook
        ti = context["ti"]
        self._store(context).save(ExecutionRecord(
            execution_id,
            try_number=try_number if try_number is not None else ti.try_number,
            conn_id=self.conn_id,
            hook=f"{self.hook_class.__module__}.{self.hook_class.__qualname__}",
            cancel_if_orphaned=self.cancel_on_kill and self.cancel_orphans and self.wait_for_completion,
        ))
        self.log.info("%s execution %s %s", hook.vendor, execution_id,
                      verb or ("adopted" if self._adopted else "started"))
        if url := hook.execution_url(execution_id, self.link_info()):
            ti.xcom_push(key=XCOM_EXECUTION_URL, value=url)
            for link in self.operator_extra_links:  # Airflow fills links only at the end of a segment
                ti.xcom_push(key=link.xcom_key, value=url)
            self.log.info("Follow it at %s", url)

    def _hand_over(self, context: Context) -> None:
        """wait_for_completion=False: the execution runs on without this task; nothing may cancel it."""
        self._guard.release()

    def _was_adopted(self, context: Context) -> bool:
        record = self._store(context).recall()
        ti = context["ti"]
        return record is not None and record.try_number is not None and record.try_number < ti.try_number

    def _adopt_existing(self, hook: HookT, context: Context) -> ExecutionStatus | None:
        """An execution left by an earlier try of this task: reattach to it or cancel it, per `on_existing`.
        Returns its status when this try adopted it."""
        store = self._store(context)
        record = store.recall() if store.durable else None
        if record is None:
            return None
        previous = hook.trust(record.execution_id)  # recorded by an earlier try from the vendor's own answer
        try:
            status: ExecutionStatus | None = hook.get_status(previous)
        except ExecutionApiError as err:
            if err.status_code != 404:
                raise  # it may still run: starting another could make two; the next try looks again
            self.log.warning("An earlier try recorded %s execution %s, unknown to the vendor now (%s): starting "
                             "afresh", hook.vendor, previous, err)
            status = None
        decision = decide_existing(None if status is None else status.state, self.on_existing)
        if decision in (Existing.USE_RESULT, Existing.REATTACH):
            assert status is not None
            what = "already succeeded: using its result" if decision is Existing.USE_RESULT else "is still " \
                f"{status.describe()}: reattaching"
            self.log.info("An earlier try's %s execution %s %s", hook.vendor, previous, what)
            self._guard.own(previous)
            self._adopted = True
            self._record(context, previous, try_number=record.try_number)
            return status
        if decision is Existing.CANCEL_THEN_START:
            assert status is not None
            self.log.info("An earlier try's %s execution %s is still %s: cancelling it before starting afresh",
                          hook.vendor, previous, status.describe())
            hook.cancel(previous)
        if decision in (Existing.CANCEL_THEN_START, Existing.WAIT_THEN_START):
            self._wait_until_stopped(hook, previous)
        return None

    def _wait_until_stopped(self, hook: HookT, execution_id: str) -> None:
        """Wait (bounded) for a cancelled execution to end, so that a new start never overlaps it."""
        started = time.monotonic()
        waiter = poll.Waiter(hook.vendor, execution_id, schedule=self._schedule(), started_at=started,
                             deadline=started + STOP_WAIT, log=self.log, progress=False)
        ending = poll.wait(waiter, lambda left: hook.get_status(execution_id, deadline=poll.request_deadline(left)),
                           self._sleep)
        if isinstance(ending, poll.Finished):
            self.log.info("The earlier %s execution %s has stopped (%s)", hook.vendor, execution_id,
                          ending.status.vendor_status)
        else:
            self.log.warning("The earlier %s execution %s is still stopping after %s; starting anyway", hook.vendor,
                             execution_id, format_duration(STOP_WAIT))

    # -- killing ---------------------------------------------------------------------------------------
    def _guarded(self, wait: Any) -> Any:
        """Run `wait`; if it fails while the execution may still be live, cancel before failing."""
        try:
            return wait()
        except TaskDeferred:
            raise
        except AirflowTaskTimeout:
            raise  # Airflow calls on_kill next, which cancels
        except BaseException as err:
            self._cancel_once(f"the task is failing ({type(err).__name__})")
            raise

    def _sleep(self, seconds: float) -> None:
        self._killed.wait(seconds)
        self._raise_if_killed()

    def _unless_killed(self, status: ExecutionStatus) -> ExecutionStatus:
        """A status read while the task was being killed is not acted on: the task must not report success."""
        self._raise_if_killed()
        return status

    def _raise_if_killed(self) -> None:
        if self._killed.is_set():
            raise ExecutionKilled(
                f"Task killed while waiting for execution {self.execution_id}"
                + ("; its cancellation was requested" if self._guard.state is CancelState.REQUESTED else "")
            )

    def on_kill(self) -> None:
        """Called by Airflow on SIGTERM (mark failed/success, clear, worker shutdown) and on execution_timeout."""
        self._killed.set()
        self._cancel_once("the task was killed")

    def _cancel_once(self, reason: str) -> None:
        """Send at most one cancel, quickly, and never raise: this may run inside a signal handler."""
        if self._guard.state is CancelState.RELEASED and not self.cancel_on_kill:
            self.log.info("Not cancelling %s (cancel_on_kill=False)", self.execution_id)
            return
        execution_id = self._guard.claim()
        if execution_id is None:
            return
        outcome = CancelOutcome.FAILED
        try:
            hook = self.hook
            # A fresh socket (the poll's may be mid-request in another thread), time.sleep between attempts.
            retry = dataclasses.replace(KILL_RETRY, give_up_after=kill_budget_seconds())  # 3.5 s; more on 3.4
            client = hook.client.with_options(timeouts=KILL_TIMEOUTS, retry=retry)
            try:
                outcome = hook.cancel(execution_id, client=client)
            finally:
                client.close()
            if outcome is CancelOutcome.REQUESTED:
                self.log.warning("Cancelled %s execution %s: %s", hook.vendor, execution_id, reason)
            else:
                self.log.info("No cancel needed for %s (%s)", execution_id, outcome.value)
        except Exception as err:
            self.log.error("Could not cancel execution %s (%s): %s", execution_id, reason, err)
        finally:
            self._guard.settle(outcome)
