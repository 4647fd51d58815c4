"""izieroma: the hosted ROMA API (Iziedking's free community backend of Sentient's multi-agent ROMA).

One execution is a multi-agent run on a text `goal`. API facts (docs/izieroma.md): `X-API-Key`;
statuses pending/running/completed/failed/cancelled; `X-Idempotency-Key` on create (same key within 24 h
returns the original response), so a create that timed out is retried safely; the result string is on
`/status` once completed. No dashboard, hence no extra link.

The upstream ROMA server a deployment may really run differs from the GitBook contract; this adapter
accepts both: bare UUID ids, `{"detail": ...}` errors (the core reads them), `progress` as an int 0-100 or a
float 0.0-1.0, no `result` on `/status` (then it is read from `GET /executions/{id}`, `result` or
`final_result`), and a 400 `detail` "... is not running (cannot cancel)" on a finished run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from airflow_provider_cancel.core.errors import ExecutionApiError, ProviderConfigError
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook, is_template, parse_model, short_repr
from airflow_provider_cancel.core.http import ApiCall, quote_path_id
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus, LazyPayload, normalize_status

if TYPE_CHECKING:
    from airflow.sdk import Context

S = ExecutionState
STATUS_WORDS = {
    "pending": S.QUEUED,  # upstream ROMA only: created, not started yet
    "running": S.RUNNING,
    "completed": S.SUCCEEDED,
    "failed": S.FAILED,
    "cancelled": S.CANCELLED,  # normalize_status also accepts "canceled"
}

# The vendor's paths, all in one place.
EXECUTIONS = "/api/v1/executions"


def execution_path(execution_id: str, suffix: str = "") -> str:
    return f"{EXECUTIONS}/{quote_path_id(execution_id)}{'/' + suffix if suffix else ''}"


IDEMPOTENCY_HEADER = "X-Idempotency-Key"

# Request limits, from the create-execution page.
GOAL_MAX_CHARS = 10_000
MAX_DEPTH_RANGE = (1, 10)
CONFIG_PROFILES = ("general", "high_quality", "fast", "crypto_agent")
OVERRIDE_KEYS = ("temperature", "max_tokens", "model")
METADATA_MAX_PAIRS = 10
METADATA_KEY_CHARS = (1, 50)
METADATA_VALUE_CHARS = (1, 500)


# -- payloads ----------------------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # schemas built on first use, not at DAG parse


class RomaStarted(_Model):
    execution_id: str
    status: str | None = None


class RomaStatus(_Model):
    """`/status`, in the GitBook shape or the upstream server's; every field but `status` may be absent."""

    execution_id: str | None = None
    status: str
    progress: Any = None  # int 0-100 (GitBook) or float 0.0-1.0 (upstream)
    current_step: Any = None
    current_task_goal: Any = None  # upstream's name for the step
    completed_tasks: int | None = None
    total_tasks: int | None = None
    result: Any = None
    final_result: Any = None
    error: Any = None  # {"code", "message", "details"} or a string
    metadata: dict[str, Any] | None = None
    completed_at: str | None = None


class RomaExecution(_Model):
    """`GET /executions/{id}`: the full execution (GitBook) or ExecutionDetailResponse (upstream)."""

    execution_id: str | None = None
    status: str | None = None
    result: Any = None
    final_result: Any = None
    metadata: dict[str, Any] | None = None
    completed_at: str | None = None


# -- request validation: one function per field, used at DAG parse, before a request and by the hook ------
def _check_goal(value: Any, partial: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-blank string, got {short_repr(value)}")
    if len(value) > GOAL_MAX_CHARS:
        raise ValueError(f"must be at most {GOAL_MAX_CHARS:,} characters, got {len(value):,}")
    return value


def _check_max_depth(value: Any, partial: bool = False) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    low, high = MAX_DEPTH_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"must be an integer from {low} to {high}, got {short_repr(value)}")
    return value


