"""bctrl.ai durable invocations (docs/bctrl.md), both published generations, served under ``/bctrl``.

A client's base URL is ``http://<host>:<port>/bctrl`` and the real paths follow. Generation 1 (the seed's "durable
invocation" pages) runs steps and is space-scoped:

- ``POST /v1/spaces/{spaceId}/runtimes/{runtimeId}/invocations`` -> 202 Invocation (``queued``). Idempotent on the
  body's ``idempotencyKey`` or the ``Idempotency-Key`` header: the same key answers with the same invocation;
  the same key with a different request is a 409.
- ``POST /v1/invocations/{id}/wait`` (body ``{"timeoutMs": n}``) -> Invocation + ``waitStatus``.
- ``POST /v1/invocations/{id}/cancel`` -> 200 Invocation ``cancelling`` with ``cancelRequestedAt``.

Generation 2 (the published OpenAPI types of bctrl's SDK, commit 16d27d9; SDK 0.1.0) runs one action request
(``{"action": "act" | "observe" | "extract" | "stagehandAgent" | "browserUse" | "solveCaptcha", ...}``) and is
runtime-scoped; its Invocation is ``{id, runId, runtimeId, action, status, output?, error?, createdAt, startedAt?,
finishedAt?, durationSeconds?}``:

- ``POST /v1/runtimes/{runtimeId}/invocations`` -> 202 Invocation; idempotent on the ``Idempotency-Key`` header.
- ``POST /v1/runtimes/{runtimeId}/invocations/{id}/wait`` (body ``{"timeoutSeconds": n}``; SDK 0.1.0 sends
  ``timeoutMs``) -> Invocation + ``waitStatus`` (+ ``retryAfterSeconds`` on a timeout).
- ``POST /v1/runtimes/{runtimeId}/invocations/{id}/cancel`` (no request body) -> 200 Invocation ``cancelling``.

Both: ``GET /v1/invocations/{id}`` -> the Invocation in the shape of its generation; every read is a poll:
``queued`` -> ``dispatching`` -> ``running`` -> the scenario's end. A cancel makes the next read say ``cancelled``
(error ``invocation.cancelled``); a terminal invocation -> 409 ``invocation.not_cancellable``.
``GET /v1/runs/{runId}/invocations?status=&cursor=&limit=`` -> ``{"data": [...], "nextCursor"}`` and
``GET /v1/runs/{runId}/invocations/{id}``.

Auth ``Authorization: Bearer <key>``; every answer carries ``x-request-id``; errors are
``{"error", "code", "reasonClass", "requestId", "hint"?, "details"?}``; a 429 carries ``Retry-After``.

Special ids: space or runtime ``00000000-0000-4000-8000-000000404404`` (or any non-UUID) -> 404
``runtime.not_found``; runtime ``00000000-0000-4000-8000-000000409409`` -> 409 ``runtime.controller_busy``;
header ``BCTRL-Subaccount-Id: sub_forbidden`` -> 403 ``auth.forbidden``.

Scenarios (``emulate:<outcome>`` anywhere in the body, e.g. ``"metadata": {"emulate": "fail:2"}``): ``fail`` ->
the last step (generation 2: the action) fails with ``TIMEOUT`` and a hint (status ``failed``); ``partial`` ->
``timed_out`` before the last step; ``remote_cancel`` -> ``cancelled`` by someone else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_cancel.emulator.engine import Action, Call, Execution, State, VendorAPI

MISSING_ID = "00000000-0000-4000-8000-000000404404"
BUSY_RUNTIME_ID = "00000000-0000-4000-8000-000000409409"
FORBIDDEN_SUBACCOUNT = "sub_forbidden"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RUN_NAMESPACE = uuid.UUID("6f1c2a52-3b0e-4e57-9a43-bc7e1a0d5c11")
_MODES = ("fail-fast",)
_ACTIONS = ("act", "observe", "extract", "stagehandAgent", "browserUse", "solveCaptcha")
_NEEDS_INSTRUCTION = ("observe", "stagehandAgent", "browserUse")  # act: an instruction or a stagehandAction
_MAX_WAIT_MS = 30_000
_PAGE, _MAX_PAGE = 50, 100
_MESSAGES = {
    400: "Invalid request.",
    401: "Authentication required: the API key is missing or invalid.",
    403: "Forbidden: the API key cannot access this resource.",
    404: "The requested resource was not found.",
    429: "Rate limit exceeded. Retry after the delay indicated by Retry-After.",
    500: "Internal server error.",
    503: "Runtime host unavailable.",
}
# status -> (code, reasonClass) for errors raised without a specific code (auth, faults, unknown paths).
_DEFAULT_CODES = {
    400: ("request.invalid", "invalid_input"),
    401: ("auth.required", "unauthorized"),
    403: ("auth.forbidden", "capability_denied"),
    404: ("not_found", "not_found"),
    409: ("conflict", "conflict"),
    429: ("rate_limited", "rate_limited"),
    500: ("server.error", "server"),
    502: ("upstream.bad_gateway", "upstream"),
    503: ("runtime.host_unavailable", "upstream"),
    504: ("upstream.timeout", "upstream"),
}
_WORDS = {
    State.RUNNING: "running",
    State.CANCELLING: "cancelling",
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
    State.PARTIAL: "timed_out",
}


# -- errors ----------------------------------------------------------------------------------------------------
def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers={"x-request-id": _request_id()})


def _fail(
    status: int, message: str, code: str | None = None, *, hint: str | None = None,
    details: dict[str, Any] | None = None, reason: str | None = None,
) -> Response:
    default_code, default_reason = _DEFAULT_CODES.get(status, ("server.error", "server"))
    request_id = _request_id()
    body: dict[str, Any] = {"error": message, "code": code or default_code,
                            "reasonClass": reason or default_reason, "requestId": request_id}
    if hint:
        body["hint"] = hint
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers={"x-request-id": request_id})


def _error(status: int, message: str) -> Response:
    """The engine's errors (401, 429, injected 5xx, unknown paths) in bctrl's shape."""
    return _fail(status, message)


class _Fail(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.response = _fail(status, message, code, **extra)


def _invalid(message: str, path: str | None = None) -> _Fail:
    return _Fail(400, message, "request.invalid", details={"path": path} if path else None)


def _api_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


api = VendorAPI("bctrl", api_key=_api_key, error=_error, new_id=lambda: str(uuid.uuid4()), messages=_MESSAGES,
                id_param="invocation_id", odd_fields={"create": {"progress": "half"}, "status": {"progress": "half"}})

Handler = Callable[[Call], Awaitable[Response]]


def route(method: str, path: str, *, action: Action) -> Callable[[Handler], Handler]:
    """`api.route`, plus bctrl's coded errors and the subaccount check every route shares."""

    def register(handler: Handler) -> Handler:
        async def serve(call: Call) -> Response:
            try:
                if call.request.headers.get("bctrl-subaccount-id", "").strip() == FORBIDDEN_SUBACCOUNT:
                    raise _Fail(403, "Forbidden: the API key cannot act for this subaccount.", "auth.forbidden")
                return await handler(call)
            except _Fail as exc:
                return exc.response

        serve.__name__, serve.__doc__ = handler.__name__, handler.__doc__
        api.route(method, path, action=action)(serve)
        return handler

    return register


# -- create ----------------------------------------------------------------------------------------------------
@route("POST", "/v1/spaces/{space_id}/runtimes/{runtime_id}/invocations", action="create")
async def create_invocation(call: Call) -> Response:
    """Create a durable invocation of steps on a runtime (202, status queued)."""
    params = call.request.path_params
    space_id, runtime_id = params["space_id"], params["runtime_id"]
    _check_runtime(space_id, runtime_id)
    body = call.json()
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    steps = _steps(body.get("steps"))
    mode = body.get("mode", "fail-fast")
    if mode not in _MODES:
        raise _invalid(f"mode must be one of {list(_MODES)}", "mode")
    if body.get("runtimeId") is not None and str(body["runtimeId"]).lower() != runtime_id.lower():
        raise _invalid("runtimeId in the body does not match the runtime in the path", "runtimeId")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("metadata must be an object", "metadata")
    key = _idempotency_key(call, body)
    request = {"mode": mode, "runtimeId": runtime_id, "steps": steps}
    fingerprint = hashlib.sha256(
        json.dumps([space_id.lower(), request, metadata], sort_keys=True, default=str).encode()
    ).hexdigest()
    data = {
        "generation": 1,
        "spaceId": space_id,
        "metadata": metadata,
        "correlationId": body.get("correlationId"),
        "request": {**({"idempotencyKey": key} if key else {}), **request},
    }
    return _created(call, runtime_id, key, fingerprint, data)


