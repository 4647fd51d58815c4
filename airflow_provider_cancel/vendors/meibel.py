"""Meibel AI: a batch execution (an agent run over every data element of a datasource), Temporal-backed.

API facts (docs/meibel.md): `Meibel-API-Key`; base https://api.meibel.ai/v2. Two ways to start: execute a
saved batch definition (no body) or the legacy create with a `batch_spec_json`. No idempotency mechanism is
documented, so a create is never retried after an ambiguous failure. The status words are NOT documented:
the known ones are mapped below, a set `end_time` is a second "it has ended" signal, and an unknown word is
never success. Cancel is asynchronous (the status may stay `running`/`cancelling` for a while). Per-item
results come in `items[]` once the execution has ended; there is no result endpoint and no per-execution page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from airflow_provider_cancel.core.errors import ExecutionApiError, ExecutionFailed, ProviderConfigError
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook, is_template, parse_model, short_repr
from airflow_provider_cancel.core.http import ApiCall, quote_path_id
from airflow_provider_cancel.core.links import ExecutionLink
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus, LazyPayload, normalize_status

if TYPE_CHECKING:
    from airflow.sdk import Context

S = ExecutionState
# Undocumented ([INF]): Meibel's lowercase conventions elsewhere, plus Temporal's own workflow states.
STATUS_WORDS = {
    "pending": S.QUEUED,
    "queued": S.QUEUED,
    "created": S.QUEUED,
    "submitted": S.QUEUED,
    "running": S.RUNNING,
    "in_progress": S.RUNNING,
    "cancelling": S.CANCELLING,
    "canceling": S.CANCELLING,
    "completed": S.SUCCEEDED,
    "succeeded": S.SUCCEEDED,
    "success": S.SUCCEEDED,
    "completed_with_errors": S.SUCCEEDED,  # some items failed: see fail_on_item_errors
    "failed": S.FAILED,
    "error": S.FAILED,
    "terminated": S.FAILED,
    "timed_out": S.FAILED,
    "cancelled": S.CANCELLED,
}
PARTIAL_PREFIX = "partial"  # partial, partial_success, partially_completed...: ended, some items failed
CONSOLE_URL = "https://console.meibel.ai"  # the per-execution page is not documented
ITEM_ERRORS_SHOWN = 3


class Paths:
    """Every Meibel path this module calls (relative to the base URL, which includes /v2)."""

    EXECUTE_DEFINITION = "/batch-definitions/id/{definition_id}/execute"
    EXECUTIONS = "/batch-executions"
    EXECUTION = "/batch-executions/id/{execution_id}"
    CANCEL = "/batch-executions/id/{execution_id}/cancel"


# Execution ids are UUIDs that double as Temporal workflow ids: accept the safe characters only.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
ID_EXAMPLE = "3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10"


# -- payloads ------------------------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # schemas built on first use, not at DAG parse


class BatchItemResult(_Model):
    input_data_element_id: str | None = None
    filename: str | None = None
    status: str | None = None
    error: Any = None
    output_artifacts: list[Any] | None = None
    attempts: int | None = None


class BatchExecution(_Model):
    """`BatchExecutionResponse`: the answer to status, cancel and the legacy create."""

    id: str
    status: str
    batch_definition_id: str | None = None
    input_datasource_id: str | None = None
    output_datasource_id: str | None = None
    total_items: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    start_time: Any = None
    end_time: Any = None
    error: Any = None
    items: list[BatchItemResult] | None = None


class ExecuteBatchDefinitionResponse(_Model):
    execution_id: str
    workflow_id: str | None = None


_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class BatchSpecInput(_Model):
    datasource_id: _Text
    filters: dict[str, Any] | None = None


class BatchSpecOutput(_Model):
    datasource_id: _Text | None = None


class BatchSpecExecution(_Model):
    concurrency: int | None = Field(default=None, ge=1, le=999)
    retry_limit: int | None = Field(default=None, ge=0, le=999)


class BatchSpec(_Model):
    """`LegacyBatchSpecJson`: what the legacy create runs (unknown keys pass through to Meibel)."""

    name: _Text
    agent: _Text  # an AgentDefinition id
    input: BatchSpecInput
    version: str | int | None = None
    user_message: str | None = None
    output: BatchSpecOutput | None = None
    execution: BatchSpecExecution | None = None


def batch_spec_body(spec: Any, *, where: str) -> dict[str, Any]:
    """The JSON sent as `batch_spec_json`, or a ProviderConfigError naming the offending fields."""
    if not isinstance(spec, Mapping):
        hint = " (a template must render to a dict: set render_template_as_native_obj=True on the DAG)"
        raise ProviderConfigError(
            f"{where}: batch_spec must be a mapping, got {short_repr(spec)}{hint if isinstance(spec, str) else ''}"
        )
    try:
        model = BatchSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'batch_spec'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ProviderConfigError(f"{where}: batch_spec is invalid ({problems})") from None
    return model.model_dump(mode="json", exclude_none=True)


def _contains_template(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_template(v) for v in value)
    return is_template(value)


def _text(value: Any) -> str | None:
    """An error field as one line, whatever shape it came in."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping) and isinstance(value.get("message"), str):
        return value["message"]
    return short_repr(json.dumps(value, default=str), 200)


