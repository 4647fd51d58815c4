"""Scenarios: parsing, markers, and how executions progress over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from airflow_provider_cancel.emulator.engine import Scenario
from airflow_provider_cancel.emulator.testing import EmulatorClient
from tests.emulator.helpers import poll_states, run_sql, status

PENDING, EXECUTING = "QUERY_STATE_PENDING", "QUERY_STATE_EXECUTING"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("succeed", Scenario("succeed", 2, None, 5)),
        ("fail:3", Scenario("fail", 3, None, 5)),
        ("forever", Scenario("forever")),
        ("remote_cancel:1", Scenario("remote_cancel", 1)),
        ("remote-cancel:1", Scenario("remote_cancel", 1)),
        ("partial:0,rows=7", Scenario("partial", 0, None, 7)),
        ("succeed@10s,rows=250", Scenario("succeed", 2, 10.0, 250)),
        ("SUCCEED@0.5s", Scenario("succeed", 2, 0.5, 5)),
    ],
)
def test_parse(text: str, expected: Scenario) -> None:
    assert Scenario.parse(text) == expected


@pytest.mark.parametrize("text", ["", "explode", "succeed:x", "succeed@5", "fail:1,rows=", "succeed:1:2"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid scenario"):
        Scenario.parse(text)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{"sql": "SELECT 1 -- emulate:forever"}', "forever:2,rows=5"),
        ('{"query_parameters": {"emulate": "fail:3"}}', "fail:3,rows=5"),
        ('{"query_parameters":{"emulate":"succeed@10s,rows=250"}}', "succeed@10s,rows=250"),
        ("goal: summarise, emulate=partial:1", "partial:1,rows=5"),
    ],
)
def test_find_marker(source: str, expected: str) -> None:
    found = Scenario.find(source)
    assert found is not None and str(found) == expected


def test_no_marker() -> None:
    assert Scenario.find('{"sql": "SELECT emulated FROM t"}') is None


def test_default_scenario_succeeds_after_two_polls(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune)
    first, second, third, fourth = (status(dune, execution_id) for _ in range(4))
    assert [first["state"], second["state"], third["state"]] == [PENDING, EXECUTING, "QUERY_STATE_COMPLETED"]
    assert fourth["state"] == "QUERY_STATE_COMPLETED"
    assert [s["is_execution_finished"] for s in (first, second, third)] == [False, False, True]
    assert first["queue_position"] == 1 and "queue_position" not in second
    assert "execution_started_at" in second and "execution_ended_at" in third
    submitted = datetime.fromisoformat(first["submitted_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(first["expires_at"].replace("Z", "+00:00"))
    assert expires - submitted == timedelta(days=90)
    assert third["result_metadata"]["total_row_count"] == 5
    record = control.execution(execution_id)
    assert record["vendor"] == "dune" and record["scenario"] == "succeed:2,rows=5"
    assert (record["state"], record["polls"], record["cancel_requests"]) == ("succeeded", 4, 0)


def test_fail_reports_dune_error(dune: httpx.Client) -> None:
    execution_id = run_sql(dune, "SELECT x -- emulate:fail:1")
    states = poll_states(dune, execution_id, 2)
    assert states == [PENDING, "QUERY_STATE_FAILED"]
    body = status(dune, execution_id)
    assert body["is_execution_finished"] is True
    assert body["error"]["type"] == "FAILED_TYPE_EXECUTION_FAILED"
    assert body["error"]["metadata"] == {"line": 1, "column": 8}
    assert "result_metadata" not in body


def test_forever_runs_until_cancelled(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:forever")
    assert set(poll_states(dune, execution_id, 20)[1:]) == {EXECUTING}
    assert dune.post(f"/api/v1/execution/{execution_id}/cancel").json() == {"success": True}
    body = status(dune, execution_id)
    assert body["state"] == "QUERY_STATE_CANCELLED" and body["is_execution_finished"] is True
    assert "cancelled_at" in body
    assert dune.post(f"/api/v1/execution/{execution_id}/cancel").json() == {"success": False}
    record = control.execution(execution_id)
    assert (record["state"], record["cancelled_by"], record["cancel_requests"]) == ("cancelled", "api", 2)
    assert [e["status_code"] for e in control.cancels(execution_id)] == [200, 200]


def test_remote_cancel(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:remote_cancel:1")
    assert poll_states(dune, execution_id, 2) == [PENDING, "QUERY_STATE_CANCELLED"]
    record = control.execution(execution_id)
    assert (record["cancelled_by"], record["cancel_requests"]) == ("remote", 0)
    assert control.cancels(execution_id) == []


def test_remote_cancel_from_control_api(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:forever")
    assert control.remote_cancel(execution_id)["cancelled_by"] == "remote"
    assert status(dune, execution_id)["state"] == "QUERY_STATE_CANCELLED"


def test_partial(dune: httpx.Client) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:partial:0,rows=3")
    assert status(dune, execution_id)["state"] == "QUERY_STATE_COMPLETED_PARTIAL"
    refused = dune.get(f"/api/v1/execution/{execution_id}/results")
    assert refused.status_code == 400
    assert refused.json() == {"error": "Partial Result, please request with 'allow_partial_results=true'"}
    allowed = dune.get(f"/api/v1/execution/{execution_id}/results", params={"allow_partial_results": "true"})
    assert allowed.status_code == 200
    assert [row["n"] for row in allowed.json()["result"]["rows"]] == [0, 1, 2]


def test_wall_clock_scenario_ends_without_polls(dune: httpx.Client, control: EmulatorClient) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:succeed@0.3s,rows=2")
    record = control.wait_for(
        lambda: (r := control.execution(execution_id))["state"] == "succeeded" and r, timeout=10
    )
    assert record["polls"] == 0
    assert record["finished_at"] == pytest.approx(record["created_at"] + 0.3, abs=1e-6)
    assert status(dune, execution_id)["state"] == "QUERY_STATE_COMPLETED"


def test_wall_clock_scenario_is_not_moved_by_polls(dune: httpx.Client) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:fail@60s")
    assert poll_states(dune, execution_id, 10) == [PENDING] + [EXECUTING] * 9


def test_marker_in_query_parameters(dune: httpx.Client) -> None:
    started = dune.post("/api/v1/query/1234/execute", json={"query_parameters": {"emulate": "fail:3"}})
    execution_id = started.json()["execution_id"]
    assert poll_states(dune, execution_id, 4) == [PENDING, EXECUTING, EXECUTING, "QUERY_STATE_FAILED"]


def test_marker_in_query_string(dune: httpx.Client) -> None:
    started = dune.post("/api/v1/query/1234/execute", params={"query_parameters": '{"emulate": "succeed:0"}'})
    assert status(dune, started.json()["execution_id"])["state"] == "QUERY_STATE_COMPLETED"


def test_default_scenario_can_be_changed(dune: httpx.Client, control: EmulatorClient) -> None:
    control.set_default_scenario("fail:0")
    assert status(dune, run_sql(dune))["state"] == "QUERY_STATE_FAILED"
    assert status(dune, run_sql(dune, "SELECT 1 -- emulate:succeed:0"))["state"] == "QUERY_STATE_COMPLETED"
    with pytest.raises(httpx.HTTPStatusError):
        control.set_default_scenario("nonsense")
    control.reset()
    assert status(dune, run_sql(dune))["state"] == "QUERY_STATE_PENDING"
