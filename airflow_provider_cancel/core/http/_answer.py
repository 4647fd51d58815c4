"""Reading an answer: its status, its rate-limit headers and its JSON body, into an `Answer` or one clear error."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http._models import Answer, ApiCall, ResponseLike
from airflow_provider_cancel.core.http._ratelimit import parse_rate_limit, parse_retry_after
from airflow_provider_cancel.core.http._transports import ResponseTooLarge

log = logging.getLogger("airflow_provider_cancel.core.http")

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
        return Answer(parse_json(content), rate_limit)
    except Exception as err:  # whatever the bytes were, they are no usable answer (and never a crash)
        what = "not valid JSON" if isinstance(err, ValueError) else f"unreadable ({type(err).__name__})"
        raise error(
            None, f"response (HTTP {status}) is {what}: {snippet(_text(content))!r}", request_id=request_id_of(headers),
        ) from None


# Deeper than any vendor's answer; only documents Python's json cannot read whole are cut there, and only up to
# FORGIVING_MAX_BYTES (a larger one is no usable answer).
MAX_JSON_DEPTH = 100
FORGIVING_MAX_BYTES = 1024 * 1024
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+')  # a string, a run of openers, a run of closers


def parse_json(content: bytes) -> Any:
    """The answer's JSON, with NaN and Infinity read as null. A document json cannot read whole (nested deeper than
    Python's recursion limit, an integer of over 4,300 digits) is read with those values as null, so the fields
    around them (the execution id above all) still come through."""
    text = content.decode(json.detect_encoding(content), "surrogatepass")  # as json.loads decodes bytes
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError):
        if len(content) > FORGIVING_MAX_BYTES:
            raise
    value = _FORGIVING_DECODER.decode(_cut_deeper_than(text, MAX_JSON_DEPTH))
    log.warning("An answer held values too deep or too large to read (%d bytes); they were read as null", len(text))
    return value


def _null(_: str) -> None:
    return None


def _int_or_null(digits: str) -> int | None:
    return int(digits) if len(digits) <= 4300 else None


_DECODER = json.JSONDecoder(parse_constant=_null)
_FORGIVING_DECODER = json.JSONDecoder(parse_constant=_null, parse_int=_int_or_null)


def _cut_deeper_than(text: str, depth_limit: int) -> str:
    """`text` with every array or object nested deeper than `depth_limit` replaced by null (strings skipped whole,
    runs of brackets taken at once: linear in the brackets, fast on the long runs of a nesting attack)."""
    out: list[str] = []
    depth, kept_to, cut_from = 0, 0, -1
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token[0] in "[{":
            if cut_from < 0 and depth + len(token) > depth_limit:
                cut_from = match.start() + depth_limit - depth  # the opener that goes one level too deep
            depth += len(token)
        else:
            if cut_from >= 0 and depth - len(token) <= depth_limit:
                out += (text[kept_to:cut_from], "null")
                kept_to = match.start() + depth - depth_limit  # just past the closer of the cut value
                cut_from = -1
            depth -= len(token)
    out.append(text[kept_to:])
    return "".join(out)


def _json_or_none(content: bytes) -> Any:
    try:
        return parse_json(content) if content else None
    except Exception:
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
    would fetch the same oversized body), a 503 still is; except for an idempotent create, whose answer alone
    names what it started, so it is asked again (its key makes the vendor answer about the same execution)."""
    size = f" of {refused.size:,} bytes" if refused.size is not None else ""
    what = "response" if refused.status_code < 400 else "error response"
    idempotent_create = call.action == "create" and call.retry_safe
    return ExecutionApiError(
        vendor=vendor, method=call.method, path=call.path, status_code=refused.status_code, conn_id=conn_id,
        message=f"{what}{size} is over the {refused.limit:,}-byte limit of this provider (not read)",
        request_id=request_id_of(refused.headers), rate_limit=parse_rate_limit(refused.headers),
        transient=True if idempotent_create else None,
    )
