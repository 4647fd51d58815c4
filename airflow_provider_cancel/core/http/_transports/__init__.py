"""The two ways a request leaves: httpx for sync callers (workers), aiohttp for the triggers' event loops."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping

import httpx

from airflow_provider_cancel.core.http import _config


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process, as httpx would build it: loading the CA bundle costs ~20 ms, which the
    fresh client made in on_kill would otherwise pay before its cancel can leave (benchmarks/README.md)."""
    return httpx.create_ssl_context()


class ResponseTooLarge(Exception):
    """An answer refused for its size: by its Content-Length before any of it was read, or once its body (as
    decoded, so a compressed one too) passed the limit. `size` is the declared length, None when unknown."""

    def __init__(self, status_code: int, headers: Mapping[str, str], size: int | None, limit: int) -> None:
        super().__init__(f"answer over the {limit:,}-byte limit")
        self.status_code, self.headers, self.size, self.limit = status_code, headers, size, limit


class Body:
    """An answer's body, collected chunk by chunk and refused as soon as it is over the limit: memory stays
    bounded by the limit whatever the server sends (a 600 MiB Content-Length, an endless chunked stream)."""

    __slots__ = ("_chunks", "_headers", "_limit", "_size", "_status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str]) -> None:
        self._status_code, self._headers = status_code, headers
        self._limit = _config.MAX_RESPONSE_BYTES  # read now: tests lower it
        declared = _declared_size(headers)
        if declared is not None and declared > self._limit:
            raise ResponseTooLarge(status_code, headers, declared, self._limit)
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            self._chunks.clear()
            raise ResponseTooLarge(self._status_code, self._headers, _declared_size(self._headers), self._limit)
        self._chunks.append(chunk)

    def content(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


def _declared_size(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