@route("POST", "/v1/runtimes/{runtime_id}/invocations", action="create")
async def create_runtime_invocation(call: Call) -> Response:
    """Generation 2: create a durable invocation of one action on a live runtime (202, status queued)."""
    runtime_id = call.request.path_params["runtime_id"]
    _check_runtime(runtime_id)
    body = _action_request(call.json())
    key = call.request.headers.get("idempotency-key") or None
    fingerprint = hashlib.sha256(json.dumps([runtime_id.lower(), body], sort_keys=True, default=str).encode())
    data = {"generation": 2, "action": body["action"], "metadata": body.get("metadata"), "request": body}
    return _created(call, runtime_id, key, fingerprint.hexdigest(), data)


def _check_runtime(*ids: str) -> None:
    """The space and runtime in a path: unknown ones are a 404, the busy runtime a 409."""
    for value in ids:
        if not _UUID.fullmatch(value) or value.lower() == MISSING_ID:
            raise _Fail(404, "Runtime not found", "runtime.not_found",
                        hint="Check the space and runtime ids; list runtimes with GET /v1/spaces/{spaceId}/runtimes")
    if ids[-1].lower() == BUSY_RUNTIME_ID:
        raise _Fail(409, "Runtime is controlled by another client", "runtime.controller_busy",
                    hint="retry after the current controller releases the runtime")


def _created(call: Call, runtime_id: str, key: str | None, fingerprint: str, data: dict[str, Any]) -> Response:
    """202 with a new invocation, or with the one an earlier create with the same idempotency key made."""
    existing = call.idempotent(key)
    if existing is not None:
        if existing.data["fingerprint"] != fingerprint:
            raise _Fail(409, "Idempotency key was already used with a different request", "idempotency.conflict",
                        hint="use a new idempotency key for a different request")
        return _json(_invocation(existing), 202)  # a replay: the invocation the first request created
    sequence = 1 + sum(
        1 for ex in call.engine.executions.values() if ex.vendor == api.name and ex.data["runtimeId"] == runtime_id
    )
    data.update(runtimeId=runtime_id, runId=str(uuid.uuid5(_RUN_NAMESPACE, runtime_id.lower())),
                sequenceNo=sequence, fingerprint=fingerprint)
    return _json(_invocation(call.create(data=data, idempotency_key=key)), 202)


def _action_request(body: Any) -> dict[str, Any]:
    """A generation-2 create body (RuntimeInvocationCreateRequest), checked as bctrl's schema checks it."""
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    if "steps" in body:
        raise _invalid("steps are not part of this request: it runs one action (act, observe, extract, "
                       "stagehandAgent, browserUse or solveCaptcha)", "steps")
    action = body.get("action")
    if action not in _ACTIONS:
        raise _invalid(f"action must be one of {list(_ACTIONS)}", "action")
    instruction = body.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise _invalid("instruction must be a non-empty string", "instruction")
    if instruction is None and (action in _NEEDS_INSTRUCTION or (action == "act" and not body.get("stagehandAction"))):
        raise _invalid(f"{action} needs an instruction", "instruction")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _invalid("metadata must be an object", "metadata")
    timeout = body.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise _invalid("timeoutSeconds must be a positive number", "timeoutSeconds")
    return body


