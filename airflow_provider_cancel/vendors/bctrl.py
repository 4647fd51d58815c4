"""bctrl.ai: a durable invocation on a browser/desktop runtime, in either of the two published API generations.

API facts (docs/bctrl.md): `Authorization: Bearer <key>`, optional `BCTRL-Subaccount-Id`; ids are UUIDs;
statuses queued, dispatching, running, cancelling, succeeded, failed, cancelled, timed_out. Cancel is
asynchronous: it answers `cancelling` and a later read says `cancelled`, so `cancelling` is not terminal. The
create carries an idempotency key, so a create that timed out is retried safely.

The connection extra `api_generation` picks the generation (`InvocationPaths`):
- "1" (default), durable invocations as the seed's pages describe them: steps (browser.goto, browser.click...)
  created under `/v1/spaces/{space}/runtimes/{runtime}/invocations`, cancelled at `/v1/invocations/{id}/cancel`;
  the result is `result` `{mode, ok, runtimeId, steps[]}`;
- "2", runtime-scoped invocations as bctrl's published OpenAPI types describe them: one action request
  (act, observe, extract, stagehandAgent, browserUse, solveCaptcha) created under
  `/v1/runtimes/{runtime}/invocations`, cancelled under the runtime; the result is `output`.
Both read an invocation at `GET /v1/invocations/{id}`, so a poll (in the triggerer too) never needs to know which.
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

    from airflow_provider_cancel.core.http import ApiClient


# -- paths: the one place to change when bctrl moves them again ----------------------------------------------
READ_PATH = "/v1/invocations/{invocation_id}"  # the same in both generations


@dataclass(frozen=True)
class InvocationPaths:
    """Path templates of one generation of the invocations API, and what its create runs.

    Placeholders: ``{space_id}``, ``{runtime_id}``, ``{invocation_id}`` (each percent-encoded when filled).
    """

    generation: str
    create: str
    cancel: str
    runs: str  # what one invocation runs: "steps" or "action"

    def render(self, name: str, **values: str | None) -> str:
        template: str = getattr(self, name)
        needed = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        missing = sorted(field for field in needed if not values.get(field))
        if missing:
            raise ProviderConfigError(
                f"bctrl {name} path {template!r} needs {', '.join(missing)}, which is not known here"
            )
        return template.format(**{field: quote_path_id(str(values[field])) for field in needed})


# Generation 1, "durable invocations" (the seed's pages): space- and runtime-scoped create of steps.
GENERATION_1 = InvocationPaths(
    generation="1",
    create="/v1/spaces/{space_id}/runtimes/{runtime_id}/invocations",
    cancel="/v1/invocations/{invocation_id}/cancel",
    runs="steps",
)
# Generation 2, runtime-scoped invocations (bctrl's published OpenAPI types; SDK 0.1.0): one action request.
GENERATION_2 = InvocationPaths(
    generation="2",
    create="/v1/runtimes/{runtime_id}/invocations",
    cancel="/v1/runtimes/{runtime_id}/invocations/{invocation_id}/cancel",
    runs="action",
)
GENERATIONS = {paths.generation: paths for paths in (GENERATION_1, GENERATION_2)}
GENERATION_EXTRA = "api_generation"


def generation_paths(extra: Mapping[str, Any], *, conn_id: str) -> InvocationPaths:
    """The paths named by the connection extra ``api_generation`` ("1" when unset)."""
    value = extra.get(GENERATION_EXTRA)
    name = "1" if value is None or (isinstance(value, str) and not value.strip()) else str(value).strip()
    if isinstance(value, bool) or name not in GENERATIONS:
        raise ProviderConfigError(
            f"Connection {conn_id!r}: extra {GENERATION_EXTRA!r} must be 1 (durable invocations of steps) or 2 "
            f"(runtime-scoped invocations of one action), got {short_repr(value)}"
        )
    return GENERATIONS[name]


IDEMPOTENCY_HEADER = "Idempotency-Key"
SUBACCOUNT_HEADER = "BCTRL-Subaccount-Id"
MODES = ("fail-fast",)
ACTIONS = ("act", "observe", "extract", "stagehandAgent", "browserUse", "solveCaptcha")
NEEDS_INSTRUCTION = ("observe", "stagehandAgent", "browserUse")  # act needs an instruction or a stagehandAction
LOG_MODES = ("off", "capture")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UUID_EXAMPLE = "3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f"
# A 409 on cancel that is a momentary conflict, not "already finished".
_BUSY_CODES = frozenset({"runtime.controller_busy"})

S = ExecutionState
STATUS_WORDS = {
    "queued": S.QUEUED,
    "dispatching": S.QUEUED,
    "running": S.RUNNING,
    "cancelling": S.CANCELLING,  # cancel requested, not yet effective: keep waiting
    "succeeded": S.SUCCEEDED,
    "failed": S.FAILED,
    "cancelled": S.CANCELLED,
    "timed_out": S.FAILED,
}


# -- payloads (unknown fields tolerated) ---------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # schemas built on first use, not at DAG parse


class InvocationError(_Model):
    code: str | None = None
    message: str | None = None
    details: Any = None
    hint: str | None = None


class StepError(_Model):
    code: str | None = None
    message: str | None = None
    hint: str | None = None
    diagnostic: Any = None


class StepResult(_Model):
    call: str | None = None
    index: int | None = None
    ok: bool | None = None
    error: StepError | None = None
    result: Any = None


class InvocationResult(_Model):
    mode: str | None = None
    ok: bool | None = None
    runtimeId: str | None = None
    steps: list[StepResult] | None = None


class Progress(_Model):
    currentCall: str | None = None
    lastEventType: str | None = None
    message: str | None = None
    step: int | None = None
    totalSteps: int | None = None


class Invocation(_Model):
    id: str
    status: str
    runtimeId: str | None = None
    spaceId: str | None = None
    runId: str | None = None
    entryCall: str | None = None
    stepCount: int | None = None
    progress: Progress | None = None
    result: InvocationResult | None = None
    output: Any = None
    error: InvocationError | None = None
    cancelRequestedAt: str | None = None
    finishedAt: str | None = None


def _unwrap(body: Any) -> Any:
    """The invocation itself, also from the v2 `{"data": {...}}` envelope."""
    if isinstance(body, Mapping) and "status" not in body and isinstance(body.get("data"), Mapping):
        return body["data"]
    return body


def describe_progress(inv: Invocation) -> str | None:
    """``step 2/5 browser.goto: Navigating`` from ``progress{step, totalSteps, currentCall, message}``."""
    text = ""
    progress = inv.progress
    if progress is not None:
        if progress.step is not None:
            text = f"step {progress.step}" + (f"/{progress.totalSteps}" if progress.totalSteps else "")
        if progress.currentCall:
            text = f"{text} {progress.currentCall}".strip()
        if progress.message:
            text = f"{text}: {progress.message}" if text else progress.message
    if inv.status.strip().lower() == "cancelling" and inv.cancelRequestedAt:
        text = f"{text}; " if text else ""
        text += f"cancel requested at {inv.cancelRequestedAt}"
    return text or None


def describe_failure(inv: Invocation) -> str | None:
    """The invocation's error {code, message, details, hint} and every failing step with its hint."""
    parts: list[str] = []
    err = inv.error
    if err is not None:
        head = ": ".join(p for p in (err.code, err.message) if p)
        details = dict(err.details) if isinstance(err.details, Mapping) else err.details
        hint = err.hint
        if isinstance(details, dict) and isinstance(details.get("hint"), str):
            detail_hint = details.pop("hint")
            hint = hint or detail_hint
        if details:
            head += f" (details: {_compact(details)})"
        if hint:
            head += f"; hint: {hint}"
        if head:
            parts.append(head)
    steps = inv.result.steps if inv.result is not None and inv.result.steps else []
    for step in steps:
        if step.ok is not False and step.error is None:
            continue
        where = f"steps[{step.index}]" if step.index is not None else "a step"
        line = f"{where} {step.call or '?'} failed"
        if step.error is not None:
            what = ": ".join(p for p in (step.error.code, step.error.message) if p)
            if what:
                line += f": {what}"
            if step.error.hint:
                line += f"; hint: {step.error.hint}"
            diagnostic = step.error.diagnostic if isinstance(step.error.diagnostic, Mapping) else {}
            closest = diagnostic.get("closest")
            if isinstance(closest, list) and closest:
                line += f"; did you mean {', '.join(str(c) for c in closest[:3])}?"
        parts.append(line)
    return " | ".join(parts) or None


