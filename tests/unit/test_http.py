"""Narrow logic of the HTTP layer: retry decisions, Retry-After, error shapes, redirects, secrets."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
import respx

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http import (
    ApiCall,
    ApiClient,
    RetryPolicy,
    may_have_acted,
    parse_error_body,
    parse_rate_limit,
    parse_retry_after,
    quote_path_id,
)

BASE = "https://api.example.test"
KEY = "sk-UNIT-SECRET-42"
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.002, max_retry_after=0.05)
STATUS = ApiCall("GET", "/v1/x/status", "status")
CREATE = ApiCall("POST", "/v1/x", "create", json={"a": 1}, retry_safe=False)


def client(retry: RetryPolicy = FAST) -> ApiClient:
    return ApiClient(vendor="Acme", base_url=BASE, auth_headers={"X-Key": KEY}, retry=retry)


@respx.mock
def test_429_with_retry_after_is_retried_and_honoured():
    route = respx.get(f"{BASE}/v1/x/status").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.01"}, json={"error": "slow down"}),
            httpx.Response(429, headers={"Retry-After": "0.01"}, json={"error": "slow down"}),
            httpx.Response(200, json={"ok": True}),
        ]
    )
    waits: list[float] = []
    c = client()
    c.sleep = waits.append
    assert c.request(STATUS) == {"ok": True}
    assert route.call_count == 3
    assert waits == [0.01, 0.01]  # the server's Retry-After, not our own backoff


@respx.mock
def test_give_up_after_counts_real_time_spent(monkeypatch):
    route = respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(503, headers={"Retry-After": "1"}))
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    c = client(RetryPolicy(max_attempts=10, max_retry_after=1.0, give_up_after=2.5))
    c.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds)
    with pytest.raises(ExecutionApiError):
        c.request(STATUS)
    assert route.call_count == 3 and clock[0] == 2.0  # a third wait would end at 3.0 s, past 2.5


@respx.mock
def test_retry_after_is_capped():
    respx.get(f"{BASE}/v1/x/status").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "86400"}), httpx.Response(200, json={})]
    )
    waits: list[float] = []
    c = client()
    c.sleep = waits.append
    c.request(STATUS)
    assert waits == [FAST.max_retry_after]


@respx.mock
@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_retry_reads_but_not_creates(status):
    read = respx.get(f"{BASE}/v1/x/status").mock(
        side_effect=[httpx.Response(status, json={"error": "upstream"}), httpx.Response(200, json={"s": 1})]
    )
    create = respx.post(f"{BASE}/v1/x").mock(return_value=httpx.Response(status, json={"error": "upstream"}))
    c = client()
    c.sleep = lambda s: None
    assert c.request(STATUS) == {"s": 1}
    assert read.call_count == 2
    with pytest.raises(ExecutionApiError) as err:
        c.request(CREATE)
    assert create.call_count == 1  # it may have been created: never sent twice without an idempotency key
    assert err.value.status_code == status


@respx.mock
def test_create_is_retried_when_the_request_provably_never_arrived():
    route = respx.post(f"{BASE}/v1/x").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(429), httpx.Response(202, json={"id": "e1"})]
    )
    c = client()
    c.sleep = lambda s: None
    assert c.request(CREATE) == {"id": "e1"}
    assert route.call_count == 3


@respx.mock
def test_create_read_timeout_is_not_retried():
    route = respx.post(f"{BASE}/v1/x").mock(side_effect=httpx.ReadTimeout("slow"))
    c = client()
    with pytest.raises(httpx.ReadTimeout):
        c.request(CREATE)
    assert route.call_count == 1


@respx.mock
def test_idempotent_create_is_retried_after_a_timeout():
    route = respx.post(f"{BASE}/v1/x").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(202, json={})])
    c = client()
    c.sleep = lambda s: None
    c.request(ApiCall("POST", "/v1/x", "create", headers={"Idempotency-Key": "k"}, retry_safe=True))
    assert route.call_count == 2


@respx.mock
def test_retries_stop_after_max_attempts():
    route = respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(503, json={"error": "down"}))
    c = client()
    c.sleep = lambda s: None
    with pytest.raises(ExecutionApiError) as err:
        c.request(STATUS)
    assert route.call_count == FAST.max_attempts
    assert "HTTP 503" in str(err.value) and "down" in str(err.value)


@respx.mock
def test_client_errors_are_not_retried_and_name_the_request():
    route = respx.get(f"{BASE}/v1/x/status").mock(
        return_value=httpx.Response(404, json={"error": {"code": "not_found", "message": "Execution not found"}},
                                    headers={"x-request-id": "req_9"})
    )
    with pytest.raises(ExecutionApiError) as err:
        client().request(STATUS)
    assert route.call_count == 1
    text = str(err.value)
    assert text == "Acme API GET /v1/x/status -> HTTP 404 not_found: Execution not found (request id req_9)"


@respx.mock
def test_redirect_is_not_followed_and_the_key_goes_nowhere_else():
    elsewhere = respx.get("https://evil.test/steal").mock(return_value=httpx.Response(200, json={}))
    respx.get(f"{BASE}/v1/x/status").mock(
        return_value=httpx.Response(307, headers={"Location": "https://evil.test/steal"})
    )
    with pytest.raises(ExecutionApiError) as err:
        client().request(STATUS)
    assert not elsewhere.called
    assert "redirect" in str(err.value)


@respx.mock
def test_malformed_json_is_a_clear_error_and_retried_for_reads():
    route = respx.get(f"{BASE}/v1/x/status").mock(
        side_effect=[httpx.Response(200, content=b'{"state": "RUN'), httpx.Response(200, json={"state": "ok"})]
    )
    c = client()
    c.sleep = lambda s: None
    assert c.request(STATUS) == {"state": "ok"}
    assert route.call_count == 2
    respx.get(f"{BASE}/v1/y").mock(return_value=httpx.Response(200, content=b"<html>oops"))
    with pytest.raises(ExecutionApiError, match="not valid JSON"):
        client(RetryPolicy(max_attempts=1)).request(ApiCall("GET", "/v1/y", "status"))


@respx.mock
def test_the_key_is_sent_but_never_appears_in_errors_or_repr():
    route = respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(401, json={"error": "bad key"}))
    c = client()
    with pytest.raises(ExecutionApiError) as err:
        c.request(STATUS)
    assert route.calls.last.request.headers["X-Key"] == KEY
    assert KEY not in str(err.value) and KEY not in repr(err.value) and KEY not in repr(c)


@respx.mock
def test_ids_are_encoded_as_one_path_segment():
    route = respx.get(f"{BASE}/v1/a%2F..%3Fb%23c%20d").mock(return_value=httpx.Response(200, json={}))
    client().request(ApiCall("GET", f"/v1/{quote_path_id('a/..?b#c d')}", "status"))
    assert route.called


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "invalid API Key"}, (None, "invalid API Key", None)),
        (
            {"error": {"code": "rate_limit_exceeded", "message": "Daily limit"}},
            ("rate_limit_exceeded", "Daily limit", None),
        ),
        ({"detail": "Execution x not found"}, (None, "Execution x not found", None)),
        ({"detail": [{"loc": ["body", "goal"], "msg": "Field required"}]}, (None, "goal: Field required", None)),
        (
            {"code": 409, "message": "run is not cancellable", "requestId": "abc"},
            ("409", "run is not cancellable", "abc"),
        ),
        (
            {"error": "Runtime not found", "code": "runtime.not_found", "requestId": "r1", "hint": "check the id"},
            ("runtime.not_found", "Runtime not found; hint: check the id", "r1"),
        ),
        ("not a mapping", (None, None, None)),
    ],
)
def test_error_shapes(body, expected):
    assert parse_error_body(body) == expected


def test_retry_after_forms():
    now = time.time()
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31


def test_rate_limit_headers():
    reset = str(int(time.time()) + 60)
    rl = parse_rate_limit(httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}))
    assert rl.exhausted and rl.reset_at > time.time()
    assert parse_rate_limit(httpx.Headers({"X-RateLimit-Reset": "30"})).reset_at > time.time() + 25


IDEMPOTENT_CREATE = ApiCall("POST", "/v1/x", "create", json={"a": 1}, headers={"Idempotency-Key": "k1"})


@respx.mock
@pytest.mark.parametrize(
    ("answers", "acted"),
    [
        ([httpx.ReadTimeout("late"), *[httpx.Response(429)] * 3], True),  # carried out, then only refusals
        ([httpx.Response(502), *[httpx.Response(429)] * 3], True),
        ([httpx.ConnectError("refused"), *[httpx.Response(429)] * 3], False),  # nothing ever reached it
        ([httpx.Response(429)] * 4, False),
        ([httpx.Response(400, json={"error": "bad"})], False),
    ],
)
def test_the_error_a_request_gives_up_with_says_whether_any_attempt_may_have_been_acted_on(answers, acted):
    route = respx.post(f"{BASE}/v1/x").mock(side_effect=answers)
    c = client()
    c.sleep = lambda s: None
    with pytest.raises((ExecutionApiError, httpx.TransportError)) as err:
        c.request(IDEMPOTENT_CREATE)
    assert route.call_count == len(answers)
    assert may_have_acted(err.value) is acted


def test_an_answer_that_came_but_could_not_be_used_was_acted_on():
    def error(status):
        return ExecutionApiError(vendor="Acme", method="POST", path="/v1/x", status_code=status, message="m")

    assert may_have_acted(error(200)) and may_have_acted(error(None)) and may_have_acted(error(503))
    assert not may_have_acted(error(409)) and not may_have_acted(httpx.ConnectTimeout("never opened"))
