"""B3OS workflow runs (docs/b3os.md), served under ``/b3os``.

A client's base URL is ``http://<host>:<port>/b3os`` and the real paths follow (``/v1/...``). Every answer is
the B3OS envelope ``{"code", "data", "message", "requestId"}``; errors carry the app code (400078 invalid run
id, 400079 duplicate run id, 400228 invalid definition, 400229 non-manual trigger) and no ``data``.

Choices where the contract is [INF]: a client-chosen ``runId`` that already exists is refused with 400079
"duplicate run ID" (so it works as an idempotency key); cancel of a finished run is 409 "run is not cancellable";
ids are ``run_`` + 26 characters; ``totalCu`` grows with every status read and freezes at the end.

Special workflow ids: ``wf_missing`` does not exist (404), ``wf_archived`` is archived (400), ``wf_no_cu``
runs out of compute units (402), ``wf_approval`` pauses on a ``wait`` node (status ``waiting``) until its
scenario ends. Any run whose payload has ``"emulate_waiting": N`` is ``waiting`` for its first N status reads.
"""

from __future__ import annotations

import functools
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_cancel.emulator.engine import Action, ApiError, Call, Execution, State, VendorAPI

MISSING_WORKFLOW = "wf_missing"
ARCHIVED_WORKFLOW = "wf_archived"
NO_CU_WORKFLOW = "wf_no_cu"
APPROVAL_WORKFLOW = "wf_approval"

_RUN_ID = re.compile(r"run_\w+", re.ASCII)
_WORKFLOW_ID = re.compile(r"wf_\w+", re.ASCII)
_ORG_ID = re.compile(r"org_\w+", re.ASCII)
_DEFAULT_ORG = "org_emulator"
_STATUS = {
    State.PENDING: "running",  # B3OS has no queued state: a run starts at once
    State.RUNNING: "running",
    State.CANCELLING: "running",  # B3OS cancels synchronously; listed for completeness
    State.SUCCEEDED: "success",
    State.PARTIAL: "success",
    State.FAILED: "failure",
    State.CANCELLED: "cancelled",
}
_FAILURE_RESULT = {"error": "execution reverted: insufficient funds for gas (emulated failure)"}
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_LIST_LIMIT, _LIST_MAX = 20, 100


class B3osError(ApiError):
    """An error answered with an app-specific ``code`` (e.g. 400079) instead of the HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, message)
        self.code = code


def _request_id() -> str:
    return uuid.uuid4().hex[:16]


def _envelope_error(status: int, code: int, message: str) -> Response:
    return JSONResponse({"code": code, "message": message, "requestId": _request_id()}, status_code=status)


def _error(status: int, message: str) -> Response:
    return _envelope_error(status, status, message)


def _ok(data: Any) -> Response:
    return JSONResponse({"code": 200, "data": data, "message": "success", "requestId": _request_id()})


def _api_key(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return (key.strip() or None) if scheme.lower() == "bearer" else None


def _new_run_id() -> str:
    """``run_`` + 26 lowercase Crockford base32 characters (a ULID: time-ordered, then random)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "run_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


api = VendorAPI(
    "b3os",
    api_key=_api_key,
    error=_error,
    new_id=_new_run_id,
    messages={401: "unauthorized: invalid or missing API key", 429: "rate limited"},
    id_param="run_id",
    odd_fields={"create": {"message": 7}, "status": {"message": 7, "data.workflowVersion": "v2"}},
)


def _route(method: str, path: str, *, action: Action) -> Callable[[Callable[[Call], Awaitable[Response]]], Any]:
    """Register a handler whose B3osError becomes the envelope with the app code."""

    def register(handler: Callable[[Call], Awaitable[Response]]) -> Any:
        @functools.wraps(handler)
        async def wrapped(call: Call) -> Response:
            try:
                return await handler(call)
            except B3osError as exc:
                return _envelope_error(exc.status, exc.code, exc.message)

        return api.route(method, path, action=action)(wrapped)

    return register


# -- create ----------------------------------------------------------------------------------------------------