def _check_profile(value: Any, partial: bool = False) -> str:
    if value not in CONFIG_PROFILES:
        raise ValueError(f"must be one of {', '.join(CONFIG_PROFILES)}; got {short_repr(value)}")
    return str(value)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):  # a template rendered to JSON text, e.g. "{{ params.overrides | tojson }}"
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"must be a mapping (or its JSON text), got {short_repr(value)}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, got {type(value).__name__}")
    return value


def _check_overrides(value: Any, partial: bool = False) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, item in _as_mapping(value).items():
        if partial and (is_template(key) or is_template(item)):
            continue
        if key not in OVERRIDE_KEYS:
            raise ValueError(f"key {short_repr(key)} is not allowed (allowed: {', '.join(OVERRIDE_KEYS)})")
        checked[key] = _OVERRIDE_CHECKS[key](item)
    return checked


def _temperature(value: Any) -> float:
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"['temperature'] must be a non-negative number, got {short_repr(value)}")
    return number


def _max_tokens(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"['max_tokens'] must be a positive integer, got {short_repr(value)}")
    return value


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"['model'] must be a non-blank string, got {short_repr(value)}")
    return value


_OVERRIDE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "temperature": _temperature, "max_tokens": _max_tokens, "model": _model,
}


def _check_metadata(value: Any, partial: bool = False) -> dict[str, str]:
    pairs = _as_mapping(value)
    if len(pairs) > METADATA_MAX_PAIRS:
        raise ValueError(f"may hold at most {METADATA_MAX_PAIRS} pairs, got {len(pairs)}")
    (kmin, kmax), (vmin, vmax) = METADATA_KEY_CHARS, METADATA_VALUE_CHARS
    checked: dict[str, str] = {}
    for key, item in pairs.items():
        if partial and (is_template(key) or is_template(item)):
            continue
        if not isinstance(key, str) or not kmin <= len(key) <= kmax:
            raise ValueError(f"key {short_repr(key)} must be a string of {kmin}-{kmax} characters")
        if not isinstance(item, str) or not vmin <= len(item) <= vmax:
            raise ValueError(f"[{key!r}] must be a string of {vmin}-{vmax} characters, got {short_repr(item)}")
        checked[key] = item
    return checked


_FIELD_CHECKS: dict[str, Callable[..., Any]] = {
    "goal": _check_goal,
    "max_depth": _check_max_depth,
    "config_profile": _check_profile,
    "config_overrides": _check_overrides,
    "metadata": _check_metadata,
}


def check_field(name: str, value: Any, *, where: str = "izieroma", partial: bool = False) -> Any:
    """The field's value as the API wants it; ProviderConfigError naming the field when it is unusable."""
    try:
        return _FIELD_CHECKS[name](value, partial)
    except ValueError as err:
        sep = "" if str(err).startswith("[") else " "
        raise ProviderConfigError(f"{where}: {name}{sep}{err}") from None


def execution_request(
    goal: str,
    *,
    max_depth: int | str | None = None,
    config_profile: str | None = None,
    config_overrides: Mapping[str, Any] | str | None = None,
    metadata: Mapping[str, Any] | str | None = None,
    where: str = "izieroma",
) -> dict[str, Any]:
    """A validated create body; fields left as None are omitted, so the API's defaults apply."""
    fields = {"goal": goal, "max_depth": max_depth, "config_profile": config_profile,
              "config_overrides": config_overrides, "metadata": metadata}
    return {name: check_field(name, value, where=where) for name, value in fields.items() if value is not None}


# -- status reading ----------------------------------------------------------------------------------------
def percent(progress: Any) -> int | None:
    """ROMA progress as a whole percent: an int is a percent (GitBook), a float <= 1.0 a fraction (upstream)."""
    if isinstance(progress, bool) or progress is None:
        return None
    if isinstance(progress, str):
        try:
            progress = int(progress) if progress.strip().isdigit() else float(progress)
        except ValueError:
            return None
    if isinstance(progress, float):
        if not math.isfinite(progress):
            return None
        progress = progress * 100 if progress <= 1.0 else progress
    if not isinstance(progress, (int, float)):
        return None
    return round(min(100.0, max(0.0, progress)))


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _progress_line(status: RomaStatus) -> str | None:
    parts = []
    if (pct := percent(status.progress)) is not None:
        parts.append(f"{pct}%")
    step = status.current_step or status.current_task_goal
    if step:
        parts.append(_shorten(str(step)))
    if status.total_tasks:
        parts.append(f"{status.completed_tasks or 0}/{status.total_tasks} tasks")
    return ", ".join(parts) or None