# -- reading an execution ----------------------------------------------------------------------------------------
def execution_state(word: str, end_time: Any) -> tuple[ExecutionState, str | None]:
    """The state for a status word, and an error when the word cannot be trusted."""
    state = normalize_status(word, STATUS_WORDS)
    if state is S.UNKNOWN and word.strip().lower().startswith(PARTIAL_PREFIX):
        state = S.SUCCEEDED
    if state is S.UNKNOWN and end_time not in (None, ""):
        # It has ended, but we cannot tell how: failing is safe, reporting success might not be.
        return S.FAILED, (
            f"the execution ended (end_time {end_time}) with a status Meibel does not document ({word!r}); "
            "not treating it as a success"
        )
    return state, None


def failed_items(execution: BatchExecution) -> list[BatchItemResult]:
    found = []
    for item in execution.items or ():
        item_state = normalize_status(item.status, STATUS_WORDS)
        if item_state is S.FAILED or (_text(item.error) and item_state is not S.SUCCEEDED):
            found.append(item)
    return found


def failed_count(execution: BatchExecution) -> int:
    return execution.failed if execution.failed is not None else len(failed_items(execution))


def item_errors(execution: BatchExecution) -> str | None:
    """'3 of 123 items failed: a.pdf: timeout; b.pdf: ...; and 1 more', or None when none failed."""
    failed = failed_count(execution)
    if not failed:
        return None
    total = execution.total_items
    plural = failed != 1 or (total is not None and total != 1)  # "1 of 4 items", "1 item"
    text = f"{failed}{f' of {total}' if total is not None else ''} item{'s' if plural else ''} failed"
    listed = failed_items(execution)
    shown = [
        f"{item.filename or item.input_data_element_id or '?'}: {_text(item.error) or item.status or 'failed'}"
        for item in listed[:ITEM_ERRORS_SHOWN]
    ]
    if shown:
        more = max(failed, len(listed)) - len(shown)
        text += ": " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    return text


def progress_line(execution: BatchExecution) -> str | None:
    done, failed, total = execution.succeeded, execution.failed, execution.total_items
    if done is None and failed is None and total is None:
        return None
    text = f"{done or 0}/{total} items done" if total is not None else f"{done or 0} items done"
    return text + (f", {failed} failed" if failed else "")


