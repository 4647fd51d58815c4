"""API keys (--api-key), secrets kept out of the journal, and rate limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess

SECRET = "sk-SECRET-123"
OTHER = "sk-OTHER-456"
WRONG = "sk-WRONG-789"


@pytest.fixture(scope="module")
def emulator_args() -> list[str]:
    return ["--api-key", SECRET, "--api-key", OTHER]


@pytest.fixture
def http(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url("dune"), timeout=10) as client:
        yield client


def execute(http: httpx.Client, key: str | None, *, in_query: bool = False) -> httpx.Response:
    headers = {"X-Dune-Api-Key": key} if key is not None and not in_query else {}
    params = {"api_key": key, "performance": "medium"} if in_query and key is not None else {}
    return http.post("/api/v1/query/42/execute", json={"query_parameters": {"note": SECRET}},
                     headers=headers, params=params)


def test_only_configured_keys_are_accepted(http: httpx.Client, control: EmulatorClient) -> None:
    assert execute(http, SECRET).status_code == 200
    assert execute(http, OTHER, in_query=True).status_code == 200
    for key in (None, "", WRONG):
        response = execute(http, key)
        assert response.status_code == 401 and response.json() == {"error": "invalid API Key"}
    wrong_in_query = execute(http, WRONG, in_query=True)
    assert wrong_in_query.status_code == 401
    assert [e["auth"] for e in control.journal()] == ["ok", "ok", "missing", "missing", "invalid", "invalid"]
    assert len(control.executions()) == 2


def test_bad_auth_changes_nothing(http: httpx.Client, control: EmulatorClient) -> None:
    execution_id = execute(http, SECRET).json()["execution_id"]
    assert http.post(f"/api/v1/execution/{execution_id}/cancel", headers={"X-Dune-Api-Key": WRONG}).status_code == 401
    assert http.get(f"/api/v1/execution/{execution_id}/status").status_code == 401
    record = control.execution(execution_id)
    assert (record["state"], record["polls"], record["cancel_requests"]) == ("pending", 0, 0)
    (cancel,) = control.cancels(execution_id)
    assert (cancel["auth"], cancel["status_code"]) == ("invalid", 401)


def test_no_secret_reaches_the_journal(http: httpx.Client, control: EmulatorClient) -> None:
    execution_id = execute(http, SECRET).json()["execution_id"]
    execute(http, SECRET, in_query=True)
    execute(http, WRONG)
    execute(http, WRONG, in_query=True)
    http.get(f"/api/v1/execution/{execution_id}/status", params={"api_key": SECRET})
    http.get(f"/api/v1/execution/{execution_id}/results", params={"api_key": WRONG, "limit": 3})
    http.post("/api/v1/sql/execute", json={"sql": f"SELECT '{SECRET}'"}, headers={"x-dune-api-key": SECRET})
    entries = control.journal()
    assert len(entries) == 7
    dumped = json.dumps(entries)
    for secret in (SECRET, WRONG, "SECRET", "WRONG"):
        assert secret not in dumped
    assert entries[0]["query"] == ""
    assert entries[1]["query"] == "performance=medium"
    assert entries[5]["query"] == "limit=3"


def test_rate_limit_per_key(http: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("dune", "3/3s")
    assert [execute(http, SECRET).status_code for _ in range(3)] == [200, 200, 200]
    limited = execute(http, SECRET)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 3
    assert isinstance(limited.json()["error"], str)
    assert not any(h.lower().startswith("x-ratelimit") for h in limited.headers)  # Dune documents none
    assert execute(http, OTHER).status_code == 200  # another key has its own window
    control.wait_for(lambda: execute(http, SECRET).status_code == 200, timeout=15)
    stats = control.stats()
    assert stats["rate_limited"] >= 1 and stats["faults"] == {}
    entry = next(e for e in control.journal() if e["status_code"] == 429)
    assert entry["fault"] is None
    assert len(control.executions()) == stats["requests"] - stats["rate_limited"]


def test_rate_limit_can_be_removed(http: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("dune", "1/min")
    assert [execute(http, SECRET).status_code for _ in range(2)] == [200, 429]
    control.set_rate_limit("dune", None)
    assert execute(http, SECRET).status_code == 200
    with pytest.raises(httpx.HTTPStatusError):
        control.set_rate_limit("dune", "lots")
    with pytest.raises(httpx.HTTPStatusError):
        control.set_rate_limit("nope", "1/min")
