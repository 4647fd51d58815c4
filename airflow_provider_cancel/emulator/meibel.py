"""Meibel AI batch executions (docs/meibel.md), served under ``/meibel``.

A client's base URL is ``http://<host>:<port>/meibel`` (it stands for ``https://api.meibel.ai/v2``) and the real
paths follow: ``/batch-definitions/...``, ``/batch-executions/...``. Every path is served with and without a
trailing slash (Meibel's SDKs use both), so no client ever sees a redirect.

Choices where the contract is undocumented ([INF]):
- status words ``pending`` -> ``running`` -> ``completed`` | ``completed_with_errors`` (the ``partial`` outcome) |
  ``failed`` | ``cancelled``; ``end_time`` is set exactly when the execution has ended;
- cancel is asynchronous, as Temporal's is: the cancel answers ``cancelling`` and the next status read shows
  ``cancelled``; cancelling an execution that has ended is a 409 ``{"detail": "..."}``, an unknown id a 404;
- ``total_items`` appears once the execution runs (one item per scenario row, ``rows=R``, default 5), items
  finish at about two a second while it runs, and ``items[]`` is filled when it ends;
- errors: validation failures in the current published shape ``{"message", "detail": [{loc, msg, type}]}``,
  404/409 as FastAPI's ``{"detail": "..."}``, everything else ``{"message": "..."}``.

Scenarios: an ``emulate:`` marker anywhere in the legacy create body (e.g. in ``user_message``) or in the body of
the ``POST /batch-definitions`` that created the definition (e.g. in ``description``). Any other definition id
executes with the default scenario (like any Dune query id), except ``MISSING_DEFINITION_ID``, which is a 404.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from airflow_provider_cancel.emulator.engine import (
    Action,
    ApiError,
    Call,
    Execution,
    Handler,
    State,
    VendorAPI,
)

MISSING_DEFINITION_ID = "00000000-0000-0000-0000-000000000404"
CUSTOMER_ID, PROJECT_ID = "cus_emulator", "prj_emulator"
ITEM_SECONDS = 0.5  # how long the emulated agent takes per data element while an execution runs
DEFAULT_RETRY_LIMIT = 2

_WORDS = {
    State.PENDING: "pending",
    State.RUNNING: "running",
    State.CANCELLING: "cancelling",
    State.SUCCEEDED: "completed",
    State.PARTIAL: "completed_with_errors",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
}
_ITEM_ERROR = "Agent run failed: required field 'total_amount' not found in the document (emulated item failure)"


def _api_key(request: Request) -> str | None:
    key = request.headers.get("meibel-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


def _error(status: int, message: str) -> Response:
    body = {"detail": message} if status in (404, 409) else {"message": message}
    return JSONResponse(body, status_code=status)


api = VendorAPI(
    "meibel",
    api_key=_api_key,
    error=_error,
    new_id=lambda: str(uuid.uuid4()),
    messages={
        401: "Invalid or missing API key. Send it in the Meibel-API-Key header.",
        429: "Rate limit exceeded. Please retry after the number of seconds in Retry-After.",
    },
    rate_limit_headers=True,
    odd_fields={"create": {"workflow_id": 7, "total_items": "lots"}, "status": {"total_items": "lots"}},
)


def route(method: str, path: str, *, action: Action) -> Callable[[Handler], Handler]:
    """Declare a route on both spellings, ``/path`` and ``/path/``."""

    def register(handler: Handler) -> Handler:
        api.route(method, path, action=action)(handler)
        return api.route(method, f"{path}/", action=action)(handler)

    return register


# -- request bodies (validated like Meibel's FastAPI would) -----------------------------------------------------
_Text = Annotated[str, StringConstraints(min_length=1)]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Filters(_Loose):
    regex: str | None = None
    media_types: list[str] | None = None
    element_ids: list[str] | None = None


class _LegacyInput(_Loose):
    datasource_id: _Text
    filters: _Filters | None = None


class _LegacyOutput(_Loose):
    datasource_id: str | None = None


class _LegacyExecution(_Loose):
    concurrency: int | None = Field(default=None, ge=1, le=999)
    retry_limit: int | None = Field(default=None, ge=0, le=999)


class _LegacySpec(_Loose):
    name: _Text
    version: str | int | None = None
    agent: _Text
    user_message: str | None = None
    input: _LegacyInput
    output: _LegacyOutput | None = None
    execution: _LegacyExecution | None = None


class _CreateExecution(BaseModel):
    batch_spec_json: _LegacySpec


class _CreateDefinition(BaseModel):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]
    agent_id: _Text
    input_datasource_id: _Text
    filters: _Filters | None = None
    output_datasource_id: str | None = None
    user_message: str | None = None
    concurrency: int = Field(default=10, ge=1, le=999)
    retry_limit: int = Field(default=DEFAULT_RETRY_LIMIT, ge=0, le=999)
    recurrence_cron: str | None = None
    description: str | None = None
    execution_policy: dict[str, Any] | None = None
    execution_policy_ids: list[str] | None = None


def _validated(model: type[BaseModel], call: Call) -> Any:
    try:
        return model.model_validate(call.json())
    except ValidationError as exc:
        raise _Invalid([_problem(("body", *err["loc"]), err["msg"], err["type"]) for err in exc.errors()]) from None


def _problem(loc: tuple[Any, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


class _Invalid(Exception):
    """A 422 in Meibel's current error shape (ApiError carries only a message)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("validation error")
        self.detail = detail

    def response(self) -> Response:
        return JSONResponse({"message": "Validation error", "detail": self.detail}, status_code=422)


