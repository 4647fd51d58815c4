"""The two ways a request leaves: httpx for sync callers (workers), aiohttp for the triggers' event loops."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process, as httpx would build it: loading the CA bundle costs ~20 ms, which the
    fresh client made in on_kill would otherwise pay before its cancel can leave (benchmarks/README.md)."""
    return httpx.create_ssl_context()
