"""The Meibel router: paths (with and without trailing slash), payloads, validation, status words, items,
asynchronous cancel, 404/409, auth, rate-limit headers and error shapes, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_cancel.emulator.meibel import MISSING_DEFINITION_ID
from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REQUIRED = {"id", "batch_definition_id", "customer_id", "project_id", "start_time", "status"}


@pytest.fixture
def meibel(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    """A Meibel API client on the emulator (depends on `control` so the emulator is reset first)."""
    with httpx.Client(base_url=emulator.base_url("meibel"), headers={"Meibel-API-Key": KEY}, timeout=10,
                      follow_redirects=False) as client:
        yield client


def spec(marker: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "invoices", "agent": "agent-1", "input": {"datasource_id": "ds-1"}, **overrides}
    if marker:
        body["user_message"] = f"Extract totals emulate:{marker}"
    return body


def create(meibel: httpx.Client, marker: str | None = None, **overrides: Any) -> dict[str, Any]:
    response = meibel.post("/batch-executions", json={"batch_spec_json": spec(marker, **overrides)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read(meibel: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = meibel.get(f"/batch-executions/id/{execution_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ended(meibel: httpx.Client, marker: str) -> dict[str, Any]:
    body = read(meibel, create(meibel, marker)["id"])
    assert body["end_time"] is not None, "scenario should end on the first poll"
    return body


# -- create ----------------------------------------------------------------------------------------------------
def test_legacy_create_answers_a_pending_batch_execution(meibel: httpx.Client, control: EmulatorClient) -> None:
    body = create(meibel, execution={"concurrency": 3, "retry_limit": 0}, output={"datasource_id": "ds-out"})
    assert body.keys() >= REQUIRED and UUID.fullmatch(body["id"]) and UUID.fullmatch(body["batch_definition_id"])
    assert (body["status"], body["end_time"], body["items"], body["total_items"]) == ("pending", None, None, None)
    assert body["batch_spec_json"]["execution"] == {"concurrency": 3, "retry_limit": 0}
    assert (body["input_datasource_id"], body["output_datasource_id"]) == ("ds-1", "ds-out")
    assert body["agent_urn"].endswith(":agent-1")
    record = control.execution(body["id"])
    assert record["vendor"] == "meibel" and record["scenario"] == "succeed:2,rows=5"
    (entry,) = control.journal(action="create")
    assert entry["execution_id"] == body["id"] and entry["path"] == "/meibel/batch-executions"


def test_output_datasource_is_auto_created_when_not_given(meibel: httpx.Client) -> None:
    first, second = create(meibel), create(meibel)
    assert UUID.fullmatch(first["output_datasource_id"]) and first["output_datasource_id"] != second[
        "output_datasource_id"]


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({}, ["body"]),
        ({"json": {}}, ["body", "batch_spec_json"]),
        ({"json": {"batch_spec_json": {"name": "x", "input": {"datasource_id": "d"}}}}, ["body", "batch_spec_json",
                                                                                          "agent"]),
        ({"json": {"batch_spec_json": {"name": "x", "agent": "a", "input": {}}}},
         ["body", "batch_spec_json", "input", "datasource_id"]),
        ({"json": {"batch_spec_json": spec(execution={"concurrency": 0})}},
         ["body", "batch_spec_json", "execution", "concurrency"]),
        ({"json": {"batch_spec_json": spec(execution={"retry_limit": 1000})}},
         ["body", "batch_spec_json", "execution", "retry_limit"]),
        ({"json": {"batch_spec_json": spec(name="")}}, ["body", "batch_spec_json", "name"]),
        ({"json": ["not", "an", "object"]}, ["body"]),
    ],
)
def test_create_validation_uses_the_current_error_shape(
    meibel: httpx.Client, control: EmulatorClient, kwargs: dict[str, Any], loc: list[str]
) -> None:
    response = meibel.post("/batch-executions", **kwargs)
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "Validation error"
    assert body["detail"][0]["loc"] == loc
    assert {"loc", "msg", "type"} <= body["detail"][0].keys()
    assert control.executions() == []


def test_create_rejects_a_body_that_is_not_json(meibel: httpx.Client, control: EmulatorClient) -> None:
    response = meibel.post("/batch-executions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]
    assert control.executions() == []


# -- batch definitions ---------------------------------------------------------------------------------------
def define(meibel: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body = {"name": "nightly-invoices", "agent_id": "agent-1", "input_datasource_id": "ds-1", **overrides}
    response = meibel.post("/batch-definitions", json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def test_definition_create_and_execute(meibel: httpx.Client, control: EmulatorClient) -> None:
    definition = define(meibel, description="emulate:fail:0,rows=3", retry_limit=1)
    assert definition["version"] == "1" and definition["name"] == "nightly-invoices"
    assert definition["catalog_urn"] == f"urn:meibel:batch-definition:cus_emulator:prj_emulator:{definition['id']}"
    response = meibel.post(f"/batch-definitions/id/{definition['id']}/execute")
    assert response.status_code == 200
    started = response.json()
    assert started.keys() == {"execution_id", "workflow_id"} and started["workflow_id"] == started["execution_id"]
    body = read(meibel, started["execution_id"])
    assert (body["status"], body["batch_definition_id"], body["total_items"]) == ("failed", definition["id"], 3)
    assert {i["attempts"] for i in body["items"] if i["status"] == "failed"} == {2}  # retry_limit + 1
    (entry,) = control.journal(action="create")
    assert entry["execution_id"] == started["execution_id"]
    assert entry["path"] == f"/meibel/batch-definitions/id/{definition['id']}/execute"


def test_any_other_definition_runs_with_the_default_scenario_but_the_missing_one_is_404(
    meibel: httpx.Client, control: EmulatorClient
) -> None:
    control.set_default_scenario("forever")
    started = meibel.post("/batch-definitions/id/5b0c7f5e-3a59-4c36-9d36-8a8f3c6f0e11/execute").json()
    assert control.execution(started["execution_id"])["scenario"].startswith("forever")
    missing = meibel.post(f"/batch-definitions/id/{MISSING_DEFINITION_ID}/execute")
    assert missing.status_code == 404 and missing.json() == {
        "detail": f"Batch definition {MISSING_DEFINITION_ID} not found"}
    assert len(control.executions()) == 1


def test_definitions_are_forgotten_on_reset(meibel: httpx.Client, control: EmulatorClient) -> None:
    definition = define(meibel, description="emulate:fail:0")
    control.reset()
    started = meibel.post(f"/batch-definitions/id/{definition['id']}/execute").json()
    assert control.execution(started["execution_id"])["scenario"] == "succeed:2,rows=5"


@pytest.mark.parametrize("bad", [{"name": "Not Kebab"}, {"agent_id": ""}, {"concurrency": 1000}, {"retry_limit": -1}])
def test_definition_validation(meibel: httpx.Client, bad: dict[str, Any]) -> None:
    body = {"name": "nightly-invoices", "agent_id": "agent-1", "input_datasource_id": "ds-1", **bad}
    response = meibel.post("/batch-definitions", json=body)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][1] == next(iter(bad))


# -- status -----------------------------------------------------------------------------------------------------
def test_status_goes_pending_running_completed_with_items_at_the_end(meibel: httpx.Client) -> None:
    execution_id = create(meibel, "succeed:2,rows=3")["id"]
    pending, running, done = (read(meibel, execution_id) for _ in range(3))
    assert [b["status"] for b in (pending, running, done)] == ["pending", "running", "completed"]
    assert (pending["total_items"], pending["items"]) == (None, None)
    assert running["total_items"] == 3 and 0 <= running["succeeded"] < 3 and running["failed"] == 0
    assert running["items"] is None and running["end_time"] is None  # items come with the end
    assert (done["total_items"], done["succeeded"], done["failed"], done["error"]) == (3, 3, 0, None)
    assert done["end_time"] >= done["start_time"]
    assert [i["filename"] for i in done["items"]] == ["document-0001.pdf", "document-0002.pdf", "document-0003.pdf"]
    assert all(i["status"] == "completed" and i["output_artifacts"] and i["error"] is None for i in done["items"])
    assert all(UUID.fullmatch(i["input_data_element_id"]) for i in done["items"])


def test_running_progress_grows_with_time(meibel: httpx.Client) -> None:
    execution_id = create(meibel, "forever,rows=50")["id"]
    read(meibel, execution_id)
    first = read(meibel, execution_id)["succeeded"]
    EmulatorClient.wait_for(lambda: read(meibel, execution_id)["succeeded"] > first, timeout=10)
    assert read(meibel, execution_id)["succeeded"] < 50


def test_failure_carries_the_overall_error_and_failed_items(meibel: httpx.Client) -> None:
    body = ended(meibel, "fail:0,rows=8")
    assert body["status"] == "failed" and "2 of 8 items exhausted their retries" in body["error"]
    assert (body["succeeded"], body["failed"]) == (6, 2)
    failed = [i for i in body["items"] if i["status"] == "failed"]
    assert [i["filename"] for i in failed] == ["document-0004.pdf", "document-0008.pdf"]
    assert all(i["error"] and i["output_artifacts"] == [] for i in failed)


def test_partial_outcome_is_completed_with_errors(meibel: httpx.Client) -> None:
    body = ended(meibel, "partial:0,rows=2")
    assert (body["status"], body["succeeded"], body["failed"], body["error"]) == ("completed_with_errors", 1, 1, None)


def test_remote_cancel_reads_cancelled(meibel: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(meibel, "forever")["id"]
    control.remote_cancel(execution_id)
    body = read(meibel, execution_id)
    assert body["status"] == "cancelled" and body["end_time"] and "console" in body["error"]
    assert {i["status"] for i in body["items"]} <= {"completed", "cancelled"}


# -- cancel -----------------------------------------------------------------------------------------------------
def test_cancel_is_asynchronous_then_409_once_ended(meibel: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(meibel, "forever")["id"]
    first = meibel.post(f"/batch-executions/id/{execution_id}/cancel")
    assert first.status_code == 200 and first.json()["status"] == "cancelling" and first.json()["end_time"] is None
    assert control.execution(execution_id)["state"] == "cancelling"
    again = meibel.post(f"/batch-executions/id/{execution_id}/cancel")  # still live: accepted again
    assert again.status_code == 200 and again.json()["status"] == "cancelling"
    body = read(meibel, execution_id)
    assert body["status"] == "cancelled" and body["end_time"] and body["error"] == "Cancelled by API request"
    refused = meibel.post(f"/batch-executions/id/{execution_id}/cancel")
    assert refused.status_code == 409
    assert refused.json() == {"detail": f"Batch execution {execution_id} has already ended (cancelled); "
                                        "nothing to cancel"}
    record = control.execution(execution_id)
    assert (record["cancelled_by"], record["cancel_requests"]) == ("api", 3)
    assert [c["status_code"] for c in control.cancels(execution_id)] == [200, 200, 409]


def test_cancel_of_a_completed_execution_is_409_and_changes_nothing(
    meibel: httpx.Client, control: EmulatorClient
) -> None:
    execution_id = ended(meibel, "succeed:0")["id"]
    assert meibel.post(f"/batch-executions/id/{execution_id}/cancel").status_code == 409
    assert control.execution(execution_id)["state"] == "succeeded"


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/cancel"), ("GET", "/"), ("POST", "/cancel/")])
def test_unknown_execution_is_404(meibel: httpx.Client, control: EmulatorClient, method: str, suffix: str) -> None:
    unknown = "3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10"
    response = meibel.request(method, f"/batch-executions/id/{unknown}{suffix}")
    assert response.status_code == 404 and response.json() == {"detail": f"Batch execution {unknown} not found"}
    (entry,) = control.journal(execution_id=unknown)
    assert entry["status_code"] == 404


# -- paths, list, auth, limits, errors ------------------------------------------------------------------------
def test_every_route_answers_with_and_without_a_trailing_slash(meibel: httpx.Client, control: EmulatorClient) -> None:
    for path in ("/batch-executions", "/batch-executions/"):
        response = meibel.post(path, json={"batch_spec_json": spec("forever")})
        assert response.status_code == 200, (path, response.status_code)
    execution_id = response.json()["id"]
    definition_id = define(meibel)["id"]
    assert meibel.post("/batch-definitions/", json={"name": "a", "agent_id": "b", "input_datasource_id": "c"}
                       ).status_code == 200
    for path in (f"/batch-executions/id/{execution_id}", f"/batch-executions/id/{execution_id}/",
                 "/batch-executions", "/batch-executions/"):
        assert meibel.get(path).status_code == 200, path
    for path in (f"/batch-definitions/id/{definition_id}/execute", f"/batch-definitions/id/{definition_id}/execute/",
                 f"/batch-executions/id/{execution_id}/cancel", f"/batch-executions/id/{execution_id}/cancel/"):
        assert meibel.post(path).status_code == 200, path
    assert {e["status_code"] for e in control.journal()} == {200}  # never a redirect


def test_list_pages_by_offset_filters_and_sorts(meibel: httpx.Client) -> None:
    ids = [create(meibel, input={"datasource_id": "ds-a" if n % 2 else "ds-b"})["id"] for n in range(5)]
    page = meibel.get("/batch-executions", params={"limit": 2, "offset": 1}).json()
    assert page["pagination"] == {"total": 5, "offset": 1, "limit": 2}
    assert [b["id"] for b in page["data"]] == [ids[3], ids[2]]  # newest first by default
    oldest = meibel.get("/batch-executions", params={"sort_order": "asc", "limit": 1}).json()["data"]
    assert [b["id"] for b in oldest] == [ids[0]]
    only_a = meibel.get("/batch-executions", params={"input_datasource_id": "ds-a"}).json()
    assert sorted(b["id"] for b in only_a["data"]) == sorted([ids[1], ids[3]]) and only_a["pagination"]["total"] == 2
    read(meibel, ids[0])
    read(meibel, ids[0])  # now running
    by_status = meibel.get("/batch-executions", params={"sort_by": "status", "sort_order": "desc"}).json()["data"]
    assert by_status[0]["id"] == ids[0] and by_status[0]["status"] == "running"


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"limit": "x"},
                                    {"sort_by": "name"}, {"sort_order": "up"}])
def test_list_rejects_bad_parameters(meibel: httpx.Client, params: dict[str, str]) -> None:
    response = meibel.get("/batch-executions", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_auth_header_or_bearer_and_a_clear_401(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    with httpx.Client(base_url=emulator.base_url("meibel"), timeout=10) as http:
        body = {"batch_spec_json": spec()}
        assert http.post("/batch-executions", json=body, headers={"meibel-api-key": KEY}).status_code == 200
        assert http.post("/batch-executions", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        missing = http.post("/batch-executions", json=body, headers={"Authorization": KEY})  # not a bearer
        assert missing.status_code == 401 and "Meibel-API-Key" in missing.json()["message"]
    assert [e["auth"] for e in control.journal()] == ["ok", "ok", "missing"]
    assert len(control.executions()) == 2


def test_rate_limit_headers_and_429(meibel: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("meibel", "2/min")
    first, second, third = (meibel.get("/batch-executions") for _ in range(3))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    assert first.headers["X-RateLimit-Limit"] == "2" and int(third.headers["Retry-After"]) >= 1
    assert int(third.headers["X-RateLimit-Reset"]) >= int(first.headers["X-RateLimit-Reset"])
    assert third.json()["message"].startswith("Rate limit exceeded")


def test_injected_server_errors_use_the_message_shape(meibel: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="503", vendor="meibel", action="status", retry_after=2)
    response = meibel.get("/batch-executions/id/anything")
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.json() == {"message": "Service Unavailable"}


def test_unknown_path_is_404_and_journaled(meibel: httpx.Client, control: EmulatorClient) -> None:
    response = meibel.get("/batch-executions/id/x/realtime-progress/nope")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
    (entry,) = control.journal(vendor="meibel")
    assert (entry["action"], entry["status_code"]) == ("other", 404)


def test_openapi_lists_the_meibel_routes(emulator: EmulatorProcess) -> None:
    paths = httpx.get(f"{emulator.url}/_emulator/openapi.json").json()["paths"]
    for path in ("/meibel/batch-executions", "/meibel/batch-executions/", "/meibel/batch-definitions",
                 "/meibel/batch-executions/id/{execution_id}", "/meibel/batch-executions/id/{execution_id}/cancel",
                 "/meibel/batch-definitions/id/{definition_id}/execute"):
        assert path in paths