@_route("POST", "/v1/workflows/{workflow_id}/run", action="create")
async def run_workflow(call: Call) -> Response:
    """Run a saved workflow: {payload?, runId?, simulate?, dustTest?, version?, chatMessageId?} -> {runId}."""
    workflow_id = call.request.path_params["workflow_id"]
    body = _body_object(call)
    org = _org(call)
    run_id = _client_run_id(call, body)
    simulate, dust_test = _flag(body, "simulate"), _flag(body, "dustTest")
    if simulate and dust_test:
        raise B3osError(400, 400, "simulate and dustTest are mutually exclusive")
    version = body.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise B3osError(400, 400, "version must be a positive integer")
    payload = _object_field(body, "payload")
    if not _WORKFLOW_ID.fullmatch(workflow_id) or workflow_id == MISSING_WORKFLOW:
        raise B3osError(404, 404, "workflow not found")
    if workflow_id == ARCHIVED_WORKFLOW:
        raise B3osError(400, 400, "workflow is archived")
    if workflow_id == NO_CU_WORKFLOW:
        raise B3osError(402, 402, "Insufficient CU balance")
    approval = workflow_id == APPROVAL_WORKFLOW
    nodes: dict[str, Any] = {
        "root": {"type": "manual", "payload": {}, "children": ["approval" if approval else "fetch_price"]},
        "fetch_price": {"type": "coingecko-get-token-price", "payload": {"symbol": "ETH"}, "children": ["notify"]},
        "notify": {"type": "log", "payload": {"message": "price: {{fetch_price.result.price}}"}, "children": []},
    }
    if approval:
        nodes["approval"] = {"type": "wait", "payload": {"mode": "approval"}, "children": ["fetch_price"]}
    ex = call.create(
        execution_id=run_id,
        data={
            "organizationId": org,
            "workflowId": workflow_id,
            "workflowVersion": version or 1,
            "definition": {"nodes": nodes},
            "payload": payload,
            "propValues": {},
            "isSimulation": simulate,
            "isDustTest": dust_test,
            "waiting_polls": "all" if approval else _waiting_polls(payload),
        },
    )
    return _ok({"runId": ex.id})


@_route("POST", "/v1/runs", action="create")
async def run_definition(call: Call) -> Response:
    """Run an inline (ephemeral) definition: {definition{nodes,...}, payload?, propValues?, runId?} -> {runId}."""
    body = _body_object(call)
    org = _org(call)
    run_id = _client_run_id(call, body)
    definition = body.get("definition")
    if not isinstance(definition, dict) or not isinstance(definition.get("nodes"), dict) or not definition["nodes"]:
        raise B3osError(400, 400228, "invalid definition: definition.nodes must be a non-empty object")
    nodes: dict[str, Any] = definition["nodes"]
    root = nodes.get("root")
    if not isinstance(root, dict):
        raise B3osError(400, 400228, 'invalid definition: a "root" node is required')
    if root.get("type") != "manual":
        raise B3osError(400, 400229, f'root node must be a "manual" trigger, got {root.get("type")!r}')
    for node_id, node in nodes.items():
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise B3osError(400, 400228, f"invalid definition: node {node_id!r} needs a string type")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise B3osError(400, 400228, f"invalid definition: node {node_id!r}: children must be an array")
        for child in children:
            if child not in nodes:
                raise B3osError(400, 400228, f"invalid definition: node {node_id!r} references unknown node {child!r}")
    payload = _object_field(body, "payload")
    ex = call.create(
        execution_id=run_id,
        data={
            "organizationId": org,
            "workflowId": "",
            "workflowVersion": 0,
            "definition": definition,
            "payload": payload,
            "propValues": _object_field(body, "propValues"),
            "isSimulation": False,
            "isDustTest": False,
            "waiting_polls": _waiting_polls(payload),
        },
    )
    return _ok({"runId": ex.id})


def _body_object(call: Call) -> dict[str, Any]:
    body = call.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise B3osError(400, 400, "request body must be a JSON object")
    return body


def _org(call: Call) -> str:
    org = call.request.headers.get("x-org-id")
    if org is None:
        return _DEFAULT_ORG
    if not _ORG_ID.fullmatch(org):
        raise B3osError(403, 403, "missing or invalid organization context")
    return org


