"""The client: one vendor API at one base URL with one key, its one retry policy, and the sync and async drivers.

- Auth headers are passed per request and never set on a transport, so a shared async session can serve many
  connections, and a key can never ride along on a redirect (redirects are not followed at all).
- A request that may have created something remotely is only retried when it is idempotent (it carries the
  vendor's idempotency key) or when the failure proves the server did not act on it (the connection never
  opened, or a 429 rejection).
- The retry decisions live in `_Attempts`; `send` and `asend` only drive them (sleeping their own way), as httpx
  drives its auth flows. A back-off is computed only after a failure: no per-request machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http._answer import ErrorParser, read_answer, too_large
from airflow_provider_cancel.core.http._config import RETRYABLE_STATUS, ClientTimeouts, RetryPolicy
from airflow_provider_cancel.core.http._errorbody import parse_error_body
from airflow_provider_cancel.core.http._models import Answer, ApiCall, DeadlineExceeded, ResponseLike
from airflow_provider_cancel.core.http._transports import ResponseTooLarge
from airflow_provider_cancel.core.http._transports.aiohttp_async import AsyncTransport
from airflow_provider_cancel.core.http._transports.httpx_sync import SyncTransport
from airflow_provider_cancel.core.redact import scrub

log = logging.getLogger("airflow_provider_cancel.core.http")

# Failures where the request provably never reached the vendor's application.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def is_transient(exc: BaseException, *, retry_safe: bool = True) -> bool:
    """Could the same request succeed if sent again later?"""
    if isinstance(exc, ExecutionApiError):
        if exc.transient is not None:
            return exc.transient
        if exc.status_code == 429:
            return True
        if exc.status_code in RETRYABLE_STATUS or exc.status_code is None:
            return retry_safe
        return False
    if isinstance(exc, _NOT_SENT):
        return True
    if isinstance(exc, httpx.TransportError):
        return retry_safe
    return False


def may_have_acted(exc: BaseException) -> bool:
    """Could the vendor have acted on the request that failed with `exc`, in its last attempt or an earlier one?
    Only a refusal (a 4xx, 429 included) or a connection that never opened proves an attempt did nothing; an
    answer that came but could not be read (a 2xx too large or cut short) proves it did."""
    return getattr(exc, _ACTED_MARK, False) or _attempt_may_have_acted(exc)


_ACTED_MARK = "airflow_provider_cancel_an_attempt_may_have_acted"  # set on the error a request gave up with


def _attempt_may_have_acted(exc: BaseException) -> bool:
    if isinstance(exc, ExecutionApiError):
        return not (exc.status_code is not None and 400 <= exc.status_code < 500)
    return not isinstance(exc, _NOT_SENT)


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
        error_parser: ErrorParser = parse_error_body,
        conn_id: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.conn_id = conn_id  # named in every error, so a user knows which connection to fix
        self.base_url = base_url.rstrip("/")
        self._auth_headers = dict(auth_headers)
        self.timeouts = timeouts or ClientTimeouts()
        self.retry = retry or RetryPolicy()
        self._error_parser = error_parser
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None
        # How sync retries wait; an operator swaps in a sleep that a kill interrupts.
        self.sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:  # never show headers
        return f"ApiClient(vendor={self.vendor!r}, base_url={self.base_url!r})"

    def with_options(self, *, timeouts: ClientTimeouts | None = None, retry: RetryPolicy | None = None) -> ApiClient:
        """A fresh client over the same settings: for on_kill, which must not share a busy connection. Close it."""
        return ApiClient(
            vendor=self.vendor,
            base_url=self.base_url,
            auth_headers=self._auth_headers,
            timeouts=timeouts or self.timeouts,
            retry=retry or self.retry,
            error_parser=self._error_parser,
            conn_id=self.conn_id,
        )

    def close(self) -> None:
        """Close the sync connection pool (the async sessions are shared per loop and closed with it)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -- sync ------------------------------------------------------------------------------------------
    def request(self, call: ApiCall, *, deadline: float | None = None) -> Any:
        """The parsed body of the answer to `call`."""
        return self.send(call, deadline=deadline).body

    def send(self, call: ApiCall, *, deadline: float | None = None) -> Answer:
        """The answer to `call` (body and rate limit), after the retries the policy allows, all of it over by
        `deadline` (a `time.monotonic()` instant; default: `retry.give_up_after` from now, if set)."""
        attempts = _Attempts(self, call, deadline)
        while True:
            try:
                with self._naming(call):
                    if self._sync is None:
                        self._sync = SyncTransport(self.base_url, self.timeouts)
                    return self._read(call, self._sync.send(call, self._headers(call), attempts.deadline()))
            except Exception as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
            self.sleep(delay)

    # -- async -----------------------------------------------------------------------------------------
    async def arequest(self, call: ApiCall, *, deadline: float | None = None) -> Any:
        """The parsed body of the answer to `call`."""
        return (await self.asend(call, deadline=deadline)).body

    async def asend(self, call: ApiCall, *, deadline: float | None = None) -> Answer:
        """`send`, for an event loop."""
        attempts = _Attempts(self, call, deadline)
        while True:
            try:
                with self._naming(call):
                    if self._async is None:
                        self._async = AsyncTransport(self.base_url, self.timeouts)
                    return self._read(call, await self._async.send(call, self._headers(call), attempts.deadline()))
            except Exception as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    # -- shared ----------------------------------------------------------------------------------------
    def _headers(self, call: ApiCall) -> dict[str, str]:
        return {**call.headers, **self._auth_headers}

    def _read(self, call: ApiCall, response: ResponseLike) -> Answer:
        return read_answer(call, response, vendor=self.vendor, conn_id=self.conn_id, error_parser=self._error_parser)

    @contextlib.contextmanager
    def _naming(self, call: ApiCall) -> Iterator[None]:
        """A transport error (bad host, refused, timed out) keeps its type, which retry decisions rely on, and
        gains a note naming the request and the connection; an answer refused for its size becomes the error that
        says so."""
        try:
            yield
        except httpx.TransportError as err:
            self._note(err, call)
            raise
        except ResponseTooLarge as refused:
            raise too_large(call, refused, vendor=self.vendor, conn_id=self.conn_id) from None

    def _note(self, err: BaseException, call: ApiCall) -> None:
        """Name the request and the connection; the transport's own text is scrubbed of secrets."""
        err.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in err.args)
        connection = f" (connection {self.conn_id!r})" if self.conn_id else ""
        err.add_note(scrub(f"while calling {self.vendor} API{connection} {call.method} {self.base_url}{call.path}"))


