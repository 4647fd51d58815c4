"""The async transport: straight on aiohttp, one shared session per event loop and base URL.

httpx's default async transport costs ~15x more CPU per poll at 1,000 pollers, and httpx's models on top of aiohttp
still ~3x more than aiohttp alone (benchmarks/README.md). aiohttp's errors are mapped to httpx's exception types, so
retries and callers see one error vocabulary on both paths. The sessions are closed when their loop shuts down
(asyncio.run, the triggerer, pytest-asyncio). aiohttp is imported on first use, so DAG parsing never pays for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from airflow_provider_cancel.core.http._config import USER_AGENT, ClientTimeouts
from airflow_provider_cancel.core.http._models import ApiCall, Received
from airflow_provider_cancel.core.http._transports import Body, ResponseTooLarge, tls_context

# One loop may poll thousands of executions on one API: allow many parallel connections.
ASYNC_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=512, keepalive_expiry=60)


class AsyncTransport:
    def __init__(self, base_url: str, timeouts: ClientTimeouts) -> None:
        self.base_url = base_url
        self._timeouts = timeouts
        self._timeout: Any = None  # aiohttp.ClientTimeout, built on first use
        self._urls: dict[str, Any] = {}  # path -> yarl.URL: a trigger polls one path thousands of times

    async def send(self, call: ApiCall, headers: Mapping[str, str], deadline: float | None) -> Received:
        """One attempt, over by `deadline` (monotonic) or the attempt's own limit, whichever comes first."""
        timeout = self._client_timeout(deadline)
        session = await shared_async_session(self.base_url)
        try:
            async with session.request(
                call.method,
                self._url(call.path),
                params=_query(call.params),
                json=call.json,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                try:
                    body = Body(response.status, response.headers)
                    async for chunk in response.content.iter_any():
                        body.add(chunk)
                except ResponseTooLarge:
                    response.close()  # not released to the pool with the rest of the body still coming
                    raise
                return Received(response.status, response.headers, body.content(), response.reason or "")
        except Exception as exc:
            mapped = _httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def _client_timeout(self, deadline: float | None) -> Any:
        """What the same settings mean in httpx: pool wait = read timeout, then connect, then read; `total` holds
        the attempt to its deadline (the same one for every attempt without a closer request deadline)."""
        import aiohttp

        t = self._timeouts
        left = t.attempt if deadline is None else min(t.attempt, deadline - time.monotonic())
        if left <= 0:  # aiohttp reads a total of 0 as "no limit"
            raise httpx.ConnectTimeout("the request's deadline passed")
        if left >= t.attempt:
            if self._timeout is None:
                self._timeout = aiohttp.ClientTimeout(
                    total=t.attempt, connect=t.read, sock_connect=t.connect, sock_read=t.read
                )
            return self._timeout
        # Exactly at the deadline: aiohttp rounds timeouts above ceil_threshold up to the next whole second.
        return aiohttp.ClientTimeout(total=left, connect=min(t.read, left), sock_connect=min(t.connect, left),
                                     sock_read=min(t.read, left), ceil_threshold=left + 1)

    def _url(self, path: str) -> Any:
        url = self._urls.get(path)
        if url is None:
            from yarl import URL

            # As is: quote_path_id already percent-encoded the ids, aiohttp must not encode them again.
            url = self._urls[path] = URL(self.base_url + path, encoded=True)
        return url


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


# -- shared sessions -------------------------------------------------------------------------------------------
# Per running loop: its sessions by base URL, and the parked async generator that closes them (see below).
_ASYNC_SESSIONS: dict[asyncio.AbstractEventLoop, tuple[dict[str, Any], AsyncIterator[None]]] = {}


async def shared_async_session(base_url: str) -> Any:
    """The aiohttp session for this event loop and base URL, created on first use.

    No cookie jar: one session serves every connection (and key) on this loop. TLS verification as httpx does it.
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