def _compact(value: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# -- request validation (shared by the hook and the operator) -------------------------------------------------
def check_uuid(value: object, name: str) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value.strip()):
        raise ProviderConfigError(f"bctrl {name} must be a UUID (e.g. {UUID_EXAMPLE!r}), got {short_repr(value)}")
    return value.strip()


def _native(value: Any, name: str) -> Any:
    """A rendered template is a string: read it back as JSON or a Python literal (an XCom'd list or dict)."""
    if not isinstance(value, str):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    raise ProviderConfigError(f"bctrl {name} must be a list/mapping (or its JSON), got {short_repr(value)}")


def check_steps(steps: Any, *, allow_templates: bool = False) -> list[dict[str, Any]]:
    """Validate invocation steps: a non-empty list of {call, args?, bind?, ref?, options?} with a non-empty
    string `call`. Returns plain dicts ready to send. Templated values pass when ``allow_templates``."""
    steps = _native(steps, "steps")
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ProviderConfigError(f"bctrl steps must be a non-empty list of steps, got {short_repr(steps)}")
    checked = []
    for i, step in enumerate(steps):
        where = f"bctrl steps[{i}]"
        if not isinstance(step, Mapping):
            raise ProviderConfigError(f"{where} must be a mapping like {{'call': 'browser.goto'}}, got "
                                      f"{short_repr(step)}")
        step = dict(step)
        call = step.get("call")
        if not (isinstance(call, str) and call.strip()):
            raise ProviderConfigError(f"{where} needs a non-empty string 'call' (e.g. 'browser.goto'), got "
                                      f"{short_repr(call)}")
        args = step.get("args")
        if args is not None and not isinstance(args, (list, tuple, Mapping)) and not (
            allow_templates and is_template(args)
        ):
            raise ProviderConfigError(f"{where}.args must be a list or a mapping, got {short_repr(args)}")
        if isinstance(args, tuple):
            step["args"] = list(args)
        for key in ("bind", "ref"):
            if step.get(key) is not None and not isinstance(step[key], str):
                raise ProviderConfigError(f"{where}.{key} must be a string, got {short_repr(step[key])}")
        options = step.get("options")
        if options is not None:
            if not isinstance(options, Mapping):
                raise ProviderConfigError(f"{where}.options must be a mapping, got {short_repr(options)}")
            step["options"] = _check_options(dict(options), where, allow_templates)
        checked.append(step)
    return checked