class MeibelHook(ExecutionHook):
    """Meibel AI batch executions. Connection: host = API base URL (default https://api.meibel.ai/v2),
    password = API key."""

    conn_type = "meibel"
    default_conn_name = "meibel_default"
    hook_name = "Meibel"
    vendor = "Meibel"
    default_host = "https://api.meibel.ai/v2"
    api_key_header = "Meibel-API-Key"
    status_words = STATUS_WORDS
    execution_id_pattern = ID_PATTERN
    execution_id_example = ID_EXAMPLE

    # -- start (no idempotency: never retried after an ambiguous failure) ----------------------------------------
    def execute_batch_definition(self, definition_id: str) -> str:
        """Run a saved batch definition; returns the new execution's id."""
        definition_id = validate_definition_id(definition_id)
        path = Paths.EXECUTE_DEFINITION.format(definition_id=quote_path_id(definition_id))
        call = ApiCall("POST", path, "create", retry_safe=False)
        started = parse_model(ExecuteBatchDefinitionResponse, self.client.request(call), vendor=self.vendor, call=call)
        return self.started(started.execution_id)

    def create_batch_execution(self, batch_spec: Mapping[str, Any]) -> str:
        """The legacy create: run `batch_spec` (a LegacyBatchSpecJson); returns the new execution's id."""
        body = {"batch_spec_json": batch_spec_body(batch_spec, where="MeibelHook.create_batch_execution")}
        call = ApiCall("POST", Paths.EXECUTIONS, "create", json=body, retry_safe=False)
        created = parse_model(BatchExecution, self.client.request(call), vendor=self.vendor, call=call)
        return self.started(created.id)

    # -- adapter ---------------------------------------------------------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        return ApiCall("GET", Paths.EXECUTION.format(execution_id=quote_path_id(execution_id)), "status")

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        execution = parse_model(BatchExecution, body, vendor=self.vendor, call=call)
        state, distrust = execution_state(execution.status, execution.end_time)
        if state is S.SUCCEEDED:
            error = item_errors(execution)  # read by the operator's fail_on_item_errors
        else:
            parts = (distrust, _text(execution.error), item_errors(execution))
            error = "; ".join(p for p in parts if p) or None
        return ExecutionStatus(execution.id, state, execution.status, progress=progress_line(execution),
                               error=error, payload=LazyPayload(execution))

    def cancel_call(self, execution_id: str) -> ApiCall:
        return ApiCall("POST", Paths.CANCEL.format(execution_id=quote_path_id(execution_id)), "cancel")

    def cancel_outcome(self, body: Any) -> CancelOutcome:
        # The cancel answers with the execution; one that had already ended may come back unchanged ([INF]).
        if isinstance(body, Mapping) and isinstance(body.get("status"), str):
            state, _ = execution_state(body["status"], body.get("end_time"))
            if state in (S.SUCCEEDED, S.FAILED):
                return CancelOutcome.ALREADY_FINISHED
        return CancelOutcome.REQUESTED

    def cancel_error_outcome(self, error: ExecutionApiError) -> CancelOutcome | None:
        # 404 unknown, 409 already ended; a 400 that says it has ended is tolerated too ([INF]).
        if error.status_code == 400 and re.search(
            r"already|terminal|finished|completed|not running|cannot be cancel", error.message, re.IGNORECASE
        ):
            return CancelOutcome.ALREADY_FINISHED
        return super().cancel_error_outcome(error)

    def test_call(self) -> ApiCall:
        return ApiCall("GET", Paths.EXECUTIONS, "list", params={"offset": 0, "limit": 1})

    def execution_url(self, execution_id: str, info: Mapping[str, Any]) -> str | None:
        return CONSOLE_URL


def validate_definition_id(value: object, *, where: str = "Meibel") -> str:
    if not isinstance(value, str) or len(value) > 200 or not ID_PATTERN.fullmatch(value):
        raise ProviderConfigError(
            f"{where}: batch_definition_id must be a Meibel batch definition id (e.g. {ID_EXAMPLE!r}), "
            f"got {short_repr(value)}"
        )
    return value


def result_summary(status: ExecutionStatus, *, max_items: int | None) -> dict[str, Any]:
    """The task's return value: counts, the output datasource and the per-item results (capped)."""
    execution = BatchExecution.model_validate(status.payload)
    items = [item.model_dump() for item in execution.items or ()]
    shown = items if max_items is None else items[:max_items]
    return {
        "execution_id": status.execution_id,
        "status": status.vendor_status,
        "total_items": execution.total_items,
        "succeeded": execution.succeeded,
        "failed": failed_count(execution),
        "output_datasource_id": execution.output_datasource_id,
        "items": shown,
        "items_truncated": len(shown) < len(items),
    }


