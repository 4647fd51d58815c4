"""izieroma, the hosted ROMA API (docs/izieroma.md: the GitBook contract), served under ``/izieroma``.

A client's base URL is ``http://<host>:<port>/izieroma`` and the real paths follow (``/api/v1/...``).
Put the scenario marker in the goal or in the metadata (``{"emulate": "fail:3"}``).

Choices where the contract is silent [INF]: a new execution reports ``pending`` on its first poll (upstream
ROMA's state; GitBook lists only running), then ``running`` with a growing ``progress`` and a
``current_step``; a cancel of a finished run is 400 ``invalid_operation`` "...in {status} state" for every
terminal status; a replayed idempotency key answers the original 202 body; webhooks are not sent; the 10
concurrent executions of the free tier are not enforced. ``X-RateLimit-*`` headers come with every answer
once a rate limit is set (``--rate-limit izieroma=1000/day``, the free tier).
"""

from __future__ import annotations

import functools
import secrets
import string
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_cancel.emulator.engine import ApiError, Call, Execution, State, VendorAPI

API = "/api/v1/executions"
IDEMPOTENCY_WINDOW = 24 * 3600

_STATUS = {
    State.PENDING: "pending",
    State.RUNNING: "running",
    State.CANCELLING: "running",  # ROMA cancels synchronously; listed for completeness
    State.SUCCEEDED: "completed",
    State.PARTIAL: "completed",  # ROMA has no partial result
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
}
_DONE = (State.SUCCEEDED, State.PARTIAL)
_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          429: "rate_limit_exceeded", 500: "internal_error", 502: "service_unavailable",
          503: "service_unavailable", 504: "service_unavailable"}
_PROFILES = ("general", "high_quality", "fast", "crypto_agent")
_OVERRIDES = ("temperature", "max_tokens", "model")
_STEPS = ("Planning: decomposing the goal into subtasks", "Executing subtasks with agents",
          "Aggregating subtask results")
_ALPHABET = string.ascii_lowercase + string.digits
_TOKENS = 1250


def _api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key")


def _request_id() -> str:
    return "req_" + secrets.token_hex(6)


def _error(status: int, message: str, *, code: str | None = None, details: Any = None) -> Response:
    code = code or _CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    body = {"error": {"code": code, "message": message, "details": details or {}}, "request_id": _request_id()}
    return JSONResponse(body, status_code=status)


def _new_id() -> str:
    return "exec_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


api = VendorAPI(
    "izieroma",
    api_key=_api_key,
    error=_error,
    new_id=_new_id,
    messages={401: "Invalid or revoked API key", 429: "Rate limit exceeded"},
    rate_limit_headers=True,
    odd_fields={"create": {"status": 7}, "status": {"completed_tasks": "many"}},
)


