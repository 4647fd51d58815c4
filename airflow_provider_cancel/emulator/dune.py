"""Dune Analytics query executions (docs/dune.md), served under ``/dune``.

A client's base URL is ``http://<host>:<port>/dune`` and the real paths follow (``/api/v1/...``).
Special query ids: 404404 does not exist, 403403 is archived.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_cancel.emulator.engine import ApiError, Call, Execution, State, VendorAPI

MISSING_QUERY_ID = 404404
ARCHIVED_QUERY_ID = 403403

_STATES = {
    State.PENDING: "QUERY_STATE_PENDING",
    State.RUNNING: "QUERY_STATE_EXECUTING",
    State.CANCELLING: "QUERY_STATE_EXECUTING",  # Dune cancels synchronously; listed for completeness
    State.SUCCEEDED: "QUERY_STATE_COMPLETED",
    State.PARTIAL: "QUERY_STATE_COMPLETED_PARTIAL",
    State.FAILED: "QUERY_STATE_FAILED",
    State.CANCELLED: "QUERY_STATE_CANCELLED",  # double L, as the SDK and the real API spell it
}
_WITH_RESULT = (State.SUCCEEDED, State.PARTIAL)
_FAILURE = {
    "type": "FAILED_TYPE_EXECUTION_FAILED",
    "message": "line 1:8: Column 'x' cannot be resolved (emulated failure)",
    "metadata": {"line": 1, "column": 8},
}
_PERFORMANCE = ("medium", "large")
_RETENTION = 90 * 86400  # results expire 90 days after submission
_PAGE, _MAX_PAGE = 100, 1000
_COLUMNS = {"n": "integer", "label": "varchar"}
_ROW_BYTES = 24  # rough size of one generated row, for the byte counters
_CREDITS = 10
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _api_key(request: Request) -> str | None:
    return request.headers.get("x-dune-api-key") or request.query_params.get("api_key")


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _ulid() -> str:
    """26 Crockford base32 characters: 48-bit millisecond time, then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


api = VendorAPI(
    "dune",
    api_key=_api_key,
    error=_error,
    new_id=_ulid,
    messages={401: "invalid API Key", 429: "Too many requests"},
    odd_fields={"create": {"state": 7}, "status": {"queue_position": "third"}},
)


# -- create ----------------------------------------------------------------------------------------------------


@api.route("POST", "/api/v1/query/{query_id}/execute", action="create")
async def execute_query(call: Call) -> Response:
    """Execute a saved query; query_parameters and performance in the JSON body or the query string."""
    raw_id = call.request.path_params["query_id"]
    query_id = _natural(raw_id)
    if not query_id:
        raise ApiError(400, f"invalid query_id {raw_id!r}: must be a positive integer")
    if query_id == MISSING_QUERY_ID:
        raise ApiError(404, "Object not found")
    if query_id == ARCHIVED_QUERY_ID:
        raise ApiError(403, "Not allowed to execute query. Query is archived, unsaved or not enough permissions")
    body = _body_object(call)
    params = body.get("query_parameters")
    if params is None and "query_parameters" in call.request.query_params:
        try:
            params = json.loads(call.request.query_params["query_parameters"])
        except ValueError:
            raise ApiError(400, "query_parameters must be a JSON object") from None
    if params is not None and not isinstance(params, dict):
        raise ApiError(400, "query_parameters must be a JSON object")
    data = {"query_id": query_id, "performance": _performance(call, body), "query_parameters": params or {}}
    return _started(call.create(data=data))


@api.route("POST", "/api/v1/sql/execute", action="create")
async def execute_sql(call: Call) -> Response:
    """Execute raw SQL; the execution reports query_id 0."""
    body = _body_object(call)
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise ApiError(400, "sql is required and must be a non-empty string")
    return _started(call.create(data={"query_id": 0, "performance": _performance(call, body), "sql": sql}))


def _body_object(call: Call) -> dict[str, Any]:
    body = call.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _performance(call: Call, body: dict[str, Any]) -> str:
    performance = body.get("performance") or call.request.query_params.get("performance") or "medium"
    if performance not in _PERFORMANCE:
        raise ApiError(400, f"invalid performance {performance!r}: must be 'medium' or 'large'")
    return str(performance)


def _started(ex: Execution) -> Response:
    return JSONResponse({"execution_id": ex.id, "state": _STATES[ex.state]})


# -- status, results, cancel -----------------------------------------------------------------------------------


@api.route("GET", "/api/v1/execution/{execution_id}/status", action="status")
async def status(call: Call) -> Response:
    """Status of an execution; each call is a poll that moves poll-count scenarios forward."""
    ex = _find(call, poll=True)
    body = _state_fields(ex)
    if ex.state in _WITH_RESULT:
        body["result_metadata"] = _metadata(ex, page_rows=ex.scenario.rows)
    return JSONResponse(body)


@api.route("GET", "/api/v1/execution/{execution_id}/results", action="result")
async def results(call: Call) -> Response:
    """A page of generated rows (`{"n": i, "label": "row i"}`), or just the state while there is no result."""
    ex, page = _page(call, "results")
    body = _state_fields(ex)
    if page is None:
        return JSONResponse(body)
    body["result"] = {"rows": page.rows, "metadata": _metadata(ex, page_rows=len(page.rows), columns=page.columns)}
    if page.next_uri is not None:
        body["next_offset"], body["next_uri"] = page.next_offset, page.next_uri
    return JSONResponse(body)


