"""Small helpers for driving the emulator's Dune router in tests."""

from __future__ import annotations

from typing import Any

import httpx

KEY = "sk-test-key"


def run_sql(dune: httpx.Client, sql: str = "SELECT 1") -> str:
    response = dune.post("/api/v1/sql/execute", json={"sql": sql})
    assert response.status_code == 200, response.text
    return str(response.json()["execution_id"])


def status(dune: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = dune.get(f"/api/v1/execution/{execution_id}/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll_states(dune: httpx.Client, execution_id: str, polls: int) -> list[str]:
    return [status(dune, execution_id)["state"] for _ in range(polls)]