def _error_text(error: Any) -> str | None:
    if isinstance(error, str):
        return error.strip() or None
    if not isinstance(error, Mapping):
        return None
    message = error.get("message") or error.get("error")
    code = error.get("code")
    details = error.get("details")
    text = ": ".join(str(p) for p in (code, message) if p) or None
    if details:
        details = details if isinstance(details, str) else json.dumps(details, default=str)
        text = f"{text} ({_shorten(details, 500)})" if text else _shorten(details, 500)
    return text


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# -- hook --------------------------------------------------------------------------------------------------
class IzieromaHook(ExecutionHook):
    """The ROMA API at api.izieroma.xyz (or a self-hosted ROMA server: set the connection's host)."""

    conn_type = "izieroma"
    default_conn_name = "izieroma_default"
    hook_name = "izieroma (ROMA API)"
    vendor = "ROMA"
    default_host = "https://api.izieroma.xyz"
    api_key_header = "X-API-Key"
    status_words = STATUS_WORDS
    # GitBook ids ("exec_" + 8-32 alphanumerics) or the upstream server's bare UUIDs.
    execution_id_pattern = re.compile(
        r"exec_[A-Za-z0-9]{8,32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    )
    execution_id_example = "exec_1a2b3c4d5e6f7g8h"
    idempotent_create = True

    # -- start -----------------------------------------------------------------------------------------
    def create_execution(
        self,
        goal: str,
        *,
        max_depth: int | None = None,
        config_profile: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Start a run and return its execution id. With an idempotency key a create that timed out is
        retried, and ROMA answers the retry with the run the first attempt started (within 24 h)."""
        body = execution_request(goal, max_depth=max_depth, config_profile=config_profile,
                                 config_overrides=config_overrides, metadata=metadata)
        return self.start(body, idempotency_key=idempotency_key)

    def start(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        """POST an already validated create body (see `execution_request`)."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        call = ApiCall("POST", EXECUTIONS, "create", json=dict(body), headers=headers,
                       retry_safe=idempotency_key is not None)
        started = parse_model(RomaStarted, self.client.request(call), vendor=self.vendor, call=call)
        return self.started(started.execution_id)

    # -- adapter ---------------------------------------------------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        return ApiCall("GET", execution_path(execution_id, "status"), "status")

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        status = parse_model(RomaStatus, body, vendor=self.vendor, call=call)
        state = normalize_status(status.status, self.status_words)
        error = _error_text(status.error) if state is not S.SUCCEEDED else None
        return ExecutionStatus(status.execution_id or execution_id, state, status.status,
                               progress=_progress_line(status), error=error, payload=LazyPayload(status))

    def cancel_call(self, execution_id: str) -> ApiCall:
        return ApiCall("POST", execution_path(execution_id, "cancel"), "cancel")

    def cancel_error_outcome(self, error: ExecutionApiError) -> CancelOutcome | None:
        # GitBook: 400 invalid_operation "Cannot cancel execution in completed state";
        # upstream: 400 {"detail": "Execution ... is not running (cannot cancel)"}.
        if error.status_code == 400 and (
            error.code == "invalid_operation" or re.search(r"not running|cannot cancel", error.message, re.I)
        ):
            return CancelOutcome.ALREADY_FINISHED
        return super().cancel_error_outcome(error)

    def test_call(self) -> ApiCall:
        return ApiCall("GET", EXECUTIONS, "list", params={"limit": 1})

    # -- results ---------------------------------------------------------------------------------------
    def get_execution(self, execution_id: str) -> RomaExecution:
        """The full execution record (`GET /executions/{id}`)."""
        call = ApiCall("GET", execution_path(self.validate_execution_id(execution_id)), "result")
        return parse_model(RomaExecution, self.client.request(call), vendor=self.vendor, call=call)

    def get_result(self, status: ExecutionStatus) -> dict[str, Any]:
        """`{"execution_id", "status", "result", "metadata", "completed_at"}` of a completed run: the result
        from `/status`, else (upstream servers) from the full execution record."""
        payload = status.payload
        result = _first(payload.get("result"), payload.get("final_result"))
        metadata = payload.get("metadata") or {}
        completed_at = payload.get("completed_at")
        if result is None:
            record = self.get_execution(status.execution_id)
            extra = record.metadata or {}
            result = _first(record.result, record.final_result, extra.get("final_result"), extra.get("result"))
            metadata = metadata or extra
            completed_at = completed_at or record.completed_at
        return {
            "execution_id": status.execution_id,
            "status": status.vendor_status,
            "result": result,
            "metadata": metadata,
            "completed_at": completed_at,
        }


# -- operator ----------------------------------------------------------------------------------------------
class IzieromaRunOperator(ExecutionOperator[IzieromaHook]):
    """Run a ROMA multi-agent execution on a goal, wait for it, and return its result.

    :param goal: what to solve (templated); 1-10,000 characters, not blank.
    :param max_depth: how deep ROMA may decompose the goal, 1-10 (templated; default: the API's, 3).
    :param config_profile: ``general``, ``high_quality``, ``fast`` or ``crypto_agent`` (templated; default:
        the API's, ``general``).
    :param config_overrides: any of ``temperature``, ``max_tokens``, ``model`` (templated).
    :param metadata: up to 10 string pairs kept with the run (key 1-50, value 1-500 characters; templated).

    Returns ``{"execution_id", "status", "result", "metadata", "completed_at"}``: ``result`` is ROMA's
    answer, ``metadata`` its run facts (``execution_time``, ``tokens_used``...). The execution id is in XCom
    under ``execution_id`` as soon as the run starts. Each create carries an ``X-Idempotency-Key`` unique to
    the task try, so a create retried after a timeout never starts a second run.
    """

    hook_class = IzieromaHook
    template_fields: Sequence[str] = (
        "conn_id", "goal", "max_depth", "config_profile", "config_overrides", "metadata",
    )
    template_fields_renderers = {"config_overrides": "json", "metadata": "json"}

    def __init__(
        self,
        *,
        goal: str,
        max_depth: int | str | None = None,
        config_profile: str | None = None,
        config_overrides: Mapping[str, Any] | str | None = None,
        metadata: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.goal = goal
        self.max_depth = max_depth
        self.config_profile = config_profile
        self.config_overrides = config_overrides
        self.metadata = metadata
        self._request: dict[str, Any] | None = None
        # What is known at DAG parse is checked now; templates (also inside mappings) once rendered.
        for name, value in self._fields().items():
            if value is not None and not is_template(value):
                check_field(name, value, where=self.task_id, partial=True)

    def _fields(self) -> dict[str, Any]:
        return {"goal": self.goal, "max_depth": self.max_depth, "config_profile": self.config_profile,
                "config_overrides": self.config_overrides, "metadata": self.metadata}

    def validate_request(self) -> None:
        self._request = execution_request(**self._fields(), where=self.task_id)

    def start_execution(self, hook: IzieromaHook, context: Context) -> str:
        if self._request is None:
            self.validate_request()
        assert self._request is not None
        return hook.start(self._request, idempotency_key=self.idempotency_key(context))

    def fetch_result(self, hook: IzieromaHook, status: ExecutionStatus) -> Any:
        result = hook.get_result(status)
        if result["result"] is None:
            self.log.warning("ROMA execution %s completed without a result", status.execution_id)
        else:
            self.log.info("ROMA execution %s result: %s", status.execution_id, _shorten(str(result["result"]), 300))
        return result


class IzieromaExecutionSensor(ExecutionSensor):
    """Wait for a ROMA execution started elsewhere, by its execution id. Never cancels it."""

    hook_class = IzieromaHook
