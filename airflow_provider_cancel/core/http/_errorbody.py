"""The error bodies of the five vendors, read into (code, message, request id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def parse_error_body(body: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from any of the vendors' error shapes.

    Shapes seen across the five vendors: {"error": "text"}; {"error": {"code", "message", "request_id"}};
    {"detail": "text"} and FastAPI's {"detail": [{"loc", "msg"}]}; {"code", "message", "requestId"}
    (B3OS, where code may be a number); {"message", "detail": [...]}; {"error", "code", "hint"} (bctrl).
    """
    if not isinstance(body, Mapping):
        return None, None, None
    err = body.get("error")
    nested = err if isinstance(err, Mapping) else {}
    detail = body.get("detail")
    detail_text = None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        detail_text = "; ".join(parts) or None
    elif isinstance(detail, str):
        detail_text = detail
    message = _first_text(nested.get("message"), err, body.get("message"), detail_text)
    if message and detail_text and detail_text != message:
        message = f"{message} ({detail_text})"
    hint = _first_text(body.get("hint"), nested.get("hint"))
    if message and hint:
        message = f"{message}; hint: {hint}"
    raw_code = nested.get("code", body.get("code"))
    code = str(raw_code) if isinstance(raw_code, (str, int)) and not isinstance(raw_code, bool) else None
    request_id = _first_text(
        nested.get("request_id"), body.get("request_id"), body.get("requestId"), nested.get("requestId")
    )
    return code, message, request_id


def _first_text(*candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
