"""Wait for an execution started elsewhere (another task, another system). A sensor never cancels it:
it does not own the execution, so killing the sensor leaves the execution alone."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_provider_cancel.core.docs import default_doc_md, inherit_params
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.operator import default_deferrable
from airflow_provider_cancel.core.poll import ProgressLog
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExecutionSensor(BaseSensorOperator):
    """Succeed when the execution succeeds; fail (without retry, so ``soft_fail`` applies) when it fails
    or is cancelled. Unknown status words keep it waiting. Returns nothing to XCom.

    :param execution_id: the vendor's execution id (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='start', key='execution_id') }}"``.
    :param conn_id: the Airflow connection of the vendor API (templated; default: ``<vendor>_default``).
    :param deferrable: wait in the triggerer instead of a worker slot
        (default: ``[operators] default_deferrable``).
    :param poke_interval: seconds between status reads (default 5 here, not Airflow's 60). When deferrable
        it is the first delay: later reads stretch with the time waited (lag under 10% of it).
    :param max_poll_interval: when deferrable, the longest delay between status reads, in seconds
        (default 30; never less than ``poke_interval``).
    :param timeout: seconds to wait before the sensor fails with a timeout (Airflow's default, 7 days);
        the execution itself is left running.
    :param mode: ``"poke"`` or ``"reschedule"`` (frees the worker slot between reads) when not deferrable.
    :param soft_fail: mark the task skipped instead of failed when the execution fails, is cancelled or
        the sensor times out.
    """

    hook_class: ClassVar[type[ExecutionHook]]
    template_fields: Sequence[str] = ("execution_id", "conn_id")
    ui_color = "#e8f7e4"

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract and not isinstance(getattr(cls, "hook_class", None), type):
            raise TypeError(f"{cls.__qualname__} must set hook_class to its vendor's ExecutionHook subclass")
        inherit_params(cls, ExecutionSensor, "Arguments of every sensor of this provider:")

    def __init__(
        self,
        *,
        execution_id: str,
        conn_id: str | None = None,
        deferrable: bool | None = None,
        max_poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        super().__init__(**kwargs)
        self.execution_id = execution_id
        self.conn_id = conn_id or self.hook_class.default_conn_name
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.max_poll_interval = max(max_poll_interval, float(self.poke_interval))
        self._progress: ProgressLog | None = None
        self._started = time.monotonic()
        default_doc_md(self)

    @property
    def hook(self) -> ExecutionHook:
        return self.hook_class(self.conn_id)

    def poke(self, context: Context) -> bool:
        hook = self.hook
        execution_id = hook.validate_execution_id(self.execution_id)
        return self._evaluate(hook, hook.get_status(execution_id))

    def _evaluate(self, hook: ExecutionHook, status: ExecutionStatus) -> bool:
        if self._progress is None:
            self._progress = ProgressLog(hook.vendor, status.execution_id)
        if warning := self._progress.unknown_word(status):
            self.log.warning("%s", warning)
        if line := self._progress.line(status, time.monotonic() - self._started, None):
            self.log.info("%s", line)
        if status.state is ExecutionState.SUCCEEDED:
            return True
        if status.state.is_terminal:
            raise AirflowFailException(
                f"{hook.vendor} execution {status.execution_id} ended {status.state.value} "
                f"({status.vendor_status}): {status.error or 'no error message given'}"
            )
        return False

    def execute(self, context: Context) -> Any:
        self._started = time.monotonic()
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self._defer(deadline=time.time() + float(self.timeout))

    def _defer(self, *, deadline: float) -> None:
        from airflow_provider_cancel.core.trigger import ExecutionTrigger

        self.defer(
            trigger=ExecutionTrigger(
                hook_class=f"{self.hook_class.__module__}.{self.hook_class.__qualname__}",
                conn_id=self.conn_id,
                execution_id=self.execution_id,
                deadline=deadline,
                poll_interval=float(self.poke_interval),
                max_poll_interval=self.max_poll_interval,
                owner=False,  # the execution is not this sensor's: killing the sensor leaves it alone
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(0.0, deadline - time.time())) + timedelta(minutes=5),
        )

    def execute_complete(self, context: Context, event: Any = None) -> None:
        from airflow_provider_cancel.core.trigger import TriggerOutcome

        outcome = TriggerOutcome.parse_event(event)
        if outcome.kind == "timeout":
            raise AirflowSensorTimeout(f"Execution {outcome.execution_id} did not finish within {self.timeout}s")
        if outcome.kind == "error":
            raise AirflowFailException(f"Waiting for execution {outcome.execution_id} failed: {outcome.message}")
        hook = self.hook
        if not self._evaluate(hook, hook.get_status(outcome.execution_id)):
            # The vendor says "running" again after the trigger saw it end: wait again, within the same timeout.
            self.log.warning("Execution %s is not finished after the trigger saw it end: waiting again",
                             outcome.execution_id)
            started = getattr(context["ti"], "start_date", None)
            begun = started.timestamp() if started else time.time()
            self._defer(deadline=begun + float(self.timeout))
