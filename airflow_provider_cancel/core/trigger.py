"""ONE trigger for every vendor: it polls any ExecutionHook, named by class path in its serialized form.

What it guarantees while a task is deferred:
- a user kill (mark failed/success, clear) cancels the execution: `on_kill` on Airflow 3.3+, and on
  3.0-3.2 the `CancelledError` path after checking the task is no longer deferred (a triggerer restart
  leaves the task deferred, so nothing is cancelled then: K12);
- the task's own deadline (start + execution_timeout) is kept here, because Airflow 3.3 does not enforce
  execution_timeout while deferred: at the deadline the execution is cancelled and a timeout event fires;
- transient API errors never end the wait before the deadline; unknown status words never count as success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent
from pydantic import BaseModel, ValidationError

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook
from airflow_provider_cancel.core.http import RateLimit, RetryPolicy, is_transient
from airflow_provider_cancel.core.poll import PollSchedule
from airflow_provider_cancel.core.state import ExecutionState

CANCEL_TIMEOUT = 20.0  # well inside [triggerer] on_kill_timeout (30 s by default)
# A cancel refused by a transient fault (429, 503, a dropped connection) is sent again (back-offs 0.5-4 s, about
# seven attempts, the last one starting by 17 s, inside CANCEL_TIMEOUT): one lost cancel would leave the execution
# running after its task died.
CANCEL_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.5, max_backoff=4.0, max_retry_after=5.0,
                           give_up_after=17.0)
STATE_LOOKUP_TIMEOUT = 5.0  # inside the 10 s a 3.0-3.2 triggerer waits between SIGINT and SIGTERM at shutdown
# Airflow fails a deferred task whose trigger fires before the scheduler has processed the executor's "success" for
# the worker that just deferred ("finished with state success, but the task instance's state attribute is
# queued"): apache/airflow#66374 fixed it only while the resumed task is still scheduled; #72716 and #71580 are
# open for queued and running (3.3.2). Seen here when a new try adopted an execution its predecessor's kill had
# just cancelled. An event is therefore held until this long after the trigger started.
EARLIEST_EVENT = 3.0


OutcomeKind = Literal["terminal", "timeout", "error"]


class TriggerOutcome(BaseModel):
    """The event payload; validated again by the operator, so a malformed event fails loudly."""

    kind: OutcomeKind
    execution_id: str
    state: ExecutionState | None = None
    vendor_status: str | None = None
    message: str | None = None
    cancel_result: str | None = None

    @property
    def cancel_sent(self) -> bool:
        return self.cancel_result is not None

    @classmethod
    def parse_event(cls, event: Any) -> TriggerOutcome:
        from airflow.sdk.exceptions import AirflowException

        try:
            return cls.model_validate(event)
        except ValidationError as err:
            raise AirflowException(f"Unexpected trigger event {event!r}: {err.errors()[:3]}") from None


def _airflow_has_trigger_on_kill() -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(Version(__version__).base_version) >= Version("3.3.0")


class ExecutionTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        hook_class: str,
        conn_id: str,
        execution_id: str,
        deadline: float | None = None,
        started_at: float | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = 30.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.hook_class = hook_class
        self.conn_id = conn_id
        self.execution_id = execution_id
        self.deadline = deadline
        self.started_at = started_at if started_at is not None else time.time()
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self._hook: ExecutionHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hook_class": self.hook_class,
                "conn_id": self.conn_id,
                "execution_id": self.execution_id,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    @property
    def hook(self) -> ExecutionHook:
        if self._hook is None:
            from airflow.sdk.module_loading import import_string

            hook_class = import_string(self.hook_class)
            if not (isinstance(hook_class, type) and issubclass(hook_class, ExecutionHook)):
                raise TypeError(f"{self.hook_class} is not an ExecutionHook")
            self._hook = hook_class(self.conn_id)
            self._hook.trust(self.execution_id)  # the operator got it from the vendor
        return self._hook

    def _event(self, kind: OutcomeKind, **fields: Any) -> TriggerEvent:
        return TriggerEvent(TriggerOutcome(kind=kind, execution_id=self.execution_id, **fields).model_dump(mode="json"))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook
        schedule = PollSchedule(self.poll_interval, self.max_poll_interval)
        name = f"{hook.vendor} execution {self.execution_id}"
        last_seen: str | None = None
        not_before = time.monotonic() + EARLIEST_EVENT
        event: TriggerEvent | None
        seen: str | None
        rate_limit: RateLimit | None
        try:
            while True:
                if self.deadline is not None and time.time() >= self.deadline:
                    result = await self._cancel("the task's execution_timeout passed") if self.cancel_on_kill else None
                    seen = None
                    event = self._event("timeout", cancel_result=result, message=f"{name} passed its deadline")
                else:
                    event, seen, rate_limit = await self._poll(hook, name)
                if event is not None:
                    await asyncio.sleep(not_before - time.monotonic())  # EARLIEST_EVENT; at once when negative
                    yield event
                    return  # at once: lingering after the event would be mistaken for a kill
                if seen is not None and seen != last_seen:
                    last_seen = seen
                    self.log.info("%s: %s", name, seen)
                delay = schedule.delay(time.time() - self.started_at, rate_limit)
                if self.deadline is not None:
                    delay = min(delay, max(0.0, self.deadline - time.time()))
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            # Airflow < 3.3 never calls on_kill: tell a user kill from a triggerer shutdown by the task state.
            if self.cancel_on_kill and not _airflow_has_trigger_on_kill() and await self._task_left_deferral():
                await self._cancel("the deferred task was killed (legacy path)")
            raise  # never swallow: Airflow 3.3 calls on_kill only after this propagates

    async def _poll(
        self, hook: ExecutionHook, name: str
    ) -> tuple[TriggerEvent | None, str | None, RateLimit | None]:
        """One status read: (the event that ends the wait, or None; the status line, or None after a transient
        error; the answer's rate limit). A method of its own so the status and its payload are not kept through
        the sleep that follows."""
        try:
            status = await hook.aget_status(self.execution_id)
        except Exception as err:
            if not is_transient(err):
                return self._event("error", message=str(err)), None, None
            self.log.warning("Could not read the status of %s (%s); will try again", name, err)
            return None, None, getattr(err, "rate_limit", None)
        if status.state.is_terminal:
            return self._event("terminal", state=status.state, vendor_status=status.vendor_status), None, None
        return None, status.describe(), status.rate_limit

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked the deferred task failed/success or cleared it."""
        if self.cancel_on_kill:
            await self._cancel("the deferred task was killed")

    async def _cancel(self, reason: str) -> str:
        name = f"{self.hook.vendor} execution {self.execution_id}"
        try:
            client = (await self.hook.aclient()).with_options(retry=CANCEL_RETRY)
            outcome = await asyncio.wait_for(self.hook.acancel(self.execution_id, client=client), CANCEL_TIMEOUT)
        except (ExecutionApiError, Exception) as err:
            self.log.error("Could not cancel %s (%s): %s", name, reason, err)
            return f"failed: {err}"
        if outcome is CancelOutcome.REQUESTED:
            self.log.warning("Cancelled %s: %s", name, reason)
        else:
            self.log.info("No cancel needed for %s (%s)", name, outcome.value)
        return outcome.value

    async def _task_left_deferral(self) -> bool:
        """Airflow 3.0-3.2: is the task still DEFERRED? If so this is a restart or hand-over: keep it running."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time import task_runner
            from airflow.sdk.execution_time.comms import GetTaskStates

            # Ask the supervisor asynchronously, as the SDK's own aget_connection does, and give up after a
            # while: at a 3.2.2 triggerer shutdown the runner has already stopped reading its supervisor's
            # replies (triggerer_job_runner.py:1032-1036), so no answer ever comes. The shield lets a reply that
            # is merely late still be read (3.0-3.2.1 read replies in order, inside asend).
            request = GetTaskStates(
                dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
            )
            reply = await asyncio.wait_for(
                asyncio.shield(task_runner.SUPERVISOR_COMMS.asend(request)), STATE_LOOKUP_TIMEOUT
            )
            # The Execution API keys a mapped task instance "<task_id>_<map_index>" (task_instances.py:1074).
            key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
            state = reply.task_states[ti.run_id][key]  # type: ignore[union-attr]  # not a TaskStatesResult: caught below
        except Exception as err:
            self.log.warning("Could not read the task's state; not cancelling %s: %r", self.execution_id, err)
            return False
        return str(state) != "deferred"
