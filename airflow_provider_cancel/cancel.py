"""Cancel remote executions by id, on any of the five connection types: the building block of clean-up DAGs.

    from airflow_provider_cancel.cancel import CancelExecutionOperator

    CancelExecutionOperator(
        task_id="cancel_leftovers",
        conn_id="dune_default",  # the connection's type picks the vendor
        execution_ids="{{ ti.xcom_pull(task_ids='run_query', key='execution_id') }}",
        trigger_rule="all_done",
    )
"""

from __future__ import annotations

import ast
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, BaseHook, BaseOperator

from airflow_provider_cancel.core import poll
from airflow_provider_cancel.core.errors import ExecutionKilled, ProviderConfigError
from airflow_provider_cancel.core.hook import is_template, short_repr
from airflow_provider_cancel.core.ownership import KillFlag
from airflow_provider_cancel.core.poll import PollSchedule, format_duration

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_cancel.core.hook import ExecutionHook


def hook_for_connection(conn_id: str) -> ExecutionHook:
    """The vendor hook for a connection of one of this provider's types, found through Airflow's own registry
    (``Connection.get_hook``, as common.sql's operators do): the connection's type picks the vendor."""
    from airflow_provider_cancel.core.hook import ExecutionHook
    from airflow_provider_cancel.registry import CONN_TYPES

    connection = BaseHook.get_connection(conn_id)
    expected = ", ".join(sorted(CONN_TYPES))
    if connection.conn_type not in CONN_TYPES:
        raise ProviderConfigError(
            f"Connection {conn_id!r} has type {connection.conn_type!r}; expected one of {expected}"
        )
    hook = connection.get_hook()
    if not isinstance(hook, ExecutionHook):
        raise ProviderConfigError(f"Connection {conn_id!r}: Airflow gave a {type(hook).__name__}, not one of this "
                                  f"provider's hooks ({expected}); is airflow-provider-cancel installed in this "
                                  "Airflow environment?")
    return hook


def _check_ids_argument(task_id: str, raw: Any) -> None:
    """At DAG parse: one id, a list of ids, None, or a template/XComArg that renders to one of them."""
    if raw is None or isinstance(raw, str) or is_template(raw):
        return
    if isinstance(raw, (list, tuple, set, frozenset)):
        return
    raise ProviderConfigError(
        f"{task_id}: execution_ids must be an execution id (a string), a list of them, or None; got "
        f"{type(raw).__name__} {short_repr(raw)}"
    )


def _as_list(raw: Any) -> list[Any]:
    """The ids as a list. Without ``render_template_as_native_obj`` a pulled XCom arrives as text: "None" when
    the upstream task pushed nothing, a list's repr when it pushed a list; both are read back, not refused."""
    if raw is None:
        return []
    if not isinstance(raw, str):
        return list(raw) if isinstance(raw, (list, tuple, set, frozenset)) else [raw]  # a single wrong one: named
    text = raw.strip()
    if text in ("None", "[]"):
        return []
    if text.startswith("[") and text.endswith("]"):
        with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
            value = ast.literal_eval(text)
            if isinstance(value, list):
                return value
    return [raw]  # checked as it is: a malformed one is refused by name


