"""One HTTP layer for every vendor: sync and async httpx, retries, timeouts and one error type.

Design notes (why, not what):
- Auth headers are passed per request and never set on a client, so a shared async client can serve
  many connections, and a key can never ride along on a redirect (redirects are not followed at all).
- A request that may have created something remotely is only retried when it is idempotent (it
  carries the vendor's idempotency key) or when the failure proves the server did not act on it
  (the connection never opened, or a 429 rejection).
- Async requests (the triggers' polls) go straight to one aiohttp session per event loop and base URL:
  httpx's default async transport costs ~15x more CPU per poll at 1,000 pollers, and httpx's models on
  top of aiohttp still ~3x more than aiohttp alone (benchmarks/README.md). aiohttp's errors are mapped to
  httpx's exception types, so retries and callers see one error vocabulary on both paths. The sessions
  are closed when their loop shuts down (asyncio.run, the triggerer, pytest-asyncio).
- Retries are a plain loop that computes a back-off only after a failure: no per-request machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from airflow_provider_cancel import __version__
from airflow_provider_cancel.core.errors import ExecutionApiError, ProviderConfigError

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-cancel/{__version__}"
# 500 too: vendors answer it for passing failures; like 502/504 it is retried only when retry_safe.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# A status or result page this large is not a vendor answer we can use (and would bloat memory and XCom).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Failures where the request provably never reached the vendor's application.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_TRANSPORT_ERRORS = (httpx.TransportError,)


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


@dataclass(frozen=True)
class RetryPolicy:
    """JSON-serializable, so it survives the trip into a trigger unchanged."""

    max_attempts: int = 6
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    # Seconds from the first attempt: no retry is sent after this (a kill's cancel has ~5 s before SIGKILL).
    give_up_after: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        return cls(**data) if data else cls()


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class ClientTimeouts:
    connect: float = 10.0
    read: float = 30.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)


@dataclass(frozen=True)
class RateLimit:
    """What the vendor said about our remaining budget on its latest response."""

    remaining: int | None = None
    reset_at: float | None = None  # epoch seconds
    retry_after: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def quote_path_id(value: str) -> str:
    """Percent-encode an id for use as one path segment (a `/`, `?` or `#` stays inside it)."""
    if _UNRESERVED.fullmatch(value):  # most ids: nothing to encode (a poll builds this every time)
        return value
    return urllib.parse.quote(value, safe="")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date. None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_NO_RATE_LIMIT = RateLimit()  # immutable: one shared instance when a vendor sends no rate-limit headers


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit:
    remaining = _number(headers.get("x-ratelimit-remaining"))
    reset = _number(headers.get("x-ratelimit-reset"))
    retry_after = headers.get("retry-after")
    if remaining is None and reset is None and not retry_after:
        return _NO_RATE_LIMIT
    # Vendors send an epoch timestamp; some send seconds-until-reset. A small number is the latter.
    if reset is not None and reset < 1e9:
        reset = time.time() + reset
    return RateLimit(
        remaining=None if remaining is None else int(remaining),
        reset_at=reset,
        retry_after=parse_retry_after(retry_after),
    )


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _first_text(*candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


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


def is_transient(exc: BaseException, *, retry_safe: bool = True) -> bool:
    """Could the same request succeed if sent again later?"""
    if isinstance(exc, ExecutionApiError):
        if exc.status_code == 429:
            return True
        if exc.status_code in RETRYABLE_STATUS or exc.status_code is None:
            return retry_safe
        return False
    if isinstance(exc, _NOT_SENT):
        return True
    if isinstance(exc, _TRANSPORT_ERRORS):
        return retry_safe
    return False


class ApiClient:
    """One vendor API at one base URL, with one key. Holds no secret in any client object."""

    def __init__(
        self,
        *,
        vendor: str,
        base_url: str,
        auth_headers: Mapping[str, str],
        timeouts: ClientTimeouts | None = None,
        retry: RetryPolicy | None = None,
        error_parser: Callable[[Any], tuple[str | None, str | None, str | None]] = parse_error_body,
        conn_id: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.conn_id = conn_id  # named in every error, so a user knows which connection to fix
        self.base_url = base_url.rstrip("/")
        self._auth_headers = dict(auth_headers)
        self.timeouts = timeouts or ClientTimeouts()
        self.retry = retry or RetryPolicy()
        self._error_parser = error_parser
        self._sync: httpx.Client | None = None
        self._async_timeout: Any = None  # aiohttp.ClientTimeout, built on first async use
        self._urls: dict[str, Any] = {}  # path -> yarl.URL: a trigger polls one path thousands of times
        self.rate_limit = RateLimit()
        # How sync retries wait; an operator swaps in a sleep that a kill interrupts.
        self.sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:  # never show headers
        return f"ApiClient(vendor={self.vendor!r}, base_url={self.base_url!r})"

    def with_options(self, *, timeouts: ClientTimeouts | None = None, retry: RetryPolicy | None = None) -> ApiClient:
        """A fresh client over the same settings: for on_kill, which must not share a busy connection."""
        return ApiClient(
            vendor=self.vendor,
            base_url=self.base_url,
            auth_headers=self._auth_headers,
            timeouts=timeouts or self.timeouts,
            retry=retry or self.retry,
            error_parser=self._error_parser,
            conn_id=self.conn_id,
        )

    # -- sync ------------------------------------------------------------------------------------------
    def _sync_client(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(
                base_url=self.base_url,
                verify=tls_context(),
                timeout=self.timeouts.httpx(),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._sync

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def request(self, call: ApiCall) -> Any:
        attempt, started = 1, time.monotonic()
        while True:
            try:
                with self._naming(call):
                    response = self._sync_client().request(
                        call.method,
                        call.path,
                        params=call.params,
                        json=call.json,
                        headers={**call.headers, **self._auth_headers},
                    )
                return self._handle(call, response)
            except Exception as exc:
                delay = self._retry_delay(call, exc, attempt, time.monotonic() - started)
                if delay is None:
                    raise
            attempt += 1
            self.sleep(delay)

    # -- async -----------------------------------------------------------------------------------------
    async def arequest(self, call: ApiCall) -> Any:
        attempt, started = 1, time.monotonic()
        while True:
            try:
                with self._naming(call):
                    return await self._asend(call)
            except Exception as exc:
                delay = self._retry_delay(call, exc, attempt, time.monotonic() - started)
                if delay is None:
                    raise
            attempt += 1
            await asyncio.sleep(delay)

    async def _asend(self, call: ApiCall) -> Any:
        session = await shared_async_session(self.base_url)
        if self._async_timeout is None:
            import aiohttp

            # What the same settings mean in httpx: pool wait = read timeout, then connect, then read.
            self._async_timeout = aiohttp.ClientTimeout(
                total=None, connect=self.timeouts.read, sock_connect=self.timeouts.connect,
                sock_read=self.timeouts.read,
            )
        try:
            async with session.request(
                call.method,
                self._url(call.path),
                params=_query(call.params),
                json=call.json,
                headers={**call.headers, **self._auth_headers},
                allow_redirects=False,
                timeout=self._async_timeout,
            ) as response:
                raw = RawResponse(response.status, response.headers, await response.read(), response.reason)
        except Exception as exc:
            mapped = _httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return self._handle(call, raw)

    def _url(self, path: str) -> Any:
        url = self._urls.get(path)
        if url is None:
            from yarl import URL

            # As is: quote_path_id already percent-encoded the ids, aiohttp must not encode them again.
            url = self._urls[path] = URL(self.base_url + path, encoded=True)
        return url

    # -- shared ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _naming(self, call: ApiCall) -> Iterator[None]:
        """A transport error (bad host, refused, timed out) keeps its type, which retry decisions rely on, and
        gains a note naming the request and the connection."""
        try:
            yield
        except httpx.TransportError as err:
            connection = f" (connection {self.conn_id!r})" if self.conn_id else ""
            err.add_note(f"while calling {self.vendor} API{connection} {call.method} {self.base_url}{call.path}")
            raise

    def _retry_delay(self, call: ApiCall, exc: Exception, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before sending `call` again after failed attempt number `attempt`, `elapsed` seconds
        after the first one; None: give up.

        Retry-After when the vendor sent one, else exponential back-off plus jitter of up to the back-off itself
        (at most 1 s), so clients that failed together do not come back together."""
        policy = self.retry
        if attempt >= policy.max_attempts or not is_transient(exc, retry_safe=call.retry_safe):
            return None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = min(float(retry_after), policy.max_retry_after)
        else:
            backoff = policy.initial_backoff * 2 ** (attempt - 1)
            delay = min(backoff + random.uniform(0, min(backoff, 1.0)), policy.max_backoff)
        if policy.give_up_after is not None and elapsed + delay > policy.give_up_after:
            return None
        log.warning(
            "%s %s %s failed (attempt %d/%d): %s; retrying in %.1fs",
            self.vendor, call.method, call.path, attempt, policy.max_attempts, _describe(exc), delay,
        )
        return delay

    def _handle(self, call: ApiCall, response: httpx.Response | RawResponse) -> Any:
        self.rate_limit = parse_rate_limit(response.headers)
        status = response.status_code
        if 300 <= status < 400:
            raise self._error(call, status, f"unexpected redirect to {response.headers.get('location')!r}"
                              " (not followed: it could carry the API key to another host)")
        if status >= 400:
            body = _json_or_none(response)
            code, message, request_id = self._error_parser(body) if body is not None else (None, None, None)
            if message is None:
                message = _snippet(response.text) or response.reason_phrase or "error"
            raise self._error(
                call, status, message, code=code,
                request_id=request_id or _request_id(response.headers),
                retry_after=parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None,
            )
        if not response.content:
            return {}
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise self._error(  # a 200: not transient, retrying would fetch the same oversized body
                call, status, f"response of {len(response.content):,} bytes is over the {MAX_RESPONSE_BYTES:,}-byte "
                "limit of this provider", request_id=_request_id(response.headers),
            )
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._error(
                call, None, f"response (HTTP {status}) is not valid JSON: {_snippet(response.text)!r}",
                request_id=_request_id(response.headers),
            ) from None

    def _error(self, call: ApiCall, status: int | None, message: str, **kw: Any) -> ExecutionApiError:
        return ExecutionApiError(
            vendor=self.vendor, method=call.method, path=call.path, status_code=status, message=message,
            conn_id=self.conn_id, **kw
        )


