"""Fault injection: each kind, matching, counting, and that faulted requests leave executions alone."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY, run_sql, status

FOREVER = "SELECT 1 -- emulate:forever"


def test_429_with_retry_after(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune)
    control.add_fault(kind="429", action="status", count=2, retry_after=2)
    for _ in range(2):
        response = dune.get(f"/api/v1/execution/{execution_id}/status")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert isinstance(response.json()["error"], str)
    assert status(dune, execution_id)["state"] == "QUERY_STATE_PENDING"  # faulted polls did not count
    assert control.execution(execution_id)["polls"] == 1
    assert control.stats()["faults"] == {"429": 2}
    assert [e["fault"] for e in control.journal(action="status")] == ["429", "429", None]
    assert control.faults() == []


@pytest.mark.parametrize("kind", ["403", "500", "502", "503", "504"])
def test_server_errors_carry_the_vendor_body(dune: httpx.Client, control: EmulatorClient, kind: str) -> None:
    execution_id = run_sql(dune)
    control.add_fault(kind=kind, vendor="dune", action="status")
    response = dune.get(f"/api/v1/execution/{execution_id}/status")
    assert response.status_code == int(kind)
    assert isinstance(response.json()["error"], str)
    assert "Retry-After" not in response.headers
    assert control.stats()["faults"] == {kind: 1}


def test_503_may_carry_retry_after(dune: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind=503, retry_after=3)
    response = dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"})
    assert (response.status_code, response.headers["Retry-After"]) == (503, "3")


def test_faulted_create_creates_nothing(dune: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="500", action="create")
    assert dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"}).status_code == 500
    assert control.executions() == []
    (entry,) = control.journal()
    assert (entry["action"], entry["fault"], entry["execution_id"]) == ("create", "500", None)


def test_faulted_cancel_does_not_cancel(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, FOREVER)
    control.add_fault(kind="502", action="cancel")
    assert dune.post(f"/api/v1/execution/{execution_id}/cancel").status_code == 502
    assert control.execution(execution_id)["state"] == "pending"
    assert dune.post(f"/api/v1/execution/{execution_id}/cancel").json() == {"success": True}
    assert [(e["status_code"], e["fault"]) for e in control.cancels(execution_id)] == [(502, "502"), (200, None)]
    assert control.execution(execution_id)["cancel_requests"] == 1


def test_fault_matches_vendor_and_action_only(dune: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="500", action="cancel", count=5)
    execution_id = run_sql(dune, FOREVER)
    assert status(dune, execution_id)["state"] == "QUERY_STATE_PENDING"
    assert control.faults()[0]["count"] == 5
    control.clear_faults()
    assert dune.post(f"/api/v1/execution/{execution_id}/cancel").status_code == 200


def test_drop_ends_the_connection(dune: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="drop", action="create")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"})
    assert control.executions() == []
    (entry,) = control.journal()
    assert (entry["fault"], entry["status_code"]) == ("drop", None)
    run_sql(dune)  # the client recovers on a fresh connection


def test_malformed_is_invalid_json(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, FOREVER)
    control.add_fault(kind="malformed", action="status")
    response = dune.get(f"/api/v1/execution/{execution_id}/status")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert control.execution(execution_id)["polls"] == 0


def test_slow_create_still_creates(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    control.add_fault(kind="slow", action="create", delay=1.5)
    impatient = httpx.Client(
        base_url=emulator.base_url("dune"), headers={"X-Dune-Api-Key": KEY}, timeout=httpx.Timeout(10, read=0.3)
    )
    with impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/api/v1/sql/execute", json={"sql": FOREVER})
    # The client gave up, yet the execution exists: the ambiguous case clients must handle.
    (record,) = control.wait_for(control.executions, timeout=10)
    assert record["state"] == "pending"
    (entry,) = control.journal()
    assert (entry["fault"], entry["status_code"], entry["execution_id"]) == ("slow", 200, record["id"])


def test_slow_answers_normally_after_the_delay(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune)
    control.add_fault(kind="slow", action="status", delay=0.3)
    started = time.monotonic()
    assert status(dune, execution_id)["state"] == "QUERY_STATE_PENDING"
    assert time.monotonic() - started >= 0.3


def test_probability_is_seeded(dune: httpx.Client, control: EmulatorClient) -> None:
    def pattern() -> list[int]:
        execution_id = run_sql(dune, FOREVER)
        control.add_fault(kind="503", action="status", probability=0.5)
        return [dune.get(f"/api/v1/execution/{execution_id}/status").status_code for _ in range(40)]

    first = pattern()
    assert 0 < first.count(503) < 40 and set(first) == {200, 503}
    assert control.stats()["faults"] == {"503": first.count(503)}
    assert control.faults()[0]["count"] is None  # a probability alone never runs out
    control.reset()
    assert pattern() == first  # reset re-seeds the RNG


@pytest.mark.parametrize(
    "fault",
    [{"kind": "418"}, {"kind": "429", "vendor": "nope"}, {"kind": "429", "action": "poke"},
     {"kind": "429", "count": 0}, {"kind": "429", "probability": 1.5}, {"kind": "429", "colour": "red"}],
)
def test_invalid_faults_are_refused(control: EmulatorClient, fault: dict[str, object]) -> None:
    with pytest.raises(httpx.HTTPStatusError) as raised:
        control.add_fault(**fault)
    assert raised.value.response.status_code == 422
    assert control.faults() == []
