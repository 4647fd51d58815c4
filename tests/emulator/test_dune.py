"""The Dune router: paths, payloads, validation, results paging, cancel and 404s, over real HTTP."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY, run_sql, status

ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def finished(dune: httpx.Client, sql: str) -> str:
    execution_id = run_sql(dune, sql)
    assert status(dune, execution_id)["is_execution_finished"], "scenario should end on the first poll"
    return execution_id


def results(dune: httpx.Client, execution_id: str, **params: Any) -> dict[str, Any]:
    response = dune.get(f"/api/v1/execution/{execution_id}/results", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_execute_saved_query(dune: httpx.Client, control: EmulatorClient) -> None:
    response = dune.post(
        "/api/v1/query/3493826/execute", json={"query_parameters": {"param1": 24}, "performance": "large"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "QUERY_STATE_PENDING" and ULID.fullmatch(body["execution_id"])
    assert status(dune, body["execution_id"])["query_id"] == 3493826
    record = control.execution(body["execution_id"])
    assert record["data"] == {"query_id": 3493826, "performance": "large", "query_parameters": {"param1": 24}}


def test_execute_options_as_query_params(dune: httpx.Client, control: EmulatorClient) -> None:
    response = dune.post(
        "/api/v1/query/7/execute", params={"performance": "large", "query_parameters": '{"days": 3}'}
    )
    assert response.status_code == 200
    record = control.execution(response.json()["execution_id"])
    assert record["data"]["performance"] == "large" and record["data"]["query_parameters"] == {"days": 3}


@pytest.mark.parametrize(
    ("path", "kwargs", "expected"),
    [
        ("/api/v1/query/0/execute", {}, 400),
        ("/api/v1/query/-5/execute", {}, 400),
        ("/api/v1/query/abc/execute", {}, 400),
        ("/api/v1/query/12/execute", {"json": {"performance": "huge"}}, 400),
        ("/api/v1/query/12/execute", {"params": {"performance": "small"}}, 400),
        ("/api/v1/query/12/execute", {"json": {"query_parameters": [1, 2]}}, 400),
        ("/api/v1/query/12/execute", {"content": b"{not json"}, 400),
        ("/api/v1/query/404404/execute", {}, 404),
        ("/api/v1/query/403403/execute", {}, 403),
        ("/api/v1/sql/execute", {"json": {}}, 400),
        ("/api/v1/sql/execute", {"json": {"sql": "   "}}, 400),
        ("/api/v1/sql/execute", {"json": {"sql": "SELECT 1", "performance": "xl"}}, 400),
        ("/api/v1/sql/execute", {"json": ["SELECT 1"]}, 400),
    ],
)
def test_execute_rejects(
    dune: httpx.Client, control: EmulatorClient, path: str, kwargs: dict[str, Any], expected: int
) -> None:
    response = dune.post(path, **kwargs)
    assert response.status_code == expected
    assert isinstance(response.json()["error"], str)
    assert control.executions() == []


def test_missing_and_archived_query_messages(dune: httpx.Client) -> None:
    assert dune.post("/api/v1/query/404404/execute").json() == {"error": "Object not found"}
    assert "archived" in dune.post("/api/v1/query/403403/execute").json()["error"]


def test_sql_execution_reports_query_id_zero(dune: httpx.Client) -> None:
    assert status(dune, run_sql(dune))["query_id"] == 0


def test_results_before_the_end_carry_only_the_state(dune: httpx.Client) -> None:
    execution_id = run_sql(dune, "SELECT 1 -- emulate:forever")
    body = results(dune, execution_id)
    assert body["state"] == "QUERY_STATE_PENDING" and body["is_execution_finished"] is False
    assert "result" not in body and "next_uri" not in body


def test_results_follow_next_uri(dune: httpx.Client, emulator: EmulatorProcess) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:succeed:0,rows=250")
    rows: list[dict[str, Any]] = []
    url: str | None = f"{emulator.base_url('dune')}/api/v1/execution/{execution_id}/results"
    pages = 0
    while url:
        response = dune.get(url)
        assert response.status_code == 200
        body = response.json()
        rows += body["result"]["rows"]
        assert body["result"]["metadata"]["row_count"] == len(body["result"]["rows"])
        assert body["result"]["metadata"]["total_row_count"] == 250
        url = body.get("next_uri")
        if url:
            assert url.startswith(emulator.base_url("dune") + "/api/v1/execution/")
            assert body["next_offset"] == len(rows)
        pages += 1
    assert pages == 3  # default page of 100 rows
    assert rows == [{"n": n, "label": f"row {n}"} for n in range(250)]


def test_results_metadata(dune: httpx.Client) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:succeed:0,rows=5")
    body = results(dune, execution_id)
    assert body["state"] == "QUERY_STATE_COMPLETED" and body["is_execution_finished"] is True
    metadata = body["result"]["metadata"]
    assert metadata["column_names"] == ["n", "label"] and metadata["column_types"] == ["integer", "varchar"]
    assert (metadata["row_count"], metadata["total_row_count"], metadata["datapoint_count"]) == (5, 5, 10)
    assert "next_uri" not in body and "next_offset" not in body


def test_results_limit_is_capped(dune: httpx.Client) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:succeed:0,rows=1500")
    body = results(dune, execution_id, limit=5000)
    assert len(body["result"]["rows"]) == 1000 and body["next_offset"] == 1000


def test_results_offset_and_columns(dune: httpx.Client) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:succeed:0,rows=10")
    body = results(dune, execution_id, offset=8, limit=5, columns="n")
    assert body["result"]["rows"] == [{"n": 8}, {"n": 9}] and "next_uri" not in body
    beyond = results(dune, execution_id, offset=50)
    assert beyond["result"]["rows"] == [] and "next_uri" not in beyond


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "x"}, {"offset": "-1"}])
def test_results_reject_bad_paging(dune: httpx.Client, params: dict[str, str]) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:succeed:0")
    response = dune.get(f"/api/v1/execution/{execution_id}/results", params=params)
    assert response.status_code == 400 and "error" in response.json()


def test_results_of_failed_execution(dune: httpx.Client) -> None:
    execution_id = finished(dune, "SELECT 1 -- emulate:fail:0")
    body = results(dune, execution_id)
    assert body["state"] == "QUERY_STATE_FAILED" and "result" not in body and body["error"]["message"]


def test_cancel_success_flag(dune: httpx.Client, control: EmulatorClient) -> None:
    running = run_sql(dune, "SELECT 1 -- emulate:forever")
    done = finished(dune, "SELECT 1 -- emulate:succeed:0")
    assert dune.post(f"/api/v1/execution/{running}/cancel").json() == {"success": True}
    assert dune.post(f"/api/v1/execution/{done}/cancel").json() == {"success": False}
    assert control.execution(done)["state"] == "succeeded"
    assert len(control.cancels(running)) == 1 and len(control.cancels(done)) == 1


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", "status"), ("GET", "results"), ("POST", "cancel")]
)
def test_unknown_execution_is_404(dune: httpx.Client, control: EmulatorClient, method: str, suffix: str) -> None:
    response = dune.request(method, f"/api/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/{suffix}")
    assert response.status_code == 404 and isinstance(response.json()["error"], str)
    (entry,) = control.journal(execution_id="01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert entry["status_code"] == 404


def test_unknown_path_is_404_and_journaled(dune: httpx.Client, control: EmulatorClient) -> None:
    response = dune.get("/api/v1/nothing/here")
    assert response.status_code == 404 and "error" in response.json()
    (entry,) = control.journal(vendor="dune")
    assert (entry["action"], entry["path"], entry["status_code"]) == ("other", "/dune/api/v1/nothing/here", 404)


def test_auth_header_any_case_or_query_param(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    with httpx.Client(base_url=emulator.base_url("dune"), timeout=10) as http:
        assert http.post("/api/v1/sql/execute", json={"sql": "SELECT 1"},
                         headers={"x-dune-api-key": KEY}).status_code == 200
        assert http.post("/api/v1/sql/execute", json={"sql": "SELECT 1"},
                         params={"api_key": KEY}).status_code == 200
        missing = http.post("/api/v1/sql/execute", json={"sql": "SELECT 1"})
        assert missing.status_code == 401 and missing.json() == {"error": "invalid API Key"}
    assert [e["auth"] for e in control.journal()] == ["ok", "ok", "missing"]
    assert len(control.executions()) == 2


def test_journal_filters_and_clear(dune: httpx.Client, control: EmulatorClient) -> None:
    first, second = run_sql(dune), run_sql(dune)
    status(dune, first)
    dune.post(f"/api/v1/execution/{second}/cancel")
    assert [e["action"] for e in control.journal()] == ["create", "create", "status", "cancel"]
    assert [e["action"] for e in control.journal(execution_id=first)] == ["create", "status"]
    assert [e["execution_id"] for e in control.journal(action="cancel")] == [second]
    entries = control.journal()
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert control.journal(since=entries[1]["seq"]) == entries[2:]
    control.clear_journal()
    assert control.journal() == []
    assert control.stats()["executions"]["total"] == 2


def test_openapi_lists_the_dune_routes(emulator: EmulatorProcess) -> None:
    paths = httpx.get(f"{emulator.url}/_emulator/openapi.json").json()["paths"]
    for path in ("/dune/api/v1/query/{query_id}/execute", "/dune/api/v1/sql/execute",
                 "/dune/api/v1/execution/{execution_id}/status", "/dune/api/v1/execution/{execution_id}/results",
                 "/dune/api/v1/execution/{execution_id}/cancel", "/_emulator/journal"):
        assert path in paths