def _client_run_id(call: Call, body: dict[str, Any]) -> str | None:
    run_id = body.get("runId")
    if run_id is None or run_id == "":
        return None
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or len(run_id) > 128:
        raise B3osError(400, 400078, "invalid run ID: must match ^run_\\w+$")
    if run_id in call.engine.executions:
        call.execution_id = run_id  # the journal shows which run the refused create was about
        raise B3osError(400, 400079, "duplicate run ID")
    return run_id


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise B3osError(400, 400, f"{name} must be a boolean")
    return value


def _object_field(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise B3osError(400, 400, f"{name} must be an object")
    return value


def _waiting_polls(payload: dict[str, Any]) -> int:
    value = payload.get("emulate_waiting", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# -- status, cancel, lists -------------------------------------------------------------------------------------


@_route("GET", "/v1/runs/{run_id}", action="status")
async def get_run(call: Call) -> Response:
    """The run; ``summary=true`` omits executionState and workflowDefinition, ``nodeIds=a,b`` keeps those nodes."""
    ex = _find(call, poll=True)
    query = call.request.query_params
    summary = query.get("summary", "false").lower() in ("true", "1")
    node_ids = [n for n in query.get("nodeIds", "").split(",") if n] or None
    return _ok(_run(ex, summary=summary, node_ids=node_ids))


@_route("POST", "/v1/runs/{run_id}/cancel", action="cancel")
async def cancel_run(call: Call) -> Response:
    """Cancel a running or waiting run; 409 once it has ended."""
    ex = _find(call)
    if not call.cancel(ex):
        _settle(ex)
        raise B3osError(409, 409, "run is not cancellable")
    return _ok(_run(ex, summary=False))


@_route("GET", "/v1/runs", action="list")
async def list_runs(call: Call) -> Response:
    """Org-wide runs, newest first (``limit``, ``offset``, ``workflowId``); no server-side status filter."""
    workflow_id = call.request.query_params.get("workflowId")
    return _page(call, [ex for ex in call.engine.find(api.name) if workflow_id in (None, ex.data["workflowId"])])


@_route("GET", "/v1/workflows/{workflow_id}/runs", action="list")
async def list_workflow_runs(call: Call) -> Response:
    """One workflow's runs, newest first (``limit``, ``offset``, ``status``)."""
    workflow_id = call.request.path_params["workflow_id"]
    status = call.request.query_params.get("status")
    runs = [ex for ex in call.engine.find(api.name) if ex.data["workflowId"] == workflow_id]
    return _page(call, [ex for ex in runs if status in (None, _status(ex))])


def _page(call: Call, runs: list[Execution]) -> Response:
    limit = min(_int_param(call, "limit", _LIST_LIMIT, minimum=1), _LIST_MAX)
    offset = _int_param(call, "offset", 0, minimum=0)
    runs = runs[::-1]
    items = [_run(ex, summary=True) for ex in runs[offset:offset + limit]]
    for item in items:
        item.pop("propValues", None)
    return _ok({"items": items, "hasMore": offset + limit < len(runs), "limit": limit, "offset": offset})


def _int_param(call: Call, name: str, default: int, *, minimum: int) -> int:
    raw = call.request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise B3osError(400, 400, f"invalid {name} {raw!r}: must be an integer >= {minimum}")
    return int(raw)


def _find(call: Call, *, poll: bool = False) -> Execution:
    ex = call.get(call.request.path_params["run_id"], poll=poll)
    if ex is None:
        raise B3osError(404, 404, "run not found")
    _settle(ex)
    return ex


def _settle(ex: Execution) -> None:
    """Freeze a finished run's progress (node states, totalCu) at the read that first saw it finished."""
    if ex.state.terminal and "end_polls" not in ex.data:
        ex.data["end_polls"] = ex.polls


def _polls(ex: Execution) -> int:
    return int(ex.data.get("end_polls", ex.polls))


def _waiting(ex: Execution) -> bool:
    if ex.state.terminal:
        return False
    waiting = ex.data.get("waiting_polls")
    return waiting == "all" or (isinstance(waiting, int) and ex.polls <= waiting)


def _status(ex: Execution) -> str:
    return "waiting" if _waiting(ex) else _STATUS[ex.state]


def _total_cu(ex: Execution) -> float:
    return round(0.5 + 0.75 * _polls(ex), 2)


def _order(nodes: dict[str, Any]) -> list[str]:
    """Node ids from root, breadth first along children; unreachable nodes last, in definition order."""
    order: list[str] = []
    queue = ["root"] if "root" in nodes else []
    while queue:
        node_id = queue.pop(0)
        if node_id in order or node_id not in nodes:
            continue
        order.append(node_id)
        children = nodes[node_id].get("children") if isinstance(nodes[node_id], dict) else None
        queue.extend(c for c in children or [] if isinstance(c, str))
    return order + [n for n in nodes if n not in order]


def _execution_state(ex: Execution) -> dict[str, dict[str, Any]]:
    nodes: dict[str, Any] = ex.data["definition"]["nodes"]
    order = _order(nodes)
    last = len(order) - 1
    if ex.state in (State.SUCCEEDED, State.PARTIAL):
        statuses = ["success"] * len(order)
    elif ex.state is State.FAILED:  # the last node fails, after the others succeeded
        statuses = ["success"] * last + ["failure"]
    else:
        if _waiting(ex):
            waits = [i for i, n in enumerate(order) if isinstance(nodes[n], dict) and nodes[n].get("type") == "wait"]
            current, now = (waits[0] if waits else min(max(ex.polls, 1), last)), "waiting"
        else:
            current, now = min(max(_polls(ex), 1), last), "running"
        if ex.state is State.CANCELLED:
            now = "skipped"
        rest = "skipped" if ex.state is State.CANCELLED else "pending"
        statuses = ["success"] * current + [now] + [rest] * (last - current)
        if last == 0:
            statuses = ["success" if ex.state is not State.CANCELLED else "skipped"]
    started = _timestamp(ex.created_at)
    state: dict[str, dict[str, Any]] = {}
    for node_id, status in zip(order, statuses, strict=True):
        node = nodes[node_id] if isinstance(nodes[node_id], dict) else {}
        entry: dict[str, Any] = {"type": node.get("type", ""), "status": status}
        if status != "pending":
            entry["startedAt"] = started
        if status == "success":
            entry["finishedAt"] = _timestamp(ex.finished_at or ex.started_at or ex.created_at)
            entry["result"] = ex.data["payload"] if node_id == "root" else {"ok": True, "node": node_id,
                                                                             "output": f"result of {node_id}"}
        elif status == "failure":
            entry["finishedAt"] = _timestamp(ex.finished_at or ex.started_at or ex.created_at)
            entry["input"] = node.get("payload", {})
            entry["result"] = _FAILURE_RESULT
        state[node_id] = entry
    return state


def _run(ex: Execution, *, summary: bool, node_ids: list[str] | None = None) -> dict[str, Any]:
    data = ex.data
    body: dict[str, Any] = {
        "id": ex.id,
        "organizationId": data["organizationId"],
        "workflowId": data["workflowId"],
        "workflowVersion": data["workflowVersion"],
        "status": _status(ex),
        "startedAt": _timestamp(ex.created_at),
        "triggerSource": "api",
        "triggeredBy": "apikey",
        "totalCu": _total_cu(ex),
        "isDustTest": data["isDustTest"],
        "isSimulation": data["isSimulation"],
        "simulationMode": "fork" if data["isSimulation"] else "",
        "simulationForks": (
            [{"chainId": 8453, "forkId": f"fork_{ex.id[4:14]}", "rpcUrl": "http://127.0.0.1:8545"}]
            if data["isSimulation"] else []
        ),
        "sourceRunId": "",
        "propValues": data["propValues"],
    }
    if ex.finished_at is not None:
        body["finishedAt"] = _timestamp(ex.finished_at)
    if not summary:
        state = _execution_state(ex)
        if node_ids is not None:
            state = {k: v for k, v in state.items() if k in node_ids}
        body["executionState"] = state
        body["workflowDefinition"] = data["definition"]
    return body


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