def _check_options(options: dict[str, Any], where: str, allow_templates: bool) -> dict[str, Any]:
    def templated(value: Any) -> bool:
        return allow_templates and is_template(value)

    dry_run = options.get("dryRun")
    if isinstance(dry_run, str) and dry_run.strip().lower() in ("true", "false"):  # a rendered template
        dry_run = options["dryRun"] = dry_run.strip().lower() == "true"
    if dry_run is not None and not isinstance(dry_run, bool) and not templated(dry_run):
        raise ProviderConfigError(f"{where}.options.dryRun must be true or false, got {short_repr(dry_run)}")
    timeout = options.get("timeoutMs")
    if isinstance(timeout, str) and timeout.strip().isascii() and timeout.strip().isdigit():
        timeout = options["timeoutMs"] = int(timeout.strip())
    if timeout is not None and not templated(timeout) and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ProviderConfigError(f"{where}.options.timeoutMs must be a positive integer, got {short_repr(timeout)}")
    logs = options.get("logs")
    if logs is not None and logs not in LOG_MODES and not templated(logs):
        raise ProviderConfigError(f"{where}.options.logs must be one of {LOG_MODES}, got {short_repr(logs)}")
    return options


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ProviderConfigError(f"bctrl mode must be one of {MODES}, got {short_repr(mode)}")
    return str(mode)


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    metadata = _native(metadata, "metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ProviderConfigError(f"bctrl metadata must be a mapping, got {type(metadata).__name__}")
    return dict(metadata)


def invocation_request(
    runtime_id: str,
    steps: Any,
    *,
    mode: str = "fail-fast",
    metadata: Mapping[str, Any] | str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The generation-1 create body: ``{idempotencyKey?, mode, runtimeId, steps[], metadata?}``, validated."""
    body: dict[str, Any] = {
        "mode": check_mode(mode),
        "runtimeId": check_uuid(runtime_id, "runtime_id"),
        "steps": check_steps(steps),
    }
    if idempotency_key:
        body["idempotencyKey"] = idempotency_key
    if (meta := check_metadata(metadata)) is not None:
        body["metadata"] = meta
    return body


def check_action(action: Any, *, allow_templates: bool = False) -> dict[str, Any]:
    """Validate a generation-2 action request: ``{"action": "act" | "observe" | ..., "instruction"?, ...}``
    (the rest passes through to bctrl). A rendered string is read back as JSON or a Python literal."""
    action = _native(action, "action")
    if not isinstance(action, Mapping):
        raise ProviderConfigError(
            f"bctrl action must be a mapping like {{'action': 'extract', 'instruction': '...'}}, got "
            f"{short_repr(action)}"
        )
    request = dict(action)
    kind = request.get("action")
    if kind not in ACTIONS and not (allow_templates and is_template(kind)):
        raise ProviderConfigError(f"bctrl action['action'] must be one of {ACTIONS}, got {short_repr(kind)}")
    instruction = request.get("instruction")
    if instruction is not None and not (isinstance(instruction, str) and instruction.strip()):
        raise ProviderConfigError(f"bctrl action['instruction'] must be a non-blank string, got "
                                  f"{short_repr(instruction)}")
    if instruction is None and (kind in NEEDS_INSTRUCTION or (kind == "act" and not request.get("stagehandAction"))):
        raise ProviderConfigError(f"bctrl action {kind!r} needs an 'instruction'")
    timeout = request.get("timeoutSeconds")
    if timeout is not None and not (allow_templates and is_template(timeout)) and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ProviderConfigError(f"bctrl action['timeoutSeconds'] must be a positive number, got "
                                  f"{short_repr(timeout)}")
    if request.get("metadata") is not None:
        request["metadata"] = check_metadata(request["metadata"])
    return request


def action_request(action: Any, *, metadata: Mapping[str, Any] | str | None = None) -> dict[str, Any]:
    """The generation-2 create body: the action request, with ``metadata`` merged into its own."""
    body = check_action(action)
    if (meta := check_metadata(metadata)) is not None:
        body["metadata"] = {**meta, **(body.get("metadata") or {})}
    return body


# -- hook ------------------------------------------------------------------------------------------------------
class BctrlHook(ExecutionHook):
    """The bctrl API at api.bctrl.ai. Connection extras: ``api_generation`` ("1" or "2", see the module), and
    ``subaccount_id``, sent as ``BCTRL-Subaccount-Id``."""

    conn_type = "bctrl"
    default_conn_name = "bctrl_default"
    hook_name = "bctrl"
    vendor = "bctrl"
    default_host = "https://api.bctrl.ai"
    api_key_header = "Authorization"
    api_key_scheme = "Bearer"
    status_words = STATUS_WORDS
    execution_id_pattern = UUID_RE
    execution_id_example = UUID_EXAMPLE
    idempotent_create = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paths: InvocationPaths | None = None  # from the connection, when its client is made
        # invocation id -> runtime id, for generation 2, whose cancel is runtime-scoped.
        self._runtime_ids: dict[str, str] = {}

    def client_for(self, conn: Any, *, extra: Mapping[str, Any] | None = None) -> ApiClient:
        # `extra` as the async path read it (3.3.1 must not read conn.extra_dejson on the triggerer's loop)
        extra = (conn.extra_dejson or {}) if extra is None else extra
        self._paths = generation_paths(extra, conn_id=self.conn_id)
        return super().client_for(conn, extra=extra)

    @property
    def paths(self) -> InvocationPaths:
        """The API generation the connection speaks (reading the connection on first use)."""
        if self._paths is None:
            self.client  # noqa: B018 - making the client reads the connection's extras
        assert self._paths is not None
        return self._paths

    def extra_headers(self, extra: Mapping[str, Any]) -> dict[str, str]:
        subaccount = extra.get("subaccount_id")
        if subaccount is None or (isinstance(subaccount, str) and not subaccount.strip()):
            return {}
        if not isinstance(subaccount, str) or not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,200}", subaccount.strip()):
            raise ProviderConfigError(
                f"Connection {self.conn_id!r}: extra 'subaccount_id' must be a bctrl subaccount id, got "
                f"{short_repr(subaccount)}"
            )
        return {SUBACCOUNT_HEADER: subaccount.strip()}

    # -- start -----------------------------------------------------------------------------------------
    def create_invocation(
        self,
        space_id: str,
        runtime_id: str,
        steps: Sequence[Mapping[str, Any]] | str,
        *,
        mode: str = "fail-fast",
        metadata: Mapping[str, Any] | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Invoke steps on a runtime (API generation 1) and return the invocation id. With an idempotency key a
        create that timed out is retried, and bctrl answers the retry with the invocation the first attempt
        created."""
        self.check_runs("steps")
        space_id = check_uuid(space_id, "space_id")
        body = invocation_request(runtime_id, steps, mode=mode, metadata=metadata, idempotency_key=idempotency_key)
        return self.start_invocation(body, space_id=space_id, runtime_id=body["runtimeId"],
                                     idempotency_key=idempotency_key)

    def invoke_action(
        self,
        runtime_id: str,
        action: Mapping[str, Any] | str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Invoke one action request on a runtime (API generation 2) and return the invocation id; the
        idempotency key travels in the ``Idempotency-Key`` header, as that generation documents it."""
        self.check_runs("action")
        runtime_id = check_uuid(runtime_id, "runtime_id")
        body = action_request(action, metadata=metadata)
        return self.start_invocation(body, runtime_id=runtime_id, idempotency_key=idempotency_key)

    def check_runs(self, runs: str) -> None:
        """Refuse, before any request, a create body the connection's generation does not run."""
        paths = self.paths
        if paths.runs != runs:
            other = "steps (and a space_id)" if paths.runs == "steps" else "an action request"
            raise ProviderConfigError(
                f"Connection {self.conn_id!r} speaks bctrl API generation {paths.generation} (extra "
                f"{GENERATION_EXTRA!r}), whose invocations run {other}, not {runs}: give {paths.runs}, or set "
                f"{GENERATION_EXTRA!r} to {'2' if runs == 'action' else '1'}"
            )

    def start_invocation(
        self,
        body: Mapping[str, Any],
        *,
        runtime_id: str,
        space_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """POST an already built create body to `paths.create`; returns the invocation id."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        path = self.paths.render("create", space_id=space_id, runtime_id=runtime_id)
        call = ApiCall("POST", path, "create", json=dict(body), headers=headers,
                       retry_safe=idempotency_key is not None)
        invocation = parse_model(Invocation, _unwrap(self.client.request(call)), vendor=self.vendor, call=call)
        invocation_id = self.started(invocation.id)
        self._runtime_ids[invocation_id] = invocation.runtimeId or runtime_id
        return invocation_id

    # -- adapter ---------------------------------------------------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        return ApiCall("GET", READ_PATH.format(invocation_id=quote_path_id(execution_id)), "status")

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        invocation = parse_model(Invocation, _unwrap(body), vendor=self.vendor, call=call)
        if invocation.runtimeId:
            self._runtime_ids[execution_id] = invocation.runtimeId
        state = normalize_status(invocation.status, self.status_words)
        error = None
        if state in (S.FAILED, S.CANCELLED):
            error = describe_failure(invocation)
        elif state is S.UNKNOWN and invocation.finishedAt:
            # A finished invocation in a status we do not know can't be trusted as a success.
            state = S.FAILED
            error = f"finished in an unrecognised status {invocation.status!r}"
            if detail := describe_failure(invocation):
                error += f": {detail}"
        return ExecutionStatus(invocation.id, state, invocation.status, progress=describe_progress(invocation),
                               error=error, payload=LazyPayload(invocation))

    def cancel(
        self, execution_id: str, *, client: ApiClient | None = None, deadline: float | None = None
    ) -> CancelOutcome:
        client = client or self.client
        if self._runtime_unknown(execution_id):
            try:
                call = self.status_call(self.validate_execution_id(execution_id))
                # Learns the invocation's runtime; one deadline for the read and the cancel.
                self.parse_status(execution_id, client.request(call, deadline=deadline), call)
            except ExecutionApiError as err:
                return self._cancel_error(err)  # e.g. 404: nothing to cancel
        return super().cancel(execution_id, client=client, deadline=deadline)

    async def acancel(
        self, execution_id: str, *, client: ApiClient | None = None, deadline: float | None = None
    ) -> CancelOutcome:
        client = client or await self.aclient()
        if self._runtime_unknown(execution_id):
            try:
                call = self.status_call(self.validate_execution_id(execution_id))
                self.parse_status(execution_id, await client.arequest(call, deadline=deadline), call)
            except ExecutionApiError as err:
                return self._cancel_error(err)  # e.g. 404: nothing to cancel
        return await super().acancel(execution_id, client=client, deadline=deadline)

    def _runtime_unknown(self, execution_id: str) -> bool:
        """Generation 2 cancels under the invocation's runtime: a hook that neither created nor read the
        invocation (a trigger, a new try, the clean-up operator) reads it first."""
        return "{runtime_id}" in self.paths.cancel and execution_id not in self._runtime_ids

    def cancel_call(self, execution_id: str) -> ApiCall:
        # No body: neither generation's spec declares one.
        path = self.paths.render("cancel", invocation_id=execution_id, runtime_id=self._runtime_ids.get(execution_id))
        return ApiCall("POST", path, "cancel")

    def cancel_outcome(self, body: Any) -> CancelOutcome:
        # The [INF] alternative to a 409: a 200 no-op showing the invocation had already ended on its own.
        body = _unwrap(body)
        word = body.get("status") if isinstance(body, Mapping) else None
        if normalize_status(word, self.status_words) in (S.SUCCEEDED, S.FAILED):
            return CancelOutcome.ALREADY_FINISHED
        return CancelOutcome.REQUESTED

    def cancel_error_outcome(self, error: ExecutionApiError) -> CancelOutcome | None:
        # 409 invocation.not_cancellable: the invocation is terminal. A busy controller is a real error.
        if error.status_code == 409 and error.code in _BUSY_CODES:
            return None
        return super().cancel_error_outcome(error)

    def test_call(self) -> ApiCall:
        # Reading an invocation that cannot exist: 404 proves the key was accepted, 401/403 that it was not.
        return self.status_call("00000000-0000-0000-0000-000000000000")


def invocation_result(payload: Mapping[str, Any]) -> Any:
    """The task's return value: generation 1 ``result`` ({mode, ok, runtimeId, steps[]}), else ``output``."""
    if payload.get("result") is not None:
        return payload["result"]
    return payload.get("output")


# -- operator and sensor ---------------------------------------------------------------------------------------
class BctrlInvokeOperator(ExecutionOperator[BctrlHook]):
    """Invoke work on a bctrl runtime, wait for the invocation, and return its result.

    What an invocation runs depends on the API generation of the connection (extra ``api_generation``):
    generation 1 (default) runs ``steps`` in a space, generation 2 runs one ``action`` request. Give one of them.

    :param runtime_id: the runtime's UUID (templated).
    :param space_id: the space's UUID (templated); needed with ``steps`` (generation 1), unused by generation 2.
    :param steps: generation 1: the steps to run, in order (templated): a non-empty list of
        ``{"call": "browser.goto", "args": [...], "bind": "page1", "ref": "s1",
        "options": {"dryRun": False, "timeoutMs": 30000, "logs": "off"}}``; only ``call`` is required.
        A rendered string (e.g. an upstream task's XCom) is read back as JSON or a Python literal.
    :param action: generation 2: one action request (templated), ``{"action": "act" | "observe" | "extract" |
        "stagehandAgent" | "browserUse" | "solveCaptcha", "instruction": "...", ...}``; every other field
        (``outputSchema``, ``timeoutSeconds``, ``model``...) goes to bctrl as given.
    :param mode: generation 1: ``"fail-fast"`` (default, the only mode bctrl documents; templated): the invocation
        stops at the first failing step.
    :param metadata: a mapping stored with the invocation (templated).

    Returns the invocation's ``result`` (generation 1: ``{"mode", "ok", "runtimeId", "steps": [...]}``) or its
    ``output`` (generation 2). A failure raises with bctrl's error and every failing step's code, message and
    hint. The invocation id is in XCom under ``execution_id`` as soon as the invocation is created. The create
    carries an idempotency key per task try, so a retried create never starts a second invocation.
    """

    hook_class = BctrlHook
    template_fields: Sequence[str] = ("conn_id", "space_id", "runtime_id", "steps", "action", "mode", "metadata")
    template_fields_renderers = {"steps": "json", "action": "json", "metadata": "json"}

    def __init__(
        self,
        *,
        runtime_id: str,
        space_id: str | None = None,
        steps: Sequence[Mapping[str, Any]] | str | None = None,
        action: Mapping[str, Any] | str | None = None,
        mode: str = "fail-fast",
        metadata: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.space_id = space_id
        self.runtime_id = runtime_id
        self.steps = steps
        self.action = action
        self.mode = mode
        self.metadata = metadata
        if (steps is None) == (action is None):
            raise ProviderConfigError(f"{self.task_id}: give exactly one of steps (bctrl API generation 1) or "
                                      "action (generation 2)")
        if steps is not None and space_id is None:
            raise ProviderConfigError(f"{self.task_id}: steps run in a space (bctrl API generation 1): give space_id")
        # Check at DAG parse what is not templated; the rest in validate_request, still before any request.
        self._checked(lambda: [
            check_uuid(value, name)
            for name, value in (("space_id", space_id), ("runtime_id", runtime_id))
            if value is not None and not is_template(value)
        ])
        if not is_template(mode):
            self._checked(lambda: check_mode(mode))
        if steps is not None and not is_template(steps):
            self._checked(lambda: check_steps(steps, allow_templates=True))
        if action is not None and not is_template(action):
            self._checked(lambda: check_action(action, allow_templates=True))
        if not is_template(metadata):
            self._checked(lambda: check_metadata(metadata))

    def _checked(self, check: Any) -> Any:
        try:
            return check()
        except ProviderConfigError as err:
            raise ProviderConfigError(f"{self.task_id}: {err}") from None

    def validate_request(self) -> None:
        self.runtime_id = self._checked(lambda: check_uuid(self.runtime_id, "runtime_id"))
        self.metadata = self._checked(lambda: check_metadata(self.metadata))
        if self.steps is not None:
            self.space_id = self._checked(lambda: check_uuid(self.space_id, "space_id"))
            self.mode = self._checked(lambda: check_mode(self.mode))
            self.steps = self._checked(lambda: check_steps(self.steps))
            self._checked(lambda: self.hook.check_runs("steps"))
        else:
            self.action = self._checked(lambda: check_action(self.action))
            self._checked(lambda: self.hook.check_runs("action"))

    def start_execution(self, hook: BctrlHook, context: Context) -> str:
        key = self.idempotency_key(context)
        if self.action is not None:
            return hook.invoke_action(self.runtime_id, self.action, metadata=self.metadata, idempotency_key=key)
        assert self.space_id is not None and self.steps is not None
        return hook.create_invocation(self.space_id, self.runtime_id, self.steps, mode=self.mode,
                                      metadata=self.metadata, idempotency_key=key)

    def fetch_result(self, hook: BctrlHook, status: ExecutionStatus) -> Any:
        result = invocation_result(status.payload)
        steps = result.get("steps") if isinstance(result, Mapping) else None
        if isinstance(steps, list):
            done = sum(1 for step in steps if isinstance(step, Mapping) and step.get("ok") is True)
            self.log.info("bctrl invocation %s: %d of %d steps ok", status.execution_id, done, len(steps))
        return result


class BctrlInvocationSensor(ExecutionSensor):
    """Wait for a bctrl invocation started elsewhere, by its UUID. Never cancels it; keeps waiting while the
    invocation is ``cancelling`` and fails once it is ``cancelled``, ``failed`` or ``timed_out``."""

    hook_class = BctrlHook