class RawResponse:
    """The part of a response `_handle` reads, filled straight from aiohttp on the async path."""

    __slots__ = ("content", "headers", "reason_phrase", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes, reason: str | None) -> None:
        self.status_code, self.headers, self.content, self.reason_phrase = status_code, headers, content, reason or ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query values rendered as httpx renders them (True -> "true", None -> ""), for aiohttp."""
    if not params:
        return None
    return {
        key: "true" if value is True else "false" if value is False else "" if value is None else str(value)
        for key, value in params.items()
    }


def _httpx_error(exc: BaseException) -> httpx.TransportError | None:
    """aiohttp's failure as the httpx exception that says the same about whether the request was sent."""
    import aiohttp

    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS: never sent
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # no connection (pool wait or connect) in time
        return httpx.ConnectTimeout(message)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):  # may have been acted on: retried only if retry_safe
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    return None


def _json_or_none(response: httpx.Response | RawResponse) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("x-bctrl-request-id")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, ExecutionApiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process, as httpx would build it: loading the CA bundle costs ~20 ms, which the
    fresh client made in on_kill would otherwise pay before its cancel can leave (benchmarks/README.md)."""
    return httpx.create_ssl_context()


# -- shared async sessions -----------------------------------------------------------------------------
# Per running loop: its sessions by base URL, and the parked async generator that closes them (see below).
_ASYNC_SESSIONS: dict[asyncio.AbstractEventLoop, tuple[dict[str, Any], AsyncIterator[None]]] = {}
# One loop may poll thousands of executions on one API: allow many parallel connections.
ASYNC_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=512, keepalive_expiry=60)


async def shared_async_session(base_url: str) -> Any:
    """The aiohttp session for this event loop and base URL, created on first use.

    aiohttp is imported here, not at module import, so DAG parsing never pays for it. No cookie jar: one
    session serves every connection (and key) on this loop. TLS verification as httpx does it.
    """
    loop = asyncio.get_running_loop()
    entry = _ASYNC_SESSIONS.get(loop)
    if entry is None:
        sessions: dict[str, Any] = {}
        closer = _close_at_loop_shutdown(loop, sessions)
        entry = _ASYNC_SESSIONS[loop] = (sessions, closer)
        await anext(closer)  # first iterated inside the loop, so the loop's shutdown_asyncgens() will close it
    sessions = entry[0]
    session = sessions.get(base_url)
    if session is None or session.closed:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=ASYNC_LIMITS.max_connections or 0, keepalive_timeout=ASYNC_LIMITS.keepalive_expiry, ssl=tls_context()
        )
        session = sessions[base_url] = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, cookie_jar=aiohttp.DummyCookieJar()
        )
    return session


async def _close_at_loop_shutdown(loop: asyncio.AbstractEventLoop, sessions: dict[str, Any]) -> AsyncIterator[None]:
    """Parked for the loop's lifetime; asyncio has no shutdown hook, but asyncio.run (and the triggerer and
    `airflow dags test`, which use it) close every live async generator before closing the loop. Without
    this the sessions outlive their loop and aiohttp warns "Unclosed client session" at exit."""
    try:
        yield
    finally:
        _ASYNC_SESSIONS.pop(loop, None)
        for session in sessions.values():
            await session.close()


def validate_base_url(url: str, *, conn_id: str, allow_insecure: bool) -> str:
    """Refuse URLs that would send an API key in clear text off this machine."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ProviderConfigError(
            f"Connection {conn_id!r}: host {url!r} is not an http(s) URL (expected e.g. https://api.example.com)"
        )
    if parsed.scheme == "http" and not allow_insecure and not _is_loopback(parsed.hostname):
        raise ProviderConfigError(
            f"Connection {conn_id!r}: host {url!r} uses plain http to a non-loopback address, which would "
            "send the API key unencrypted. Use https, or set extra {\"allow_insecure_http\": true} to accept it."
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
