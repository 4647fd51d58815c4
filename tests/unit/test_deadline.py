"""Narrow logic of the one request deadline: what each attempt gets of it, and when the retry loop stops."""

from __future__ import annotations

import time

import httpx
import pytest
import respx

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http import ApiCall, ApiClient, ClientTimeouts, DeadlineExceeded, RetryPolicy
from airflow_provider_cancel.core.http._transports.aiohttp_async import AsyncTransport

BASE = "https://api.example.test"
STATUS = ApiCall("GET", "/v1/x/status", "status")


def client(**kw) -> ApiClient:
    return ApiClient(vendor="Acme", base_url=BASE, auth_headers={"X-Key": "k"}, **kw)


@respx.mock
def test_each_attempt_gets_at_most_what_is_left_of_the_deadline():
    seen: list[dict] = []
    respx.get(f"{BASE}/v1/x/status").mock(
        side_effect=lambda request: seen.append(request.extensions["timeout"]) or httpx.Response(200, json={}))
    c = client(timeouts=ClientTimeouts(connect=10, read=30))
    c.request(STATUS)
    c.request(STATUS, deadline=time.monotonic() + 1.0)
    assert seen[0] == {"connect": 10, "read": 30, "write": 30, "pool": 30}  # no deadline: the phases as set
    assert 0.5 < seen[1]["read"] <= 1.0 and 0.5 < seen[1]["connect"] <= 1.0 and seen[1]["pool"] <= 1.0


@respx.mock
def test_a_passed_deadline_sends_nothing():
    route = respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(200, json={}))
    with pytest.raises(DeadlineExceeded, match="no answer by the request's deadline") as err:
        client().request(STATUS, deadline=time.monotonic() - 1)
    assert not route.called
    assert "while calling Acme API GET https://api.example.test/v1/x/status" in err.value.__notes__


@respx.mock
def test_no_back_off_ends_past_the_deadline(monkeypatch):
    route = respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(503, headers={"Retry-After": "1"}))
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    c = client(retry=RetryPolicy(max_attempts=10))
    c.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds)
    with pytest.raises(ExecutionApiError) as err:
        c.request(STATUS, deadline=102.5)
    assert route.call_count == 3 and clock[0] == 102.0 and err.value.status_code == 503


@respx.mock
def test_the_closer_of_the_callers_deadline_and_give_up_after_wins(monkeypatch):
    respx.get(f"{BASE}/v1/x/status").mock(return_value=httpx.Response(503))
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    c = client(retry=RetryPolicy(max_attempts=100, initial_backoff=1, max_backoff=1, give_up_after=10))
    c.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds)
    with pytest.raises(ExecutionApiError):
        c.request(STATUS, deadline=4.0)
    assert clock[0] < 4.0
    clock[0] = 0.0
    with pytest.raises(ExecutionApiError):
        c.request(STATUS, deadline=50.0)
    assert clock[0] < 10.0


@respx.mock
def test_a_timeout_at_the_deadline_is_one_clear_deadline_error():
    respx.get(f"{BASE}/v1/x/status").mock(side_effect=lambda request: time.sleep(0.3) or (_ for _ in ()).throw(
        httpx.ReadTimeout("slow", request=request)))
    with pytest.raises(DeadlineExceeded, match=r"Acme GET /v1/x/status: no answer by the request's deadline") as err:
        client(retry=RetryPolicy(initial_backoff=0.01)).request(STATUS, deadline=time.monotonic() + 0.2)
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


async def test_the_async_attempt_timeout_is_the_deadline_exactly():
    transport = AsyncTransport(BASE, ClientTimeouts(connect=10, read=30))
    default = transport._client_timeout(None)
    assert default is transport._client_timeout(None)  # built once: a poll without a close deadline pays nothing
    assert (default.total, default.connect, default.sock_connect, default.sock_read) == (70, 30, 10, 30)
    near = transport._client_timeout(time.monotonic() + 7.0)
    assert 6.5 < near.total <= 7.0 and near.sock_read == near.total and near.sock_connect <= near.total
    assert near.ceil_threshold > near.total  # aiohttp would otherwise round 7 s up to the next whole second
    with pytest.raises(httpx.ConnectTimeout):
        transport._client_timeout(time.monotonic() - 0.1)
