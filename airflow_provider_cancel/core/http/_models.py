"""A request described without I/O, and what comes back: the response a transport read, and the answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from airflow_provider_cancel.core.http._ratelimit import RateLimit


@dataclass(frozen=True)
class ApiCall:
    """One request to a vendor API, described without doing I/O, so sync and async share it."""

    method: str
    path: str
    action: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # May this request be sent again after an ambiguous failure (timeout mid-request, 502, 504)?
    # True for reads and cancels; for a create only when it carries an idempotency key.
    retry_safe: bool = True


class ResponseLike(Protocol):
    """What reading an answer needs from a transport's response; an `httpx.Response` is one too."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive in both transports

    @property
    def content(self) -> bytes: ...

    @property
    def reason_phrase(self) -> str: ...


@dataclass(frozen=True)
class Received:
    """A response as a transport read it, body and all."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    reason_phrase: str = ""


@dataclass(frozen=True)
class Answer:
    """A vendor's usable answer: the parsed body, and what it said about our rate budget."""

    body: Any
    rate_limit: RateLimit


class DeadlineExceeded(httpx.TimeoutException):
    """A request that had no usable answer by its deadline. A timeout like any other (retried by the waiter, not
    by the client: there is no time left), whose message says which request and which deadline."""