class MeibelConsoleLink(ExecutionLink):
    name = "Meibel console"


class MeibelRunBatchOperator(ExecutionOperator[MeibelHook]):
    """Run a Meibel batch execution (a saved batch definition, or a legacy batch spec), wait, return a summary.

    :param batch_definition_id: the saved batch definition to execute (templated). Give this or ``batch_spec``.
    :param batch_spec: a legacy batch spec (templated), sent as ``batch_spec_json``:
        ``{"name", "agent", "input": {"datasource_id", "filters"?}, "version"?, "user_message"?,
        "output"?: {"datasource_id"}, "execution"?: {"concurrency", "retry_limit"}}``.
    :param fail_on_item_errors: fail the task when the execution succeeded but some items failed
        (default False: the task succeeds, logs the failed items and returns them).
    :param max_items: the most per-item results returned to XCom (default 100; None for all: mind your XCom backend).

    Returns ``{"execution_id", "status", "total_items", "succeeded", "failed", "output_datasource_id", "items",
    "items_truncated"}``; the artefacts themselves are in the output datasource. The execution id is in XCom
    under ``execution_id`` as soon as the execution starts. Meibel has no idempotency key: a create that
    failed ambiguously (timeout, 502) is not retried, so nothing runs twice.
    """

    hook_class = MeibelHook
    template_fields: Sequence[str] = ("conn_id", "batch_definition_id", "batch_spec")
    template_fields_renderers = {"batch_spec": "json"}
    operator_extra_links = (MeibelConsoleLink(),)

    def __init__(
        self,
        *,
        batch_definition_id: str | None = None,
        batch_spec: Mapping[str, Any] | str | None = None,
        fail_on_item_errors: bool = False,
        max_items: int | None = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_definition_id = batch_definition_id
        self.batch_spec = batch_spec
        self.fail_on_item_errors = fail_on_item_errors
        self.max_items = max_items
        if (batch_definition_id is None) == (batch_spec is None):
            raise ProviderConfigError(f"{self.task_id}: give exactly one of batch_definition_id or batch_spec")
        if not isinstance(fail_on_item_errors, bool):
            raise ProviderConfigError(f"{self.task_id}: fail_on_item_errors must be True or False, "
                                      f"got {short_repr(fail_on_item_errors)}")
        if max_items is not None and (not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 0):
            raise ProviderConfigError(
                f"{self.task_id}: max_items must be a non-negative int or None, got {short_repr(max_items)}"
            )
        if not _contains_template(batch_definition_id) and not _contains_template(batch_spec):
            self.validate_request()

    def validate_request(self) -> None:
        if self.batch_definition_id is not None:
            validate_definition_id(self.batch_definition_id, where=self.task_id)
        else:
            batch_spec_body(self.batch_spec, where=self.task_id)

    def start_execution(self, hook: MeibelHook, context: Context) -> str:
        if self.batch_definition_id is not None:
            return hook.execute_batch_definition(self.batch_definition_id)
        assert isinstance(self.batch_spec, Mapping)
        return hook.create_batch_execution(self.batch_spec)

    def fetch_result(self, hook: MeibelHook, status: ExecutionStatus) -> Any:
        summary = result_summary(status, max_items=self.max_items)
        if summary["failed"]:
            if self.fail_on_item_errors:
                raise ExecutionFailed(
                    f"Meibel execution {status.execution_id} finished ({status.vendor_status}) but "
                    f"{status.error or str(summary['failed']) + ' items failed'} (fail_on_item_errors=True)"
                )
            self.log.warning("Meibel execution %s finished (%s) with failed items: %s", status.execution_id,
                             status.vendor_status, status.error)
        if summary["items_truncated"]:
            self.log.warning("Returning %d of %d item results (max_items=%s); all are in Meibel under execution %s",
                             len(summary["items"]), len(status.payload.get("items") or ()), self.max_items,
                             status.execution_id)
        return summary


class MeibelBatchExecutionSensor(ExecutionSensor):
    """Wait for a Meibel batch execution started elsewhere, by its execution id. Never cancels it."""

    hook_class = MeibelHook