@api.route("GET", "/api/v1/execution/{execution_id}/results/csv", action="result")
async def results_csv(call: Call) -> Response:
    """The same page as CSV (a header line, then the rows); the next page in ``x-dune-next-uri``/``-offset``."""
    ex, page = _page(call, "results/csv")
    if page is None:
        raise ApiError(400, f"Execution {ex.id} has no result yet (state {_STATES[ex.state]})")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=page.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(page.rows)
    headers = {}
    if page.next_uri is not None:
        headers = {"x-dune-next-offset": str(page.next_offset), "x-dune-next-uri": page.next_uri}
    return Response(text.getvalue(), media_type="text/csv", headers=headers)


@dataclass(frozen=True)
class _Page:
    rows: list[dict[str, Any]]
    columns: list[str]
    next_offset: int | None = None
    next_uri: str | None = None  # absolute, on the host the client called, with the same paging options


def _page(call: Call, route: str) -> tuple[Execution, _Page | None]:
    """The execution and the page it asks for (JSON and CSV page alike), or None before there is a result."""
    ex = _find(call)
    query = call.request.query_params
    limit = min(_int_param(call, "limit", _PAGE, minimum=1), _MAX_PAGE)  # the server shrinks big pages
    offset = _int_param(call, "offset", 0, minimum=0)
    allow_partial = query.get("allow_partial_results", "false").lower() in ("true", "1")
    if ex.state is State.PARTIAL and not allow_partial:
        raise ApiError(400, "Partial Result, please request with 'allow_partial_results=true'")
    if ex.state not in _WITH_RESULT:
        return ex, None
    total = ex.scenario.rows
    columns = [c for c in query.get("columns", "").split(",") if c in _COLUMNS] or list(_COLUMNS)
    rows = [{c: v for c, v in _row(n).items() if c in columns} for n in range(offset, min(offset + limit, total))]
    if offset + limit >= total:
        return ex, _Page(rows, columns)
    follow: dict[str, str | int] = {"offset": offset + limit, "limit": limit}
    for name in ("columns", "allow_partial_results"):
        if name in query:
            follow[name] = query[name]
    return ex, _Page(rows, columns, offset + limit,
                     f"{call.base_url}/api/v1/execution/{ex.id}/{route}?{urlencode(follow)}")


@api.route("POST", "/api/v1/execution/{execution_id}/cancel", action="cancel")
async def cancel(call: Call) -> Response:
    """Cancel: success true if the execution was still running, false if it had already ended."""
    return JSONResponse({"success": call.cancel(_find(call))})


def _find(call: Call, *, poll: bool = False) -> Execution:
    ex = call.get(call.request.path_params["execution_id"], poll=poll)
    if ex is None:
        raise ApiError(404, "Object not found")
    return ex


def _int_param(call: Call, name: str, default: int, *, minimum: int) -> int:
    raw = call.request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = _natural(raw)
    if value is None or value < minimum:
        raise ApiError(400, f"invalid {name} {raw!r}: must be an integer >= {minimum}")
    return value


def _natural(text: str) -> int | None:
    """A non-negative decimal integer, or None (str.isdigit alone would accept digits int() rejects)."""
    return int(text) if text.isascii() and text.isdigit() else None


def _state_fields(ex: Execution) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execution_id": ex.id,
        "query_id": ex.data["query_id"],
        "state": _STATES[ex.state],
        "is_execution_finished": ex.state.terminal,
        "submitted_at": _timestamp(ex.created_at),
        "expires_at": _timestamp(ex.created_at + _RETENTION),
    }
    if ex.state is State.PENDING:
        body["queue_position"] = 1
    if ex.started_at is not None:
        body["execution_started_at"] = _timestamp(ex.started_at)
    if ex.finished_at is not None:
        body["execution_ended_at"] = _timestamp(ex.finished_at)
        body["execution_cost_credits"] = _CREDITS
    if ex.state is State.CANCELLED and ex.finished_at is not None:
        body["cancelled_at"] = _timestamp(ex.finished_at)
    if ex.state is State.FAILED:
        body["error"] = _FAILURE
    return body


def _row(n: int) -> dict[str, Any]:
    return {"n": n, "label": f"row {n}"}


def _metadata(ex: Execution, *, page_rows: int, columns: list[str] | None = None) -> dict[str, Any]:
    columns = columns or list(_COLUMNS)
    started = ex.started_at or ex.created_at
    return {
        "column_names": columns,
        "column_types": [_COLUMNS[c] for c in columns],
        "row_count": page_rows,
        "result_set_bytes": page_rows * _ROW_BYTES,
        "total_row_count": ex.scenario.rows,
        "total_result_set_bytes": ex.scenario.rows * _ROW_BYTES,
        "datapoint_count": page_rows * len(columns),
        "pending_time_millis": int((started - ex.created_at) * 1000),
        "execution_time_millis": int(((ex.finished_at or started) - started) * 1000),
    }


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
