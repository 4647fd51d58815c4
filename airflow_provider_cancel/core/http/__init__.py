"""One HTTP layer for every vendor: sync and async, retries, timeouts, answers read one way, one error type.

One concept per module, as httpx lays itself out:

- `_models`: `ApiCall` (a request described without I/O), `ResponseLike`, `Answer` (body and rate limit);
- `_config`: `ClientTimeouts`, `RetryPolicy` and the limits every answer is held to;
- `_ratelimit`: what `Retry-After` and `X-RateLimit-*` say;
- `_errorbody`: the five vendors' error shapes;
- `_answer`: reading an answer into an `Answer` or one clear `ExecutionApiError`;
- `_client`: `ApiClient`, its retry decisions, `is_transient` and `may_have_acted`;
- `_transports`: httpx for sync callers, aiohttp (one session per event loop) for the triggers;
- `_urls`: ids as path segments, and which base URLs a key may be sent to.

Every name other modules use is importable from here.
"""

from airflow_provider_cancel.core.http._answer import read_answer
from airflow_provider_cancel.core.http._client import ApiClient, is_transient, may_have_acted
from airflow_provider_cancel.core.http._config import (
    MAX_RESPONSE_BYTES,
    NO_RETRY,
    RETRYABLE_STATUS,
    USER_AGENT,
    ClientTimeouts,
    RetryPolicy,
)
from airflow_provider_cancel.core.http._errorbody import parse_error_body
from airflow_provider_cancel.core.http._models import Answer, ApiCall, DeadlineExceeded, Received, ResponseLike
from airflow_provider_cancel.core.http._ratelimit import RateLimit, parse_rate_limit, parse_retry_after
from airflow_provider_cancel.core.http._transports import tls_context
from airflow_provider_cancel.core.http._transports.aiohttp_async import shared_async_session
from airflow_provider_cancel.core.http._urls import quote_path_id, url_credentials, validate_base_url

__all__ = [
    "MAX_RESPONSE_BYTES",
    "NO_RETRY",
    "RETRYABLE_STATUS",
    "USER_AGENT",
    "Answer",
    "ApiCall",
    "ApiClient",
    "ClientTimeouts",
    "DeadlineExceeded",
    "RateLimit",
    "Received",
    "ResponseLike",
    "RetryPolicy",
    "is_transient",
    "may_have_acted",
    "parse_error_body",
    "parse_rate_limit",
    "parse_retry_after",
    "quote_path_id",
    "read_answer",
    "shared_async_session",
    "tls_context",
    "url_credentials",
    "validate_base_url",
]