def _steps(steps: Any) -> list[dict[str, Any]]:
    if not isinstance(steps, list) or not steps:
        raise _invalid("steps must be a non-empty array", "steps")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise _invalid("each step must be an object", f"steps[{i}]")
        if not isinstance(step.get("call"), str) or not step["call"].strip():
            raise _invalid("call is required and must be a non-empty string", f"steps[{i}].call")
        if step.get("args") is not None and not isinstance(step["args"], (list, dict)):
            raise _invalid("args must be an array or an object", f"steps[{i}].args")
        for name in ("bind", "ref"):
            if step.get(name) is not None and not isinstance(step[name], str):
                raise _invalid(f"{name} must be a string", f"steps[{i}].{name}")
        options = step.get("options")
        if options is None:
            continue
        if not isinstance(options, dict):
            raise _invalid("options must be an object", f"steps[{i}].options")
        if "dryRun" in options and not isinstance(options["dryRun"], bool):
            raise _invalid("dryRun must be a boolean", f"steps[{i}].options.dryRun")
        timeout = options.get("timeoutMs")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
            raise _invalid("timeoutMs must be a positive integer", f"steps[{i}].options.timeoutMs")
        if options.get("logs") not in (None, "off", "capture"):
            raise _invalid("logs must be 'off' or 'capture'", f"steps[{i}].options.logs")
    return steps


def _idempotency_key(call: Call, body: dict[str, Any]) -> str | None:
    in_body, in_header = body.get("idempotencyKey"), call.request.headers.get("idempotency-key")
    if in_body is not None and (not isinstance(in_body, str) or not in_body.strip() or len(in_body) > 255):
        raise _invalid("idempotencyKey must be a non-empty string of at most 255 characters", "idempotencyKey")
    if in_body and in_header and in_body != in_header:
        raise _invalid("idempotencyKey and the Idempotency-Key header differ", "idempotencyKey")
    return in_body or in_header or None


# -- read, wait, cancel, list ----------------------------------------------------------------------------------
@route("GET", "/v1/invocations/{invocation_id}", action="status")
async def get_invocation(call: Call) -> Response:
    """The invocation; each read is a poll that moves poll-count scenarios forward."""
    return _json(_invocation(_find(call, poll=True)))


@route("POST", "/v1/invocations/{invocation_id}/wait", action="status")
async def wait_invocation(call: Call) -> Response:
    """Long-poll until the invocation is terminal or ``timeoutMs`` (at most 30 s) has passed."""
    body = _object(call.json() or {})
    return await _wait(call, _find(call, poll=True), _positive(body, "timeoutMs", _MAX_WAIT_MS) / 1000)


@route("POST", "/v1/runtimes/{runtime_id}/invocations/{invocation_id}/wait", action="status")
async def wait_runtime_invocation(call: Call) -> Response:
    """Generation 2: long-poll for ``timeoutSeconds`` (at most 30; SDK 0.1.0's ``timeoutMs`` is read too)."""
    body = _object(call.json() or {})
    ex = _find_on_runtime(call, poll=True)
    if "timeoutSeconds" in body or "timeoutMs" not in body:
        return await _wait(call, ex, _positive(body, "timeoutSeconds", _MAX_WAIT_MS / 1000))
    return await _wait(call, ex, _positive(body, "timeoutMs", _MAX_WAIT_MS) / 1000)


async def _wait(call: Call, ex: Execution, seconds: float) -> Response:
    until = time.monotonic() + min(seconds, _MAX_WAIT_MS / 1000)
    while not ex.state.terminal and time.monotonic() < until:
        await asyncio.sleep(min(0.05, max(0.0, until - time.monotonic())))
        ex = _find(call)
    done = ex.state.terminal
    return _json({**_invocation(ex), "waitStatus": "completed" if done else "timeout",
                  **({} if done else {"retryAfterSeconds": 1})})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    return body