class Refused(ApiError):
    """An error answer with ROMA's own code and details (ApiError alone carries status and message)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(status, message)
        self.code, self.details = code, details


def _invalid(field: str, issue: str, message: str) -> Refused:
    return Refused(400, "invalid_request", message, {"field": field, "issue": issue})


def _answers_refusals(handler: Any) -> Any:
    @functools.wraps(handler)
    async def wrapper(call: Call) -> Response:
        try:
            return await handler(call)  # type: ignore[no-any-return]
        except Refused as exc:
            return _error(exc.status, exc.message, code=exc.code, details=exc.details)

    return wrapper


def _ok(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse({**body, "request_id": _request_id()}, status_code=status)


# -- create ----------------------------------------------------------------------------------------------------


@api.route("POST", API, action="create")
@_answers_refusals
async def create_execution(call: Call) -> Response:
    """Start an execution; X-Idempotency-Key replays the original answer for 24 h."""
    key = call.request.headers.get("x-idempotency-key") or None
    earlier = call.idempotent(key)
    if earlier is not None and time.time() - earlier.created_at < IDEMPOTENCY_WINDOW:
        return _ok(_created(earlier), 202)
    data = _validated(call.json())
    return _ok(_created(call.create(data=data, idempotency_key=key)), 202)


def _validated(body: Any) -> dict[str, Any]:
    if body is None:
        raise _invalid("goal", "missing_required_field", "The 'goal' field is required")
    if not isinstance(body, dict):
        raise Refused(400, "invalid_request", "The request body must be a JSON object")
    goal = body.get("goal")
    if goal is None:
        raise _invalid("goal", "missing_required_field", "The 'goal' field is required")
    if not isinstance(goal, str) or not goal.strip() or len(goal) > 10_000:
        raise _invalid("goal", "invalid_value", "The 'goal' field must be a non-blank string of 1-10000 characters")
    depth = body.get("max_depth", 3)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 10:
        raise _invalid("max_depth", "out_of_range", "The 'max_depth' field must be an integer between 1 and 10")
    profile = body.get("config_profile", "general")
    if profile not in _PROFILES:
        raise _invalid("config_profile", "invalid_value",
                       f"The 'config_profile' field must be one of: {', '.join(_PROFILES)}")
    overrides = body.get("config_overrides") or {}
    if not isinstance(overrides, dict) or set(overrides) - set(_OVERRIDES):
        raise _invalid("config_overrides", "invalid_value",
                       f"The 'config_overrides' field accepts only the keys: {', '.join(_OVERRIDES)}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > 10 or not all(
        isinstance(v, str) and 1 <= len(k) <= 50 and 1 <= len(v) <= 500 for k, v in metadata.items()
    ):
        raise _invalid("metadata", "invalid_value",
                       "The 'metadata' field allows at most 10 pairs, keys of 1-50 and values of 1-500 characters")
    return {"goal": goal, "max_depth": depth, "config_profile": profile, "config_overrides": overrides,
            "metadata": metadata}


def _created(ex: Execution) -> dict[str, Any]:
    """The create answer, as it was when the execution was made (replayed as is for its idempotency key)."""
    return {
        "execution_id": ex.id,
        "status": _STATUS[State.PENDING],
        "initial_goal": ex.data["goal"],
        "config_profile": ex.data["config_profile"],
        "max_depth": ex.data["max_depth"],
        "created_at": _timestamp(ex.created_at),
        "updated_at": _timestamp(ex.created_at),
    }


# -- list ------------------------------------------------------------------------------------------------------


@api.route("GET", API, action="list")
@_answers_refusals
async def list_executions(call: Call) -> Response:
    """Executions, newest first by default; filters status, profile, created_after/before; limit/offset."""
    query = call.request.query_params
    limit = _int_param(query.get("limit"), "limit", 20, 1, 100)
    offset = _int_param(query.get("offset"), "offset", 0, 0, None)
    sort = query.get("sort", "created_at")
    order = query.get("order", "desc")
    if sort not in ("created_at", "updated_at", "status"):
        raise _invalid("sort", "invalid_value", "The 'sort' parameter must be created_at, updated_at or status")
    if order not in ("asc", "desc"):
        raise _invalid("order", "invalid_value", "The 'order' parameter must be asc or desc")
    after, before = _time_param(query.get("created_after"), "created_after"), _time_param(
        query.get("created_before"), "created_before")
    status, profile = query.get("status"), query.get("profile")
    found = [
        ex for ex in call.engine.find(api.name)
        if status in (None, _STATUS[ex.state]) and profile in (None, ex.data["config_profile"])
        and (after is None or ex.created_at >= after) and (before is None or ex.created_at <= before)
    ]
    keys = {"created_at": lambda ex: ex.created_at, "updated_at": _updated, "status": lambda ex: _STATUS[ex.state]}
    found.sort(key=keys[sort], reverse=order == "desc")
    page = found[offset:offset + limit]
    return _ok({
        "data": [_summary(ex) for ex in page],
        "pagination": {"total": len(found), "limit": limit, "offset": offset,
                       "has_more": offset + len(page) < len(found)},
    })


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < low or (high is not None and int(raw) > high):
        span = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _invalid(name, "out_of_range", f"The '{name}' parameter must be an integer {span}")
    return int(raw)


def _time_param(raw: str | None, name: str) -> float | None:
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(name, "invalid_format", f"The '{name}' parameter must be an ISO-8601 timestamp") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _summary(ex: Execution) -> dict[str, Any]:
    body = {"execution_id": ex.id, "status": _STATUS[ex.state], "initial_goal": ex.data["goal"],
            "config_profile": ex.data["config_profile"], "created_at": _timestamp(ex.created_at)}
    if ex.state in _DONE and ex.finished_at is not None:
        body["completed_at"] = _timestamp(ex.finished_at)
    return body


# -- status, details, dag, cancel ------------------------------------------------------------------------------


@api.route("GET", API + "/{execution_id}/status", action="status")
@_answers_refusals
async def get_status(call: Call) -> Response:
    """Lightweight poll; each call moves poll-count scenarios forward."""
    ex = _find(call, poll=True)
    body: dict[str, Any] = {"execution_id": ex.id, "status": _STATUS[ex.state], "progress": _progress(ex)}
    if not ex.state.terminal:
        body["current_step"] = _step(ex)
    body["updated_at"] = _timestamp(_updated(ex))
    body.update(_ending(ex))
    return _ok(body)


@api.route("GET", API + "/{execution_id}", action="result")
@_answers_refusals
async def get_execution(call: Call) -> Response:
    """The full execution: goal, settings, result, DAG and timestamps."""
    ex = _find(call)
    body: dict[str, Any] = {
        "execution_id": ex.id,
        "status": _STATUS[ex.state],
        "initial_goal": ex.data["goal"],
        "config_profile": ex.data["config_profile"],
        "max_depth": ex.data["max_depth"],
        "dag": _dag(ex),
        "metadata": ex.data["metadata"],
        "created_at": _timestamp(ex.created_at),
        "updated_at": _timestamp(_updated(ex)),
    }
    ending = _ending(ex)
    if ex.state in _DONE:
        body["result"] = ending["result"]
        body["metadata"] = ending["metadata"]
    body.update({k: v for k, v in ending.items() if k.endswith("_at")})
    return _ok(body)


@api.route("GET", API + "/{execution_id}/dag", action="other")
@_answers_refusals
async def get_dag(call: Call) -> Response:
    """The task-decomposition DAG: nodes, depends_on edges, stats."""
    ex = _find(call)
    return _ok({"execution_id": ex.id, "dag": _dag(ex)})


@api.route("POST", API + "/{execution_id}/cancel", action="cancel")
@_answers_refusals
async def cancel_execution(call: Call) -> Response:
    """Cancel a pending or running execution; 400 invalid_operation once it has ended."""
    ex = _find(call)
    if not call.cancel(ex):
        raise Refused(400, "invalid_operation", f"Cannot cancel execution in {_STATUS[ex.state]} state")
    assert ex.finished_at is not None
    return _ok({"execution_id": ex.id, "status": _STATUS[ex.state], "cancelled_at": _timestamp(ex.finished_at)})


def _find(call: Call, *, poll: bool = False) -> Execution:
    ex = call.get(call.request.path_params["execution_id"], poll=poll)
    if ex is None:
        raise Refused(404, "not_found", "Execution not found")
    return ex


# -- what an execution looks like ------------------------------------------------------------------------------


def _progress(ex: Execution) -> int:
    """0 while pending, 100 once completed; in between it grows with polls (or time) and stops at its end."""
    if ex.state in _DONE:
        return 100
    if ex.state is State.PENDING or (ex.state is State.CANCELLED and ex.started_at is None):
        return 0
    scenario = ex.scenario
    if scenario.seconds is not None and scenario.seconds > 0:
        fraction = ((ex.finished_at or time.time()) - ex.created_at) / scenario.seconds
    elif scenario.outcome == "forever":
        fraction = 1 - 1 / (1 + ex.polls / 4)
    else:
        fraction = ex.polls / (scenario.polls + 1)
    return max(1, min(95, int(fraction * 100)))


def _step(ex: Execution) -> str:
    if ex.state is State.PENDING:
        return "Queued"
    return _STEPS[min(len(_STEPS) - 1, _progress(ex) * len(_STEPS) // 100)]


def _updated(ex: Execution) -> float:
    return ex.finished_at or ex.started_at or ex.created_at


def _ending(ex: Execution) -> dict[str, Any]:
    """What a status or detail answer adds once the execution has ended."""
    if ex.finished_at is None:
        return {}
    at = _timestamp(ex.finished_at)
    if ex.state in _DONE:
        started = ex.started_at or ex.created_at
        metadata: dict[str, Any] = {"execution_time": round(ex.finished_at - started, 3), "tokens_used": _TOKENS,
                                    "agent_calls": 4}
        if ex.data["metadata"]:
            metadata["user_metadata"] = ex.data["metadata"]
        return {"result": f"Emulated ROMA answer to: {ex.data['goal'][:200]}", "metadata": metadata,
                "completed_at": at}
    if ex.state is State.FAILED:
        return {"error": {"code": "execution_error", "message": "Task execution failed",
                          "details": "Subtask 'Executing subtasks with agents' raised an error (emulated failure)"},
                "failed_at": at}
    return {"cancelled_at": at}


def _dag(ex: Execution) -> dict[str, Any]:
    """A fixed plan -> two executors -> aggregate DAG whose node statuses follow the execution."""
    progress = _progress(ex)
    done_upto = len(_STEPS) if ex.state in _DONE else progress * len(_STEPS) // 100
    kinds = [("task_0", "plan"), ("task_1", "execute"), ("task_2", "execute"), ("task_3", "aggregate")]
    stage = {"task_0": 0, "task_1": 1, "task_2": 1, "task_3": 2}
    nodes = []
    for node_id, kind in kinds:
        if stage[node_id] < done_upto:
            status = "completed"
        elif stage[node_id] == done_upto and ex.state in (State.RUNNING, State.FAILED):
            status = "failed" if ex.state is State.FAILED else "running"
        else:
            status = "pending"
        nodes.append({"id": node_id, "type": kind, "status": status, "input": ex.data["goal"][:100],
                      "output": f"output of {node_id}" if status == "completed" else None,
                      "started_at": _timestamp(ex.started_at) if ex.started_at and status != "pending" else None,
                      "completed_at": _timestamp(ex.finished_at or time.time()) if status == "completed" else None})
    edges = [{"from": a, "to": b, "type": "depends_on"}
             for a, b in (("task_0", "task_1"), ("task_0", "task_2"), ("task_1", "task_3"), ("task_2", "task_3"))]
    stats = {"total_nodes": len(nodes), "completed_nodes": sum(n["status"] == "completed" for n in nodes),
             "failed_nodes": sum(n["status"] == "failed" for n in nodes), "total_edges": len(edges)}
    return {"nodes": nodes, "edges": edges, "stats": stats}


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
