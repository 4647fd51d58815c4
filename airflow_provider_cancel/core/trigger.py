"""ONE trigger for every vendor: it polls any ExecutionHook, named by class path in its serialized form.

What it guarantees while a task is deferred (its waiting is core.poll's, like the operator's):
- a user kill (mark failed/success, clear) cancels the execution: `on_kill` on Airflow 3.3+, and on
  3.0-3.2 the `CancelledError` path after checking the task is no longer deferred (a triggerer restart
  leaves the task deferred, so nothing is cancelled then: K12). On 3.3.x `on_kill` also runs when a
  triggerer that stalled finds its trigger reassigned to another one (apache/airflow#73454): it checks the
  same way that the task really left DEFERRED, so a healthy execution another triggerer polls is left alone;
- the task's own deadline (start + execution_timeout) is kept here, because Airflow 3.3 does not enforce
  execution_timeout while deferred: at the deadline the execution is cancelled and a timeout event fires;
- transient API errors never end the wait before the deadline; unknown status words never count as success;
- it is the owner's trigger only when the operator says so (`owner`): a sensor's trigger never cancels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent
from pydantic import BaseModel, ValidationError

from airflow_provider_cancel import version_compat
from airflow_provider_cancel.core import poll
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.http import RetryPolicy
from airflow_provider_cancel.core.ownership import XCOM_EXECUTION_TRY
from airflow_provider_cancel.core.redact import scrub
from airflow_provider_cancel.core.state import CancelOutcome, ExecutionState

CANCEL_TIMEOUT = 20.0  # well inside [triggerer] on_kill_timeout (30 s by default)
# A cancel refused by a transient fault (429, 503, a dropped connection) is sent again (back-offs 0.5-4 s, about
# seven attempts, the last one starting by 17 s, inside CANCEL_TIMEOUT): one lost cancel would leave the execution
# running after its task died.
CANCEL_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.5, max_backoff=4.0, max_retry_after=5.0,
                           give_up_after=17.0)
STATE_LOOKUP_TIMEOUT = 5.0  # inside the 10 s a 3.0-3.2 triggerer waits between SIGINT and SIGTERM at shutdown
# Airflow fails a deferred task whose trigger fires (or crashes) before the scheduler has processed the executor's
# "success" for the worker that just deferred (docs/kill-paths.md, "Airflow's deferral race"): every event and
# every crash is held until this long after the trigger started.
EARLIEST_EVENT = 3.0


OutcomeKind = Literal["terminal", "timeout", "error"]


class TriggerOutcome(BaseModel):
    """The event payload; validated again by the operator, so a malformed event fails loudly."""

    kind: OutcomeKind
    execution_id: str
    state: ExecutionState | None = None
    vendor_status: str | None = None
    message: str | None = None
    cancel: CancelOutcome | None = None  # what the trigger's own cancel achieved (None: it sent none)

    def describe_cancel(self) -> str:
        if self.cancel is None:
            return "no cancel sent (cancel_on_kill=False)"
        if self.cancel is CancelOutcome.FAILED:
            return "the cancel failed"
        return f"cancel {self.cancel.value}"

    @classmethod
    def parse_event(cls, event: Any) -> TriggerOutcome:
        from airflow.providers.common.compat.sdk import AirflowException

        try:
            return cls.model_validate(event)
        except ValidationError as err:
            raise AirflowException(f"Unexpected trigger event {event!r}: {err.errors()[:3]}") from None


def _airflow_has_trigger_on_kill() -> bool:
    return version_compat.TRIGGER_ON_KILL


def _on_kill_runs_on_reassignment() -> bool:
    """Airflow 3.3.0-3.3.2 call on_kill for a trigger reassigned to another triggerer (fixed in 3.4)."""
    return version_compat.TRIGGER_ON_KILL and not version_compat.AIRFLOW_V_3_4_PLUS


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
        owner: bool = True,
    ) -> None:
        super().__init__()
        self.hook_class = hook_class
        self.conn_id = conn_id
        self.execution_id = execution_id
        self.deadline = deadline
        self.started_at = started_at if started_at is not None else time.time()
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill  # the user's policy
        self.owner = owner  # the deferred task owns the execution (a sensor's does not)
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
                "owner": self.owner,
            },
        )

    @property
    def cancels(self) -> bool:
        """Does this trigger cancel the execution when the task dies or its deadline passes?"""
        return self.owner and self.cancel_on_kill

    @property
    def hook(self) -> ExecutionHook:
        if self._hook is None:
            from airflow.providers.common.compat.module_loading import import_string

            hook_class = import_string(self.hook_class)
            if not (isinstance(hook_class, type) and issubclass(hook_class, ExecutionHook)):
                raise TypeError(f"{self.hook_class} is not an ExecutionHook")
            self._hook = hook_class(self.conn_id)
            self._hook.trust(self.execution_id)  # the operator got it from the vendor
        return self._hook

    def _event(self, kind: OutcomeKind, **fields: Any) -> TriggerEvent:
        return TriggerEvent(TriggerOutcome(kind=kind, execution_id=self.execution_id, **fields).model_dump(mode="json"))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        not_before = time.monotonic() + EARLIEST_EVENT
        try:
            event = await self._wait()
        except asyncio.CancelledError:
            # Airflow < 3.3 never calls on_kill: tell a user kill from a triggerer shutdown by the task state.
            legacy = self.cancels and not _airflow_has_trigger_on_kill()
            if legacy and await self._left_by_its_task():
                await self._cancel("the deferred task was killed (legacy path)")
            raise  # never swallow: Airflow 3.3 calls on_kill only after this propagates
        except Exception:
            # A crash (say the hook class cannot be imported here) resumes the task with "__fail__" on a worker,
            # which cancels; held like an event, so that it cannot meet the deferral race either.
            await asyncio.sleep(not_before - time.monotonic())
            raise
        await asyncio.sleep(not_before - time.monotonic())  # EARLIEST_EVENT; at once when negative
        yield event  # and return at once: lingering after the event would be mistaken for a kill

    async def _wait(self) -> TriggerEvent:
        hook = self.hook
        waiter = poll.Waiter(
            hook.vendor, self.execution_id, schedule=poll.PollSchedule(self.poll_interval, self.max_poll_interval),
            started_at=self.started_at, deadline=self.deadline, log=self.log,
        )
        execution_id = self.execution_id
        ending = await poll.await_end(
            waiter, lambda left: hook.aget_status(execution_id, deadline=poll.request_deadline(left))
        )
        if isinstance(ending, poll.Finished):
            return self._event("terminal", state=ending.status.state, vendor_status=ending.status.vendor_status)
        if isinstance(ending, poll.Failed):
            return self._event("error", message=scrub(str(ending.error)))  # Airflow stores the event
        name = f"{hook.vendor} execution {self.execution_id}"
        cancel = await self._cancel("the task's execution_timeout passed") if self.cancels else None
        return self._event("timeout", cancel=cancel, message=f"{name} passed its deadline")

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked the deferred task failed/success or cleared it (and, on 3.3.x, a stalled
        triggerer dropped it after it was reassigned: then the task is still deferred and nothing is cancelled)."""
        if not self.cancels:
            return
        reassigned_too = _on_kill_runs_on_reassignment() and getattr(self, "task_instance", None) is not None
        if reassigned_too and not await self._left_by_its_task():
            self.log.info("%s: the task is still deferred on this try, or its state could not be read (the "
                          "trigger moved to another triggerer?): not cancelling", self.execution_id)
            return
        await self._cancel("the deferred task was killed")

    async def _left_by_its_task(self) -> bool:
        """Whether this trigger's try is over: the task left DEFERRED (marked failed or success, cleared), or a
        newer try owns the execution now (a clear whose new try adopted the execution and deferred again before
        this triggerer dropped the old trigger). False while this very try is still deferred (a triggerer
        restart, hand-over, or 3.3's reassignment on_kill), and on any doubt: a healthy execution must not be
        cancelled because a read failed."""
        ti = getattr(self, "task_instance", None)
        deadline = asyncio.get_running_loop().time() + STATE_LOOKUP_TIMEOUT
        state = await self._task_state(deadline)
        if state != "deferred":
            return state is not None
        owner_try = await self._owner_try(deadline)
        return owner_try is not None and ti is not None and owner_try > int(ti.try_number)

    async def _cancel(self, reason: str) -> CancelOutcome:
        name = f"{self.hook.vendor} execution {self.execution_id}"
        try:
            client = (await self.hook.aclient()).with_options(retry=CANCEL_RETRY)
            outcome = await asyncio.wait_for(self.hook.acancel(self.execution_id, client=client), CANCEL_TIMEOUT)
        except Exception as err:
            self.log.error("Could not cancel %s (%s): %s", name, reason, err)
            return CancelOutcome.FAILED
        if outcome is CancelOutcome.REQUESTED:
            self.log.warning("Cancelled %s: %s", name, reason)
        else:
            self.log.info("No cancel needed for %s (%s)", name, outcome.value)
        return outcome

    async def _task_state(self, deadline: float) -> str | None:
        """The deferred task's state now ("deferred" after a restart, hand-over or reassignment; something else
        after a user kill), or None when it cannot be read."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return None
        try:
            from airflow.sdk.execution_time.comms import GetTaskStates

            request = GetTaskStates(
                dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
            )
            reply = await self._ask(request, deadline)
            # The Execution API keys a mapped task instance "<task_id>_<map_index>" (task_instances.py:1074).
            key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
            state = reply.task_states[ti.run_id][key]
        except Exception as err:
            self.log.warning("Could not read the task's state; not cancelling %s: %r", self.execution_id, err)
            return None
        return str(state)

    async def _owner_try(self, deadline: float) -> int | None:
        """The try that recorded this execution as its own (XCOM_EXECUTION_TRY), or None when unknown."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return None
        try:
            from airflow.sdk.execution_time.comms import GetXCom

            request = GetXCom(key=XCOM_EXECUTION_TRY, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                              map_index=ti.map_index)
            value = (await self._ask(request, deadline)).value
            return None if value is None else int(value)
        except Exception as err:
            self.log.warning("Could not read which try owns %s; not cancelling it: %r", self.execution_id, err)
            return None

    @staticmethod
    async def _ask(request: Any, deadline: float) -> Any:
        """One request to the triggerer's supervisor, asynchronously as the SDK's own aget_connection, given up
        at `deadline`: at a 3.2.2 triggerer shutdown the runner has already stopped reading its supervisor's
        replies, so no answer ever comes. The shield lets a reply that is merely late still be read (3.0-3.2.1
        read replies in order, inside asend)."""
        from airflow.sdk.execution_time import task_runner

        left = max(0.0, deadline - asyncio.get_running_loop().time())
        return await asyncio.wait_for(asyncio.shield(task_runner.SUPERVISOR_COMMS.asend(request)), left)