def _answer_422(handler: Handler) -> Handler:
    async def wrapped(call: Call) -> Response:
        try:
            return await handler(call)
        except _Invalid as exc:
            return exc.response()

    wrapped.__name__, wrapped.__doc__ = handler.__name__, handler.__doc__
    return wrapped


# -- batch definitions -------------------------------------------------------------------------------------------
@route("POST", "/batch-definitions", action="other")
@_answer_422
async def create_definition(call: Call) -> Response:
    """Create a batch definition; an ``emulate:`` marker in its body sets the scenario of its executions."""
    request: _CreateDefinition = _validated(_CreateDefinition, call)
    definition_id = str(uuid.uuid4())
    call.store[definition_id] = {
        **request.model_dump(), "id": definition_id, "source": call.body.decode("utf-8", "replace")
    }
    return JSONResponse({
        "id": definition_id,
        "catalog_urn": f"urn:meibel:batch-definition:{CUSTOMER_ID}:{PROJECT_ID}:{definition_id}",
        "name": request.name,
        "version": "1",
    })


@route("POST", "/batch-definitions/id/{definition_id}/execute", action="create")
async def execute_definition(call: Call) -> Response:
    """Execute a batch definition (no body) -> ``{execution_id, workflow_id}``."""
    definition_id = call.request.path_params["definition_id"]
    if definition_id == MISSING_DEFINITION_ID:
        raise ApiError(404, f"Batch definition {definition_id} not found")
    definition = call.store.get(definition_id, {})
    ex = call.create(source=definition.get("source", ""), data={
        "batch_definition_id": definition_id,
        "agent": definition.get("agent_id"),
        "input_datasource_id": definition.get("input_datasource_id"),
        "output_datasource_id": definition.get("output_datasource_id") or str(uuid.uuid4()),
        "retry_limit": definition.get("retry_limit", DEFAULT_RETRY_LIMIT),
        "batch_spec_json": None,
    })
    return JSONResponse({"execution_id": ex.id, "workflow_id": ex.id})


# -- batch executions --------------------------------------------------------------------------------------------
@route("POST", "/batch-executions", action="create")
@_answer_422
async def create_execution(call: Call) -> Response:
    """Legacy create (pre-DEL-1376 shim): ``{"batch_spec_json": {...}}`` -> BatchExecutionResponse."""
    spec: _LegacySpec = _validated(_CreateExecution, call).batch_spec_json
    given = call.json()["batch_spec_json"]
    ex = call.create(data={
        "batch_definition_id": str(uuid.uuid4()),  # the shim creates a definition behind the scenes
        "agent": spec.agent,
        "input_datasource_id": spec.input.datasource_id,
        "output_datasource_id": (spec.output and spec.output.datasource_id) or str(uuid.uuid4()),
        "retry_limit": DEFAULT_RETRY_LIMIT if spec.execution is None or spec.execution.retry_limit is None
        else spec.execution.retry_limit,
        "batch_spec_json": given,
    })
    return JSONResponse(_execution(ex))


@route("GET", "/batch-executions", action="list")
@_answer_422
async def list_executions(call: Call) -> Response:
    """Offset-paged list: ``input_datasource_id``, ``offset``, ``limit``, ``sort_by``, ``sort_order``."""
    query = call.request.query_params
    offset = _query_int(query.get("offset"), "offset", 0, minimum=0)
    limit = _query_int(query.get("limit"), "limit", 20, minimum=1, maximum=100)
    sort_by, order = query.get("sort_by", "start_time"), query.get("sort_order", "desc")
    problems = []
    if sort_by not in ("start_time", "status"):
        problems.append(_problem(("query", "sort_by"), "Input should be 'start_time' or 'status'", "enum"))
    if order not in ("asc", "desc"):
        problems.append(_problem(("query", "sort_order"), "Input should be 'asc' or 'desc'", "enum"))
    if problems:
        raise _Invalid(problems)
    found = [ex for ex in call.engine.find(api.name)
             if query.get("input_datasource_id") in (None, ex.data.get("input_datasource_id"))]
    found.sort(key=(lambda ex: _WORDS[ex.state]) if sort_by == "status" else (lambda ex: ex.created_at),
               reverse=order == "desc")
    return JSONResponse({
        "data": [_execution(ex) for ex in found[offset:offset + limit]],
        "pagination": {"total": len(found), "offset": offset, "limit": limit},
    })