class CancelExecutionOperator(BaseOperator):
    """Cancel one or more remote executions by id and (by default) wait until each has stopped.

    Returns ``{execution_id: final state}`` (``cancelled``, ``succeeded``, ``failed``, or ``not_found``) to XCom.
    Ids that are ``None`` or empty lists are skipped (an upstream task that never started one), so a clean-up
    task with ``trigger_rule="all_done"`` can pull ids that may not exist; rendered as text (without
    ``render_template_as_native_obj``), "None" is skipped too and a list's text is read back as the list.
    Every id is checked against the vendor's format before the first request.

    :param conn_id: a connection of type dune, izieroma, bctrl, meibel or b3os; its type picks the vendor (templated).
    :param execution_ids: one id or a list of ids (templated), e.g. an upstream task's ``execution_id`` XCom.
    :param wait_for_termination: after the cancel requests, wait until every execution has ended (some vendors
        cancel asynchronously), up to ``termination_timeout`` seconds.
    :param termination_timeout: how long to wait for the executions to end; the task fails if one is still live.
        A kill of this task (mark failed, timeout) ends the wait at once; the cancels already sent stand.
    :param poll_interval: first delay between status reads while waiting, in seconds.
    """

    template_fields: Sequence[str] = ("conn_id", "execution_ids")
    ui_color = "#ffe4e1"

    def __init__(
        self,
        *,
        conn_id: str,
        execution_ids: str | Sequence[str] | None,
        wait_for_termination: bool = True,
        termination_timeout: float = 300.0,
        poll_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if termination_timeout <= 0 or poll_interval <= 0:
            raise ProviderConfigError(f"{self.task_id}: termination_timeout and poll_interval must be positive")
        _check_ids_argument(self.task_id, execution_ids)
        self.conn_id = conn_id
        self.execution_ids = execution_ids
        self.wait_for_termination = wait_for_termination
        self.termination_timeout = termination_timeout
        self.poll_interval = poll_interval
        self._killed = KillFlag()  # set by on_kill: stop waiting (the cancels are already sent)

    def _ids(self, hook: ExecutionHook) -> list[str]:
        values = _as_list(self.execution_ids)
        return list(dict.fromkeys(hook.validate_execution_id(value) for value in values if value is not None))

    def execute(self, context: Context) -> dict[str, str]:
        from airflow_provider_cancel.core.hook import CancelOutcome

        hook = hook_for_connection(self.conn_id)
        ids = self._ids(hook)  # all checked before the first request
        if not ids:
            self.log.info("No %s execution ids given: nothing to cancel", hook.vendor)
            return {}
        results: dict[str, str] = {}
        for execution_id in ids:
            outcome = hook.cancel(execution_id)
            self.log.info("%s execution %s: cancel %s", hook.vendor, execution_id, outcome.value)
            if outcome is CancelOutcome.NOT_FOUND:
                results[execution_id] = "not_found"
        live = [execution_id for execution_id in ids if execution_id not in results]
        results.update(self._final_states(hook, live))
        return results

    def _final_states(self, hook: ExecutionHook, ids: list[str]) -> dict[str, str]:
        """Each execution's state once it has ended (or at once, without wait_for_termination), one after the
        other within one shared deadline."""
        started = time.monotonic()
        deadline = started + self.termination_timeout
        schedule = PollSchedule(self.poll_interval, max(self.poll_interval, 30.0))
        states: dict[str, str] = {}
        for execution_id in ids:
            if not self.wait_for_termination:
                states[execution_id] = hook.get_status(execution_id).state.value
                continue
            waiter = poll.Waiter(hook.vendor, execution_id, schedule=schedule, started_at=started, deadline=deadline,
                                 log=self.log, progress=False)
            ending = poll.wait(waiter, lambda left, eid=execution_id: hook.get_status(  # type: ignore[misc]
                eid, deadline=poll.request_deadline(left)),
                               lambda seconds: self._sleep(hook, ids, states, seconds))
            if isinstance(ending, poll.DeadlinePassed):
                still = ", ".join(i for i in ids if i not in states)
                raise AirflowException(
                    f"{hook.vendor} executions {still} still not ended {format_duration(time.monotonic() - started)} "
                    "after their cancel was requested"
                )
            states[execution_id] = ending.status.state.value
        return states

    def _sleep(self, hook: ExecutionHook, ids: list[str], states: dict[str, str], seconds: float) -> None:
        if self._killed.wait(seconds):
            still = ", ".join(i for i in ids if i not in states)
            raise ExecutionKilled(
                f"Task killed while waiting for {hook.vendor} executions {still} to end; "
                "their cancellation was requested"
            )

    def on_kill(self) -> None:
        """Airflow's SIGTERM handler only calls this: without it the wait would run on until SIGKILL 5 s later."""
        self._killed.set()