class _Attempts:
    """The retry decisions for one request: its deadline, and after a failed attempt, wait how long or give up?"""

    __slots__ = ("_acted", "_call", "_client", "_deadline", "_number", "_started")

    def __init__(self, client: ApiClient, call: ApiCall, deadline: float | None) -> None:
        self._client, self._call = client, call
        self._number, self._started = 1, time.monotonic()
        self._acted = False  # may an attempt so far have been acted on? Told with the error the request gives up
        budget = client.retry.give_up_after
        if budget is not None:
            deadline = min(deadline, self._started + budget) if deadline is not None else self._started + budget
        self._deadline = deadline

    def deadline(self) -> float | None:
        """The deadline of the next attempt; DeadlineExceeded when none is left (nothing is sent then)."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise self._exceeded()
        return self._deadline

    def _exceeded(self) -> DeadlineExceeded:
        tries = f"{self._number} attempt{'s' if self._number > 1 else ''}"
        exceeded = DeadlineExceeded(
            f"{self._client.vendor} {self._call.method} {self._call.path}: no answer by the request's deadline "
            f"(after {time.monotonic() - self._started:.1f}s and {tries})"
        )
        self._client._note(exceeded, self._call)
        if self._acted:
            setattr(exceeded, _ACTED_MARK, True)
        return exceeded

    def retry_delay(self, exc: Exception) -> float | None:
        """Seconds to wait before sending the call again; None: give up (DeadlineExceeded: out of time). The
        error given up with says whether any attempt may have been acted on (`may_have_acted`): a create that
        timed out after the vendor acted and then met only 429s did start something."""
        self._acted = self._acted or _attempt_may_have_acted(exc)
        delay = self._delay(exc)
        if delay is None and self._acted:
            setattr(exc, _ACTED_MARK, True)
        return delay

    def _delay(self, exc: Exception) -> float | None:
        """Retry-After when the vendor sent one, else exponential back-off plus jitter of up to the back-off itself
        (at most 1 s), so clients that failed together do not come back together. No wait ends past the deadline."""
        client, call, attempt = self._client, self._call, self._number
        now = time.monotonic()
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, DeadlineExceeded) and (
            self._deadline is not None and now >= self._deadline
        ):
            raise self._exceeded() from exc
        policy = client.retry
        if attempt >= policy.max_attempts or not is_transient(exc, retry_safe=call.retry_safe):
            return None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = min(float(retry_after), policy.max_retry_after)
        else:
            backoff = policy.initial_backoff * 2 ** (attempt - 1)
            delay = min(backoff + random.uniform(0, min(backoff, 1.0)), policy.max_backoff)
        if self._deadline is not None and now + delay >= self._deadline:
            return None
        log.warning(
            "%s %s %s failed (attempt %d/%d): %s; retrying in %.1fs",
            client.vendor, call.method, call.path, attempt, policy.max_attempts, _describe(exc), delay,
        )
        self._number += 1
        return delay


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExecutionApiError):
        return str(exc)
    return scrub(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__