def _positive(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise _invalid(f"{name} must be a positive number", name)
    return float(value)


@route("POST", "/v1/invocations/{invocation_id}/cancel", action="cancel")
async def cancel_invocation(call: Call) -> Response:
    """Request cancellation: 200 ``cancelling`` (the next read says ``cancelled``); 409 when already terminal."""
    return _cancel(call, _find(call))


@route("POST", "/v1/runtimes/{runtime_id}/invocations/{invocation_id}/cancel", action="cancel")
async def cancel_runtime_invocation(call: Call) -> Response:
    """Generation 2: request cancellation of an invocation on its runtime (the spec declares no request body)."""
    return _cancel(call, _find_on_runtime(call))


def _cancel(call: Call, ex: Execution) -> Response:
    if not call.cancel(ex, asynchronous=True):
        raise _Fail(409, f"Invocation is already {_status(ex)} and cannot be cancelled", "invocation.not_cancellable",
                    reason="conflict")
    ex.data.setdefault("cancelRequestedAt", time.time())
    return _json(_invocation(ex))


@route("GET", "/v1/runs/{run_id}/invocations", action="list")
async def list_invocations(call: Call) -> Response:
    """A run's invocations, oldest first, with ``status`` filters (repeatable) and cursor pagination."""
    query = call.request.query_params
    statuses = set(query.getlist("status"))
    raw_limit = query.get("limit", str(_PAGE))
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_PAGE:
        raise _invalid(f"limit must be an integer from 1 to {_MAX_PAGE}", "limit")
    cursor = query.get("cursor") or "0"
    if not cursor.isascii() or not cursor.isdigit():
        raise _invalid("cursor is not valid", "cursor")
    start, limit = int(cursor), int(raw_limit)
    run_id = call.request.path_params["run_id"].lower()
    found = [ex for ex in call.engine.find(api.name) if ex.data["runId"] == run_id
             and (not statuses or _status(ex) in statuses)]
    page = found[start:start + limit]
    more = start + limit < len(found)
    return _json({"data": [_summary(ex) for ex in page], "nextCursor": str(start + limit) if more else None})


@route("GET", "/v1/runs/{run_id}/invocations/{invocation_id}", action="status")
async def get_run_invocation(call: Call) -> Response:
    """One invocation of a run (a read, like ``GET /v1/invocations/{id}``)."""
    ex = _find(call, poll=True)
    if ex.data["runId"] != call.request.path_params["run_id"].lower():
        raise _Fail(404, "Invocation not found", "invocation.not_found")
    return _json(_invocation(ex))


def _find(call: Call, *, poll: bool = False) -> Execution:
    ex = call.get(call.request.path_params["invocation_id"], poll=poll)
    if ex is None:
        raise _Fail(404, "Invocation not found", "invocation.not_found")
    return ex


def _find_on_runtime(call: Call, *, poll: bool = False) -> Execution:
    """An invocation addressed under its runtime: another runtime's is not found there."""
    ex = _find(call, poll=poll)
    if ex.data["runtimeId"].lower() != call.request.path_params["runtime_id"].lower():
        raise _Fail(404, "Invocation not found on this runtime", "invocation.not_found")
    return ex


# -- rendering -------------------------------------------------------------------------------------------------
def _status(ex: Execution) -> str:
    if ex.state is State.PENDING:
        return "queued" if ex.polls == 0 else "dispatching"  # the first read sees it being dispatched
    return _WORDS[ex.state]


def _timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _step_ok(ex: Execution, index: int) -> dict[str, Any]:
    step = ex.data["request"]["steps"][index]
    target, _, method = step["call"].rpartition(".")
    done: dict[str, Any] = {
        "call": step["call"],
        "index": index,
        "ok": True,
        "resolved": {"call": step["call"], "contextId": None, "handleId": None, "method": method or step["call"],
                     "pageId": None, "ref": step.get("ref"), "runtimeId": ex.data["runtimeId"],
                     "target": target or "runtime"},
        "result": {"emulated": True, "call": step["call"], "args": step.get("args")},
    }
    if step.get("bind"):
        done["binding"] = {"alias": step["bind"], "id": str(uuid.uuid5(_RUN_NAMESPACE, f"{ex.id}:{index}")),
                           "type": "page"}
    return done


def _step_failed(ex: Execution, index: int) -> dict[str, Any]:
    step = ex.data["request"]["steps"][index]
    timeout = (step.get("options") or {}).get("timeoutMs", 30_000)
    return {
        "call": step["call"],
        "index": index,
        "ok": False,
        "error": {
            "code": "TIMEOUT",
            "message": f"{step['call']} timed out after {timeout} ms (emulated failure)",
            "hint": "Check that the target exists on the page, or raise options.timeoutMs",
            "diagnostic": {"id": f"diag_{ex.id[:8]}_{index}", "call": step["call"], "category": "runtime"},
        },
    }


def _invocation(ex: Execution) -> dict[str, Any]:
    """The Invocation in the shape of the generation that created it."""
    return _action_invocation(ex) if ex.data["generation"] == 2 else _steps_invocation(ex)


def _action_invocation(ex: Execution) -> dict[str, Any]:
    """Generation 2's Invocation: one action, its ``output`` once it succeeded, an ``error`` once it did not."""
    data = ex.data
    output: Any = None
    error: dict[str, Any] | None = None
    if ex.state is State.SUCCEEDED:
        output = {"emulated": True, "action": data["action"], "instruction": data["request"].get("instruction")}
    elif ex.state is State.FAILED:
        error = {"code": "invocation.failed", "message": f"{data['action']} failed: TIMEOUT (emulated failure)",
                 "details": {"hint": "Check that the target exists on the page, or raise timeoutSeconds"}}
    elif ex.state is State.PARTIAL:
        error = {"code": "invocation.timed_out", "message": "Invocation exceeded its timeout",
                 "details": {"timeoutSeconds": data["request"].get("timeoutSeconds")}}
    elif ex.state is State.CANCELLED:
        who = "by another client" if ex.cancelled_by == "remote" else "at the caller's request"
        error = {"code": "invocation.cancelled", "message": f"Invocation was cancelled {who}",
                 "details": {"cancelledBy": "api" if ex.cancelled_by == "api" else "other"}}
    end, begun = ex.finished_at, ex.started_at or ex.created_at
    return {
        "id": ex.id,
        "runId": data["runId"],
        "runtimeId": data["runtimeId"],
        "action": data["action"],
        "status": _status(ex),
        "output": output,
        "error": error,
        "createdAt": _timestamp(ex.created_at),
        "startedAt": _timestamp(ex.started_at),
        "finishedAt": _timestamp(end),
        "durationSeconds": round(end - begun, 3) if end is not None else None,
    }


def _steps_invocation(ex: Execution) -> dict[str, Any]:
    """Generation 1's Invocation: steps, each step's result, progress and the request echoed back."""
    data, steps = ex.data, ex.data["request"]["steps"]
    total, last = len(steps), len(steps) - 1
    status = _status(ex)
    progress: dict[str, Any] | None = {"lastEventType": f"invocation.{status}", "totalSteps": total,
                                       "message": {"queued": "Waiting for the runtime",
                                                   "dispatching": "Dispatching to the runtime"}.get(status)}
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    current = min(max(ex.polls - 2, 0), last)  # running moves one step forward per read
    if ex.state in (State.RUNNING, State.CANCELLING):
        progress = {"currentCall": steps[current]["call"], "lastEventType": "step.started", "step": current + 1,
                    "totalSteps": total, "message": "Cancel requested" if ex.state is State.CANCELLING
                    else f"Running {steps[current]['call']}"}
    elif ex.state is State.SUCCEEDED:
        progress = {"currentCall": steps[last]["call"], "lastEventType": "invocation.succeeded", "step": total,
                    "totalSteps": total, "message": "All steps completed"}
        result = {"mode": data["request"]["mode"], "ok": True, "runtimeId": data["runtimeId"],
                  "steps": [_step_ok(ex, i) for i in range(total)]}
    elif ex.state is State.FAILED:
        progress = {"currentCall": steps[last]["call"], "lastEventType": "step.failed", "step": total,
                    "totalSteps": total, "message": f"{steps[last]['call']} failed"}
        result = {"mode": data["request"]["mode"], "ok": False, "runtimeId": data["runtimeId"],
                  "steps": [*(_step_ok(ex, i) for i in range(last)), _step_failed(ex, last)]}
        error = {"code": "invocation.failed",
                 "message": f"Step {total} of {total} ({steps[last]['call']}) failed: TIMEOUT",
                 "details": {"failedStepIndex": last, "failedCall": steps[last]["call"]}}
    elif ex.state is State.PARTIAL:
        progress = {"currentCall": steps[last]["call"], "lastEventType": "invocation.timed_out", "step": total,
                    "totalSteps": total, "message": "Timed out"}
        result = {"mode": data["request"]["mode"], "ok": False, "runtimeId": data["runtimeId"],
                  "steps": [_step_ok(ex, i) for i in range(last)]}
        error = {"code": "invocation.timed_out",
                 "message": f"Invocation exceeded its timeout after {last} of {total} steps",
                 "details": {"completedSteps": last}}
    elif ex.state is State.CANCELLED:
        progress = {"lastEventType": "invocation.cancelled", "totalSteps": total, "message": "Cancelled"}
        who = "by another client" if ex.cancelled_by == "remote" else "at the caller's request"
        error = {"code": "invocation.cancelled", "message": f"Invocation was cancelled {who}",
                 "details": {"cancelledBy": "api" if ex.cancelled_by == "api" else "other"}}
    if progress is not None:
        progress = {k: v for k, v in progress.items() if v is not None}
    cancel_requested = data.get("cancelRequestedAt")
    if cancel_requested is None and ex.state is State.CANCELLED:
        cancel_requested = ex.finished_at
    end = ex.finished_at
    begun = ex.started_at or ex.created_at
    return {
        "id": ex.id,
        "spaceId": data["spaceId"],
        "runtimeId": data["runtimeId"],
        "runId": data["runId"],
        "runtimeKind": "browser",
        "executionMode": "durable",
        "entryCall": steps[0]["call"],
        "connector": None,
        "correlationId": data.get("correlationId"),
        "sequenceNo": data["sequenceNo"],
        "stepCount": total,
        "artifactCount": 0,
        "status": status,
        "progress": progress,
        "request": data["request"],
        "result": result,
        "error": error,
        "metadata": data.get("metadata"),
        "createdAt": _timestamp(ex.created_at),
        "startedAt": _timestamp(ex.started_at),
        "lastHeartbeatAt": _timestamp(time.time()) if ex.state in (State.RUNNING, State.CANCELLING) else None,
        "cancelRequestedAt": _timestamp(cancel_requested),
        "finishedAt": _timestamp(end),
        "durationMs": int((end - begun) * 1000) if end is not None else None,
    }


def _summary(ex: Execution) -> dict[str, Any]:
    full = _invocation(ex)
    if ex.data["generation"] == 2:
        return {k: full[k] for k in ("id", "runId", "runtimeId", "action", "status", "createdAt", "finishedAt",
                                     "durationSeconds", "error")}
    summary = {k: full[k] for k in ("id", "runId", "runtimeId", "entryCall", "status", "createdAt", "finishedAt",
                                    "error")}
    summary["durationSeconds"] = full["durationMs"] / 1000 if full["durationMs"] is not None else None
    return summary
