"""The sync transport: one httpx.Client per ApiClient, redirects never followed, bodies read in bounded chunks, every
attempt held to its deadline.

httpx's read timeout applies to each read, so a server that drips its answer one byte at a time would hold a
request forever. Here every socket operation (connect, TLS handshake, each write and each read) gets at most what
is left of the attempt's deadline: httpcore's public network-backend interface, wrapped.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from typing import Any

import httpcore
import httpx

from airflow_provider_cancel.core.http._config import USER_AGENT, ClientTimeouts
from airflow_provider_cancel.core.http._models import ApiCall, Received
from airflow_provider_cancel.core.http._transports import Body, tls_context

# The monotonic instant the current attempt must be over by; set around each attempt, in the caller's thread.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("attempt_deadline", default=None)


class SyncTransport:
    def __init__(self, base_url: str, timeouts: ClientTimeouts) -> None:
        self._timeouts = timeouts
        self._timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)
        self._client = httpx.Client(
            base_url=base_url,
            transport=_DeadlineTransport(),
            timeout=self._timeout,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def send(self, call: ApiCall, headers: Mapping[str, str], deadline: float | None) -> Received:
        """One attempt, over by `deadline` (monotonic) or the attempt's own limit, whichever comes first."""
        t = self._timeouts
        now = time.monotonic()
        timeout = self._timeout
        if deadline is None or deadline - now >= t.attempt:
            deadline = now + t.attempt
        elif (left := deadline - now) < max(t.read, t.connect):
            timeout = httpx.Timeout(min(t.read, left), connect=min(t.connect, left))
        token = _DEADLINE.set(deadline)
        try:
            request = self._client.build_request(
                call.method, call.path, params=call.params, json=call.json, headers=headers, timeout=timeout
            )
            response = self._client.send(request, stream=True)
            try:
                body = Body(response.status_code, response.headers)
                for chunk in response.iter_bytes():
                    body.add(chunk)
            finally:
                response.close()  # a body not read to its end closes the connection instead of reusing it
            return Received(response.status_code, response.headers, body.content(), response.reason_phrase)
        finally:
            _DEADLINE.reset(token)

    def close(self) -> None:
        self._client.close()


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout`, shortened to what is left of the attempt's deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout), local_address,
                                           socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout),
                                                                 socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (its exception mapping, its pool), over the deadline-keeping network backend."""

    def __init__(self) -> None:
        super().__init__(verify=tls_context())
        # httpx offers no network_backend argument: its pool is rebuilt with httpx.Client's default limits and ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=tls_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )
