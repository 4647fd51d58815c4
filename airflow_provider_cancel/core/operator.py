"""The vendor-neutral lifecycle of one remote execution, and every way it gets cancelled when the task dies.

start -> record the id (self, XCom, task_state_store) -> wait (poll here, or defer to the trigger)
      -> terminal state -> result, or a failure carrying the vendor's own error.

Kill paths handled here (DESIGN.md K1-K13):
- `on_kill` (UI mark failed/success, clear, SIGTERM, execution_timeout): one cancel with a fresh
  short-timeout client, never raises; the poll loop then raises so the task never reports success.
- any other exception while the execution is live (e.g. the API starts refusing the key): cancel, re-raise.
- `resume_execution("__fail__")` (defer timeout backstop, trigger crash): cancel the recorded id.
- a deferred task's own deadline is enforced by the trigger (Airflow 3.3 does not while deferred).
- a retry after a hard worker crash finds the recorded id and reattaches or cancels it (`on_existing`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout, TaskDeferred

from airflow_provider_cancel.core.docs import default_doc_md, inherit_params
from airflow_provider_cancel.core.errors import (
    ExecutionApiError,
    ExecutionCancelledRemotely,
    ExecutionFailed,
    ExecutionKilled,
    ProviderConfigError,
)
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook
from airflow_provider_cancel.core.http import ClientTimeouts, RetryPolicy, is_transient
from airflow_provider_cancel.core.poll import PollSchedule
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_EXECUTION_ID = "execution_id"
XCOM_EXECUTION_URL = "execution_url"
STATE_STORE_KEY = "airflow_provider_cancel.execution_id"
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
PROGRESS_HEARTBEAT = 300.0  # log "still running" at least this often even when nothing changes

OnExisting = Literal["reattach", "cancel"]


def _default_deferrable() -> bool:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.0
        from airflow.configuration import conf  # type: ignore[no-redef]
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _type_names(expected: tuple[type, ...]) -> str:
    names = {bool: "True or False", str: "a string", int: "a number", float: "a number", type(None): "None"}
    return " or ".join(dict.fromkeys(names.get(kind, kind.__name__) for kind in expected))


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog:
    """One readable line when something changes (or every few minutes), not a wall of identical lines."""

    def __init__(self, vendor: str, execution_id: str) -> None:
        self.vendor, self.execution_id = vendor, execution_id
        self._last: str | None = None
        self._last_at = 0.0

    def line(self, status: ExecutionStatus, elapsed: float, next_delay: float | None) -> str | None:
        now = time.monotonic()
        described = status.describe()
        if described == self._last and now - self._last_at < PROGRESS_HEARTBEAT:
            return None
        self._last, self._last_at = described, now
        text = f"{self.vendor} execution {self.execution_id}: {described}; {format_duration(elapsed)} elapsed"
        if next_delay is not None and not status.state.is_terminal:
            text += f"; next check in {next_delay:.0f}s"
        if status.state is ExecutionState.UNKNOWN:
            text += " (unknown status word: treated as still running)"
        return text


class ExecutionOperator(BaseOperator):
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

    Airflow's own ``execution_timeout`` is the deadline of the remote execution too: when it passes the
    execution is cancelled, running or deferred. The execution id is pushed to XCom under
    ``execution_id`` (and its page under ``execution_url``, where the vendor has one) as soon as it
    has started.
    """

    hook_class: ClassVar[type[ExecutionHook]]
    defer_backstop: ClassVar[timedelta] = DEFER_BACKSTOP
    template_fields: Sequence[str] = ("conn_id",)
    ui_color = "#f4e6ff"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
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
        on_existing: OnExisting = "reattach",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._check_types(
            conn_id=(conn_id, (str, type(None))), deferrable=(deferrable, (bool, type(None))),
            wait_for_completion=(wait_for_completion, (bool,)), cancel_on_kill=(cancel_on_kill, (bool,)),
            poll_interval=(poll_interval, (int, float)), max_poll_interval=(max_poll_interval, (int, float)),
        )
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
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.on_existing = on_existing
        # Runtime state, reset per execution; on_kill may run in a signal handler and reads only these.
        self.execution_id: str | None = None
        self._hook: ExecutionHook | None = None
        self._ended = False
        self._cancel_sent = False
        self._killed = False
        self._wake = threading.Event()
        default_doc_md(self)

    def _check_types(self, **arguments: tuple[Any, tuple[type, ...]]) -> None:
        """At DAG parse: "no" is not False and "5" is not 5 (a truthy string would still cancel, defer...)."""
        for name, (value, expected) in arguments.items():
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                raise ProviderConfigError(f"{self.task_id}: {name} must be {_type_names(expected)}, got {value!r}")

    # -- vendor adapter: override ----------------------------------------------------------------------
    def validate_request(self) -> None:
        """Check rendered arguments before any request; raise ProviderConfigError naming the field."""

    def start_execution(self, hook: ExecutionHook, context: Context) -> str:
        """Start the remote execution and return its id. Use `self.idempotency_key(context)` if the vendor can."""
        raise NotImplementedError

    def fetch_result(self, hook: ExecutionHook, status: ExecutionStatus) -> Any:
        """The task's return value (XCom) for a succeeded execution."""
        return None

    def link_info(self) -> Mapping[str, Any]:
        """What the vendor's execution page URL needs beyond the execution id."""
        return {}

    # -- helpers for adapters --------------------------------------------------------------------------
    @property
    def hook(self) -> ExecutionHook:
        if self._hook is None:
            self._hook = self.hook_class(self.conn_id)
        return self._hook

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
        self.validate_request()
        hook = self.hook
        hook.client.sleep = self._sleep  # a kill interrupts retry back-offs too
        status = self._adopt_existing(hook, context)
        if status is None:
            self._record(context, self.start_execution(hook, context), new=True)
        assert self.execution_id is not None
        if not self.wait_for_completion:
            return self.execution_id
        return self._guarded(context, lambda: self._wait(hook, context, status))

    def _wait(self, hook: ExecutionHook, context: Context, status: ExecutionStatus | None) -> Any:
        assert self.execution_id is not None
        if self.deferrable:
            status = status or hook.get_status(self.execution_id)
            if not status.state.is_terminal:
                self._defer(context)
        return self._finish(hook, context, self._poll(hook, context, status))

    def _poll(self, hook: ExecutionHook, context: Context, status: ExecutionStatus | None) -> ExecutionStatus:
        assert self.execution_id is not None
        schedule = PollSchedule(self.poll_interval, self.max_poll_interval)
        progress = ProgressLog(hook.vendor, self.execution_id)
        started = time.monotonic()
        rate_limit = status.rate_limit if status is not None else None
        while True:
            self._raise_if_killed()
            if status is None:
                try:
                    status = hook.get_status(self.execution_id)
                    rate_limit = status.rate_limit
                except Exception as err:
                    # Never give up on a running execution over transient errors: the deadline decides.
                    if not is_transient(err):
                        raise
                    rate_limit = getattr(err, "rate_limit", None)
                    self.log.warning("Could not read the status (%s); will try again", err)
            self._raise_if_killed()
            elapsed = time.monotonic() - started
            delay = schedule.delay(elapsed, rate_limit)
            if status is not None:
                if line := progress.line(status, elapsed, delay):
                    self.log.info("%s", line)
                if status.state.is_terminal:
                    self._ended = True
                    return status
            status = None
            self._sleep(delay)

    def _finish(self, hook: ExecutionHook, context: Context, status: ExecutionStatus) -> Any:
        self._ended = True
        name = f"{hook.vendor} execution {status.execution_id}"
        if status.state is ExecutionState.SUCCEEDED:
            self.log.info("%s succeeded (%s)", name, status.vendor_status)
            result = self.fetch_result(hook, status)
            self._forget(context)
            return result
        if status.state is ExecutionState.CANCELLED and self._started_by_earlier_try(context):
            # Adopted from an earlier try whose own kill (clear, mark failed, a deferred trigger's on_kill racing
            # this try's start) may be what cancelled it: this try has started nothing yet, so start once.
            self.log.warning("%s, adopted from an earlier try, ended cancelled (%s): starting a new execution",
                             name, status.vendor_status)
            self._record(context, self.start_execution(hook, context), new=True)
            return self._wait(hook, context, None)
        if status.state is ExecutionState.CANCELLED:
            raise ExecutionCancelledRemotely(
                f"{name} was cancelled outside this task ({status.vendor_status})"
                + (f": {status.error}" if status.error else "")
                + ". Not retrying: a retry would restart what someone stopped."
            )
        raise ExecutionFailed(f"{name} failed ({status.vendor_status}): {status.error or 'no error message given'}")

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
        from airflow_provider_cancel.core.trigger import TriggerOutcome

        outcome = TriggerOutcome.parse_event(event)
        self.execution_id = self.hook.trust(outcome.execution_id)
        if outcome.kind == "timeout":
            self._cancel_sent = self._cancel_sent or outcome.cancel_sent
            raise AirflowTaskTimeout(
                f"{self.hook.vendor} execution {outcome.execution_id} ran past the task's execution_timeout "
                f"while deferred; cancel {outcome.cancel_result or 'not sent (cancel_on_kill=False)'}"
            )
        return self._guarded(context, lambda: self._complete(context, outcome))

    def _complete(self, context: Context, outcome: Any) -> Any:
        hook = self.hook
        assert self.execution_id is not None
        if outcome.kind == "error":
            raise AirflowException(f"Waiting for {hook.vendor} execution {self.execution_id} failed: {outcome.message}")
        # Re-read once on the worker: the event stays small and the result comes from fresh data.
        return self._finish(hook, context, hook.get_status(self.execution_id))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == "__fail__":  # the defer timeout fired or the trigger crashed: nobody is watching
            recorded = self.execution_id or self._recorded(context)[0]
            self.execution_id = self.hook.trust(recorded) if recorded else None
            self._cancel_once("the trigger failed or timed out")
        return super().resume_execution(next_method, next_kwargs, context)

    # -- recording and adoption (K3, K9) ---------------------------------------------------------------
    def _record(self, context: Context, execution_id: str, *, new: bool) -> None:
        self.execution_id = execution_id
        self._ended = False
        hook = self.hook
        self.log.info("%s execution %s %s", hook.vendor, execution_id, "started" if new else "adopted")
        ti = context["ti"]
        ti.xcom_push(key=XCOM_EXECUTION_ID, value=execution_id)
        if url := hook.execution_url(execution_id, self.link_info()):
            ti.xcom_push(key=XCOM_EXECUTION_URL, value=url)
            for link in self.operator_extra_links:  # Airflow fills links only at the end of a segment
                ti.xcom_push(key=link.xcom_key, value=url)
            self.log.info("Follow it at %s", url)
        if new and (store := context.get("task_state_store")):
            # Before any poll: a later try (after a crash or a clear) finds it here, even if this worker dies.
            try:
                store.set(STATE_STORE_KEY, {"execution_id": execution_id, "try_number": ti.try_number})
            except Exception as err:  # an older store API or backend: XCom still holds the id
                self.log.warning("Could not record the execution id in task_state_store: %s", err)

    def _recorded(self, context: Context) -> tuple[str | None, int | None]:
        """The execution id recorded by this task instance, and the try that started it (if known)."""
        if store := context.get("task_state_store"):
            try:
                value = store.get(STATE_STORE_KEY)
            except Exception as err:
                self.log.warning("Could not read task_state_store: %s", err)
            else:
                if isinstance(value, dict) and isinstance(recorded := value.get("execution_id"), str):
                    try_number = value.get("try_number")
                    return recorded, try_number if isinstance(try_number, int) else None
                if isinstance(value, str):  # recorded by an earlier version of this provider
                    return value, None
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_EXECUTION_ID, map_indexes=ti.map_index)
        return (value if isinstance(value, str) else None), None

    def _forget(self, context: Context) -> None:
        """Done with it: a later clear of this task runs anew instead of adopting a finished execution."""
        if store := context.get("task_state_store"):
            try:
                store.delete(STATE_STORE_KEY)
            except Exception as err:
                self.log.warning("Could not clear the execution id from task_state_store: %s", err)

    def _started_by_earlier_try(self, context: Context) -> bool:
        if not context.get("task_state_store"):
            return False
        recorded, try_number = self._recorded(context)
        return recorded == self.execution_id and try_number is not None and try_number < context["ti"].try_number

    def _adopt_existing(self, hook: ExecutionHook, context: Context) -> ExecutionStatus | None:
        """An execution left by an earlier try of this task: reattach to it or cancel it, per `on_existing`.

        Either way never two live executions: one that is still stopping is waited for before a new start."""
        previous = self._recorded(context)[0] if context.get("task_state_store") else None
        if not previous:
            return None
        hook.trust(previous)  # recorded by an earlier try from the vendor's own answer
        try:
            status = hook.get_status(previous)
        except ExecutionApiError as err:
            if err.status_code != 404:
                raise  # it may still run: starting another could make two; the next try looks again
            self.log.warning("An earlier try recorded %s execution %s, unknown to the vendor now (%s): starting "
                             "afresh", hook.vendor, previous, err)
            return None
        if status.state is ExecutionState.SUCCEEDED and self.on_existing == "reattach":
            # The earlier try died after the remote work was done (a success clears the record): use it.
            self.log.info("An earlier try's %s execution %s already succeeded: using its result", hook.vendor,
                          previous)
            self._record(context, previous, new=False)
            return status
        if status.state.is_terminal:
            return None  # failed or cancelled: this retry runs it again
        if status.state is not ExecutionState.CANCELLING and self.on_existing == "reattach":
            self.log.info("An earlier try's %s execution %s is still %s: reattaching", hook.vendor, previous,
                          status.describe())
            self._record(context, previous, new=False)
            return status
        if status.state is not ExecutionState.CANCELLING:
            self.log.info("An earlier try's %s execution %s is still %s: cancelling it before starting afresh",
                          hook.vendor, previous, status.describe())
            hook.cancel(previous)
        self._wait_until_stopped(hook, previous)
        return None

    def _wait_until_stopped(self, hook: ExecutionHook, execution_id: str) -> None:
        """Wait (bounded) for a cancelled execution to end, so that a new start never overlaps it."""
        schedule = PollSchedule(self.poll_interval, self.max_poll_interval)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < STOP_WAIT:
            status = hook.get_status(execution_id)
            if status.state.is_terminal:
                self.log.info("The earlier %s execution %s has stopped (%s)", hook.vendor, execution_id,
                              status.vendor_status)
                return
            self._sleep(schedule.delay(elapsed, status.rate_limit))
        self.log.warning("The earlier %s execution %s is still stopping after %s; starting anyway", hook.vendor,
                         execution_id, format_duration(STOP_WAIT))

    # -- killing ---------------------------------------------------------------------------------------
    def _guarded(self, context: Context, wait: Any) -> Any:
        """Run `wait`; if it fails while the execution may still be live, cancel before failing."""
        try:
            self._raise_if_killed()  # killed while the create was in flight: cancel what it started
            return wait()
        except TaskDeferred:
            raise
        except AirflowTaskTimeout:
            raise  # Airflow calls on_kill next, which cancels
        except BaseException as err:
            if not self._ended:
                self._cancel_once(f"the task is failing ({type(err).__name__})")
            raise

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._raise_if_killed()

    def _raise_if_killed(self) -> None:
        if self._killed:
            raise ExecutionKilled(
                f"Task killed while waiting for execution {self.execution_id}"
                + ("; its cancellation was requested" if self._cancel_sent else "")
            )

    def on_kill(self) -> None:
        """Called by Airflow on SIGTERM (mark failed/success, clear, worker shutdown) and on execution_timeout."""
        self._killed = True
        self._wake.set()
        self._cancel_once("the task was killed")

    def _cancel_once(self, reason: str) -> None:
        """Send at most one cancel, quickly, and never raise: this may run inside a signal handler."""
        if self._ended or self._cancel_sent or not self.execution_id:
            return
        if not self.cancel_on_kill:
            self.log.info("Not cancelling %s (cancel_on_kill=False)", self.execution_id)
            return
        self._cancel_sent = True
        try:
            hook = self.hook
            # A fresh socket (the poll's may be mid-request in another thread), time.sleep between attempts.
            client = hook.client.with_options(timeouts=KILL_TIMEOUTS, retry=KILL_RETRY)
            try:
                outcome = hook.cancel(self.execution_id, client=client)
            finally:
                client.close()
            if outcome is CancelOutcome.REQUESTED:
                self.log.warning("Cancelled %s execution %s: %s", hook.vendor, self.execution_id, reason)
            else:
                self.log.info("No cancel needed for %s (%s)", self.execution_id, outcome.value)
        except Exception as err:
            self.log.error("Could not cancel execution %s (%s): %s", self.execution_id, reason, err)