def _query_int(raw: str | None, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.lstrip("-").isdigit()):
        raise _Invalid([_problem(("query", name), "Input should be a valid integer", "int_parsing")])
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        kind, bound = (("greater_than_equal", minimum) if value < minimum else ("less_than_equal", maximum))
        text = kind.replace("_", " ").replace("equal", "equal to")
        raise _Invalid([_problem(("query", name), f"Input should be {text} {bound}", kind)])
    return value


@route("GET", "/batch-executions/id/{execution_id}", action="status")
async def get_execution(call: Call) -> Response:
    """The execution; each read is a poll that moves poll-count scenarios forward."""
    return JSONResponse(_execution(_find(call, poll=True)))


@route("POST", "/batch-executions/id/{execution_id}/cancel", action="cancel")
async def cancel_execution(call: Call) -> Response:
    """Asynchronous cancel: ``cancelling`` now, ``cancelled`` at the next read; 409 once it has ended."""
    ex = _find(call)
    if not call.cancel(ex, asynchronous=True):
        raise ApiError(409, f"Batch execution {ex.id} has already ended ({_WORDS[ex.state]}); nothing to cancel")
    return JSONResponse(_execution(ex))


def _find(call: Call, *, poll: bool = False) -> Execution:
    execution_id = call.request.path_params["execution_id"]
    ex = call.get(execution_id, poll=poll)
    if ex is None:
        raise ApiError(404, f"Batch execution {execution_id} not found")
    return ex


# -- the BatchExecutionResponse ----------------------------------------------------------------------------------
def _execution(ex: Execution) -> dict[str, Any]:
    data, state = ex.data, ex.state
    total = ex.scenario.rows
    body: dict[str, Any] = {
        "id": ex.id,
        "batch_definition_id": data["batch_definition_id"],
        "customer_id": CUSTOMER_ID,
        "project_id": PROJECT_ID,
        "agent_urn": f"urn:meibel:agent:{CUSTOMER_ID}:{PROJECT_ID}:{data['agent']}" if data.get("agent") else None,
        "batch_spec_json": data.get("batch_spec_json"),
        "agent_spec_json": None,
        "input_datasource_id": data.get("input_datasource_id"),
        "output_datasource_id": data["output_datasource_id"],
        "input_overrides": None,
        "total_items": None,
        "succeeded": None,
        "failed": None,
        "start_time": _timestamp(ex.created_at),
        "end_time": _timestamp(ex.finished_at) if ex.finished_at is not None else None,
        "status": _WORDS[state],
        "error": None,
        "items": None,
    }
    if state is State.PENDING:
        return body  # not enumerated yet
    failing = _failing(total) if state in (State.FAILED, State.PARTIAL) else set()
    if state in (State.RUNNING, State.CANCELLING, State.CANCELLED):
        until = ex.finished_at if ex.finished_at is not None else time.time()
        done = min(total - (state is not State.CANCELLED), int((until - ex.created_at) / ITEM_SECONDS))
        done = max(0, done)
    else:
        done = total
    body.update(total_items=total, succeeded=done - len(failing), failed=len(failing))
    if state is State.FAILED:
        body["error"] = (
            f"Batch workflow failed: {len(failing)} of {total} items exhausted their retries (emulated failure)"
            if failing else "Batch workflow failed: the agent could not be started (emulated failure)"
        )
    if state is State.CANCELLED:
        body["error"] = ("Cancelled from the Meibel console" if ex.cancelled_by == "remote"
                         else "Cancelled by API request")
    if state.terminal:
        body["items"] = [_item(ex, n, "failed" if n in failing else "completed" if n < done else "cancelled")
                         for n in range(total)]
    return body


def _failing(total: int) -> set[int]:
    """Which items fail in the fail and partial outcomes: every fourth, and at least one."""
    failing = {n for n in range(total) if n % 4 == 3}
    return failing or ({total - 1} if total else set())


def _item(ex: Execution, n: int, status: str) -> dict[str, Any]:
    element_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ex.id}/{n}"))
    retries = int(ex.data.get("retry_limit", DEFAULT_RETRY_LIMIT))
    return {
        "input_data_element_id": element_id,
        "filename": f"document-{n + 1:04d}.pdf",
        "status": status,
        "error": _ITEM_ERROR if status == "failed" else None,
        "output_artifacts": [{"artifact_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{element_id}/out")),
                              "type": "json"}] if status == "completed" else [],
        "attempts": retries + 1 if status == "failed" else 1 if status == "completed" else 0,
    }


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
