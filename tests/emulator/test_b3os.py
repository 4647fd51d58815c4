"""The B3OS router: envelope, paths, run ids, idempotent runId, definitions, waiting, cancel/409/404, over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY

GENERATED_RUN_ID = re.compile(r"run_[0-9a-z]{26}")
DEFINITION = {
    "nodes": {
        "root": {"type": "manual", "payload": {}, "children": ["log_message"]},
        "log_message": {"type": "log", "payload": {"message": "hi {{$trigger.body.message}}"}, "children": []},
    }
}


@pytest.fixture
def b3os(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    """A B3OS API client on the emulator (depends on `control` so the emulator is reset first)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emulator.base_url("b3os"), headers=headers, timeout=10) as client:
        yield client


def data(response: httpx.Response) -> Any:
    """The envelope's data, after checking the envelope itself."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"code", "data", "message", "requestId"}
    assert (body["code"], body["message"]) == (200, "success") and body["requestId"]
    return body["data"]


def error(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert "data" not in body and body["code"] == code and body["requestId"]
    return str(body["message"])


def start(b3os: httpx.Client, workflow_id: str = "wf_prices", **body: Any) -> str:
    return str(data(b3os.post(f"/v1/workflows/{workflow_id}/run", json=body))["runId"])


def run(b3os: httpx.Client, run_id: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = data(b3os.get(f"/v1/runs/{run_id}", params=params))
    return result


def statuses(b3os: httpx.Client, run_id: str, polls: int) -> list[str]:
    return [run(b3os, run_id, summary="true")["status"] for _ in range(polls)]


# -- create --------------------------------------------------------------------------------------------------
def test_run_saved_workflow(b3os: httpx.Client, control: EmulatorClient) -> None:
    run_id = start(b3os, payload={"address": "0xabc"}, version=3)
    assert GENERATED_RUN_ID.fullmatch(run_id)
    body = run(b3os, run_id)
    assert body["id"] == run_id and body["workflowId"] == "wf_prices" and body["workflowVersion"] == 3
    assert body["status"] == "running" and body["organizationId"].startswith("org_")
    assert body["executionState"]["root"]["result"] == {"address": "0xabc"}
    assert body["workflowDefinition"]["nodes"]["root"]["type"] == "manual"
    assert (body["isSimulation"], body["isDustTest"]) == (False, False)
    assert control.execution(run_id)["data"]["payload"] == {"address": "0xabc"}


def test_simulate_and_dust_test_are_flags_and_mutually_exclusive(b3os: httpx.Client, control: EmulatorClient) -> None:
    simulated = run(b3os, start(b3os, simulate=True), summary="true")
    assert simulated["isSimulation"] and simulated["simulationForks"] and simulated["simulationMode"]
    assert run(b3os, start(b3os, dustTest=True), summary="true")["isDustTest"]
    refused = b3os.post("/v1/workflows/wf_prices/run", json={"simulate": True, "dustTest": True})
    assert "mutually exclusive" in error(refused, 400, 400)
    assert len(control.executions(vendor="b3os")) == 2


def test_client_run_id_is_used_and_a_duplicate_is_refused_with_400079(
    b3os: httpx.Client, control: EmulatorClient
) -> None:
    assert start(b3os, runId="run_mine_1") == "run_mine_1"
    again = b3os.post("/v1/workflows/wf_prices/run", json={"runId": "run_mine_1"})
    assert error(again, 400, 400079) == "duplicate run ID"
    inline = b3os.post("/v1/runs", json={"definition": DEFINITION, "runId": "run_mine_1"})
    assert error(inline, 400, 400079) == "duplicate run ID"
    assert [ex["id"] for ex in control.executions(vendor="b3os")] == ["run_mine_1"]
    creates = control.journal(action="create")
    assert [(e["execution_id"], e["status_code"]) for e in creates] == [("run_mine_1", 200)] + [("run_mine_1", 400)] * 2


@pytest.mark.parametrize("bad", ["mine", "run_", "run_a-b", "run_a b", 42])
def test_invalid_client_run_id_is_400078(b3os: httpx.Client, control: EmulatorClient, bad: object) -> None:
    error(b3os.post("/v1/workflows/wf_prices/run", json={"runId": bad}), 400, 400078)
    assert control.executions() == []


@pytest.mark.parametrize(
    ("workflow_id", "status", "message"),
    [("wf_missing", 404, "workflow not found"), ("nope", 404, "workflow not found"),
     ("wf_archived", 400, "workflow is archived"), ("wf_no_cu", 402, "Insufficient CU balance")],
)
def test_special_workflows(
    b3os: httpx.Client, control: EmulatorClient, workflow_id: str, status: int, message: str
) -> None:
    assert error(b3os.post(f"/v1/workflows/{workflow_id}/run", json={}), status, status) == message
    assert control.executions() == []


@pytest.mark.parametrize(
    "body",
    [{"payload": [1]}, {"version": 0}, {"version": "3"}, {"simulate": "yes"}],
)
def test_run_workflow_rejects_bad_fields(b3os: httpx.Client, control: EmulatorClient, body: dict[str, Any]) -> None:
    error(b3os.post("/v1/workflows/wf_prices/run", json=body), 400, 400)
    assert control.executions() == []


def test_run_inline_definition(b3os: httpx.Client, control: EmulatorClient) -> None:
    run_id = str(data(b3os.post("/v1/runs", json={"definition": DEFINITION, "payload": {"message": "x"},
                                                  "propValues": {"chain": "base"}}))["runId"])
    body = run(b3os, run_id)
    assert body["workflowId"] == "" and body["propValues"] == {"chain": "base"}
    assert list(body["executionState"]) == ["root", "log_message"]
    assert body["workflowDefinition"] == DEFINITION


@pytest.mark.parametrize(
    ("definition", "code", "names"),
    [
        (None, 400228, "nodes"),
        ({"nodes": {}}, 400228, "nodes"),
        ({"nodes": {"start": {"type": "manual", "children": []}}}, 400228, "root"),
        ({"nodes": {"root": {"type": "cron", "children": []}}}, 400229, "manual"),
        ({"nodes": {"root": {"type": "manual", "children": ["ghost"]}}}, 400228, "'ghost'"),
        ({"nodes": {"root": {"type": "manual", "children": "log"}}}, 400228, "children"),
        ({"nodes": {"root": {"type": "manual"}, "log": {"children": []}}}, 400228, "'log'"),
    ],
)
def test_invalid_definitions(
    b3os: httpx.Client, control: EmulatorClient, definition: Any, code: int, names: str
) -> None:
    assert names in error(b3os.post("/v1/runs", json={"definition": definition}), 400, code)
    assert control.executions() == []


def test_create_body_must_be_a_json_object(b3os: httpx.Client, control: EmulatorClient) -> None:
    error(b3os.post("/v1/runs", content=b"{not json"), 400, 400)
    error(b3os.post("/v1/workflows/wf_prices/run", json=["x"]), 400, 400)
    assert control.executions() == []


# -- status ----------------------------------------------------------------------------------------------------
def test_summary_and_node_filter(b3os: httpx.Client) -> None:
    run_id = start(b3os, payload={"emulate": "forever"})
    summary = run(b3os, run_id, summary="true")
    assert "executionState" not in summary and "workflowDefinition" not in summary
    assert summary["status"] == "running" and summary["totalCu"] > 0
    only = run(b3os, run_id, nodeIds="root,notify")
    assert set(only["executionState"]) == {"root", "notify"}


def test_success_after_n_polls_with_growing_cu_and_outputs(b3os: httpx.Client) -> None:
    run_id = start(b3os, payload={"emulate": "succeed:3"})
    reads = [run(b3os, run_id, summary="true") for _ in range(5)]
    assert [r["status"] for r in reads] == ["running"] * 3 + ["success"] * 2
    cu = [r["totalCu"] for r in reads]
    assert cu[0] < cu[1] < cu[2] < cu[3] == cu[4]  # grows while running, frozen at the end
    assert "finishedAt" not in reads[2] and reads[3]["finishedAt"]
    state = run(b3os, run_id)["executionState"]
    assert {n: s["status"] for n, s in state.items()} == {"root": "success", "fetch_price": "success",
                                                           "notify": "success"}
    assert state["notify"]["result"]["node"] == "notify"


def test_node_states_while_running(b3os: httpx.Client) -> None:
    run_id = start(b3os, payload={"emulate": "forever"})
    state = run(b3os, run_id)["executionState"]
    assert [s["status"] for s in state.values()] == ["success", "running", "pending"]


def test_failure_names_the_failed_node_in_execution_state(b3os: httpx.Client) -> None:
    run_id = start(b3os, payload={"emulate": "fail:1"})
    assert statuses(b3os, run_id, 2) == ["running", "failure"]
    state = run(b3os, run_id)["executionState"]
    failed = {n: s for n, s in state.items() if s["status"] == "failure"}
    assert list(failed) == ["notify"] and "error" in failed["notify"]["result"]


def test_approval_workflow_waits_then_continues(b3os: httpx.Client) -> None:
    run_id = start(b3os, "wf_approval", payload={"emulate": "succeed:2"})
    assert statuses(b3os, run_id, 1) == ["waiting"]
    state = run(b3os, run_id)["executionState"]
    assert state["approval"]["status"] == "waiting" and state["approval"]["type"] == "wait"
    assert statuses(b3os, run_id, 1) == ["success"]


def test_payload_flag_waits_for_the_first_reads(b3os: httpx.Client) -> None:
    run_id = start(b3os, payload={"emulate": "succeed:4", "emulate_waiting": 2})
    assert statuses(b3os, run_id, 5) == ["waiting", "waiting", "running", "running", "success"]


def test_remote_cancel_shows_cancelled(b3os: httpx.Client, control: EmulatorClient) -> None:
    run_id = start(b3os, payload={"emulate": "remote_cancel:1"})
    assert statuses(b3os, run_id, 2) == ["running", "cancelled"]
    assert control.cancels(run_id) == []


# -- cancel ----------------------------------------------------------------------------------------------------
def test_cancel_running_and_waiting_runs(b3os: httpx.Client, control: EmulatorClient) -> None:
    running = start(b3os, payload={"emulate": "forever"})
    cancelled = data(b3os.post(f"/v1/runs/{running}/cancel"))
    assert cancelled["id"] == running and cancelled["status"] == "cancelled" and cancelled["finishedAt"]
    waiting = start(b3os, "wf_approval", payload={"emulate": "forever"})
    assert statuses(b3os, waiting, 1) == ["waiting"]
    assert data(b3os.post(f"/v1/runs/{waiting}/cancel"))["status"] == "cancelled"
    assert statuses(b3os, waiting, 1) == ["cancelled"]
    assert control.execution(waiting)["cancelled_by"] == "api"


def test_cancel_of_a_finished_run_is_409(b3os: httpx.Client, control: EmulatorClient) -> None:
    run_id = start(b3os, payload={"emulate": "succeed:0"})
    assert statuses(b3os, run_id, 1) == ["success"]
    refused = b3os.post(f"/v1/runs/{run_id}/cancel")
    assert error(refused, 409, 409) == "run is not cancellable"
    assert set(refused.json()) == {"code", "message", "requestId"}
    assert control.execution(run_id)["state"] == "succeeded"
    assert [e["status_code"] for e in control.cancels(run_id)] == [409]


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/cancel")])
def test_unknown_run_is_404(b3os: httpx.Client, control: EmulatorClient, method: str, suffix: str) -> None:
    response = b3os.request(method, f"/v1/runs/run_01hkzj2683phf9q9phhq8fw4q1{suffix}")
    assert error(response, 404, 404) == "run not found"
    (entry,) = control.journal(execution_id="run_01hkzj2683phf9q9phhq8fw4q1")
    assert entry["status_code"] == 404


# -- lists, auth, org, faults ----------------------------------------------------------------------------------
def test_lists(b3os: httpx.Client) -> None:
    first = start(b3os, payload={"emulate": "succeed:0"})
    second = start(b3os, "wf_other", payload={"emulate": "forever"})
    inline = str(data(b3os.post("/v1/runs", json={"definition": DEFINITION}))["runId"])
    statuses(b3os, first, 1)
    page = data(b3os.get("/v1/runs", params={"limit": 2}))
    assert [r["id"] for r in page["items"]] == [inline, second] and page["hasMore"] is True
    assert "executionState" not in page["items"][0]
    assert [r["id"] for r in data(b3os.get("/v1/runs", params={"workflowId": "wf_prices"}))["items"]] == [first]
    done = data(b3os.get("/v1/workflows/wf_prices/runs", params={"status": "success"}))
    assert [r["id"] for r in done["items"]] == [first] and done["hasMore"] is False
    assert data(b3os.get("/v1/workflows/wf_prices/runs", params={"status": "running"}))["items"] == []
    error(b3os.get("/v1/runs", params={"limit": "0"}), 400, 400)


def test_bearer_auth(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    with httpx.Client(base_url=emulator.base_url("b3os"), timeout=10) as http:
        assert http.post("/v1/runs", json={"definition": DEFINITION},
                         headers={"authorization": f"bearer {KEY}"}).status_code == 200
        for headers in ({}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
            refused = http.post("/v1/runs", json={"definition": DEFINITION}, headers=headers)
            assert "API key" in error(refused, 401, 401)
    assert [e["auth"] for e in control.journal()] == ["ok", "missing", "missing", "missing"]
    assert len(control.executions()) == 1


def test_org_header_is_the_runs_organisation(b3os: httpx.Client, control: EmulatorClient) -> None:
    run_id = str(data(b3os.post("/v1/runs", json={"definition": DEFINITION},
                                headers={"X-Org-ID": "org_acme"}))["runId"])
    assert run(b3os, run_id, summary="true")["organizationId"] == "org_acme"
    refused = b3os.post("/v1/runs", json={"definition": DEFINITION}, headers={"X-Org-ID": "acme"})
    error(refused, 403, 403)
    assert len(control.executions()) == 1


def test_faults_answer_in_the_envelope(b3os: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="503", vendor="b3os", action="status", retry_after=2)
    run_id = start(b3os)
    faulted = b3os.get(f"/v1/runs/{run_id}")
    assert error(faulted, 503, 503) == "Service Unavailable" and faulted.headers["Retry-After"] == "2"
    control.set_rate_limit("b3os", "1/min")
    b3os.get(f"/v1/runs/{run_id}")
    limited = b3os.get(f"/v1/runs/{run_id}")
    assert error(limited, 429, 429) == "rate limited" and int(limited.headers["Retry-After"]) >= 1
    assert "X-RateLimit-Remaining" not in limited.headers  # undocumented for B3OS


def test_openapi_lists_the_b3os_routes(emulator: EmulatorProcess) -> None:
    paths = httpx.get(f"{emulator.url}/_emulator/openapi.json").json()["paths"]
    for path in ("/b3os/v1/workflows/{workflow_id}/run", "/b3os/v1/runs", "/b3os/v1/runs/{run_id}",
                 "/b3os/v1/runs/{run_id}/cancel", "/b3os/v1/workflows/{workflow_id}/runs"):
        assert path in paths
