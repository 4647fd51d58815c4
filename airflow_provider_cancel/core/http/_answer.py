"""Reading an answer: its status, its rate-limit headers and its JSON body, into an `Answer` or one clear error."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http._models import Answer, ApiCall, ResponseLike
from airflow_provider_cancel.core.http._ratelimit import parse_rate_limit, parse_retry_after
from airflow_provider_cancel.core.http._transports import ResponseTooLarge

ErrorParser = Callable[[Any], tuple[str | None, str | None, str | None]]


def read_answer(
    call: ApiCall, response: ResponseLike, *, vendor: str, conn_id: str | None, error_parser: ErrorParser
) -> Answer:
    """The answer to `call`, or the ExecutionApiError that says what was wrong with it."""

    def error(status: int | None, message: str, **kw: Any) -> ExecutionApiError:
        return ExecutionApiError(vendor=vendor, method=call.method, path=call.path, status_code=status,
                                 message=message, conn_id=conn_id, rate_limit=rate_limit, **kw)

    headers = response.headers
    rate_limit = parse_rate_limit(headers)
    status = response.status_code
    if 300 <= status < 400:
        raise error(status, f"unexpected redirect to {headers.get('location')!r}"
                    " (not followed: it could carry the API key to another host)")
    content = response.content
    if status >= 400:
        body = _json_or_none(content)
        code, message, request_id = error_parser(body) if body is not None else (None, None, None)
        if message is None:
            message = snippet(_text(content)) or response.reason_phrase or "error"
        raise error(
            status, message, code=code, request_id=request_id or request_id_of(headers),
            retry_after=parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None,
        )
    if not content:
        return Answer({}, rate_limit)
    try:
        return Answer(json.loads(content), rate_limit)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(
            None, f"response (HTTP {status}) is not valid JSON: {snippet(_text(content))!r}",
            request_id=request_id_of(headers),
        ) from None


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _text(content: bytes) -> str:
    return content.decode("utf-8", "replace")


def snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def request_id_of(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("x-bctrl-request-id")


def too_large(call: ApiCall, refused: ResponseTooLarge, *, vendor: str, conn_id: str | None) -> ExecutionApiError:
    """The error for an answer refused for its size. Its HTTP status stands: a 200 is not transient (asking again
    would fetch the same oversized body), a 503 still is."""
    size = f" of {refused.size:,} bytes" if refused.size is not None else ""
    what = "response" if refused.status_code < 400 else "error response"
    return ExecutionApiError(
        vendor=vendor, method=call.method, path=call.path, status_code=refused.status_code, conn_id=conn_id,
        message=f"{what}{size} is over the {refused.limit:,}-byte limit of this provider (not read)",
        request_id=request_id_of(refused.headers), rate_limit=parse_rate_limit(refused.headers),
    )
