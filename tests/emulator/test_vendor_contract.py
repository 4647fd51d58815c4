"""What the engine offers a vendor router, shown with a toy vendor ("acme") served next to Dune over HTTP.

Covers what Dune does not use: idempotency keys, asynchronous cancel, custom id path parameter, list
endpoints, X-RateLimit-* headers, and that vendors cannot see each other's executions.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_cancel.emulator import EmulatorConfig, create_app
from airflow_provider_cancel.emulator.app import VENDORS
from airflow_provider_cancel.emulator.engine import ApiError, Call, Execution, State, VendorAPI
from airflow_provider_cancel.emulator.testing import EmulatorClient, free_port

_ids = itertools.count(1)
WORDS = {State.PENDING: "queued", State.RUNNING: "running", State.CANCELLING: "cancelling",
         State.SUCCEEDED: "done", State.PARTIAL: "done", State.FAILED: "failed", State.CANCELLED: "cancelled"}


def _key(request: Request) -> str | None:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"code": status, "message": message}, status_code=status)


acme = VendorAPI("acme", api_key=_key, error=_error, new_id=lambda: f"run_{next(_ids):04d}",
                 rate_limit_headers=True, id_param="run_id")


def _run(ex: Execution) -> dict[str, object]:
    return {"runId": ex.id, "status": WORDS[ex.state], **ex.data}


def _find(call: Call, *, poll: bool = False) -> Execution:
    ex = call.get(call.request.path_params["run_id"], poll=poll)
    if ex is None:
        raise ApiError(404, "run not found")
    return ex


@acme.route("POST", "/v1/runs", action="create")
async def create_run(call: Call) -> Response:
    key = call.request.headers.get("idempotency-key")
    ex = call.idempotent(key) or call.create(idempotency_key=key, data={"input": call.json()})
    return JSONResponse(_run(ex), status_code=202)


@acme.route("GET", "/v1/runs", action="list")
async def list_runs(call: Call) -> Response:
    return JSONResponse({"data": [_run(ex) for ex in call.engine.find("acme")]})


@acme.route("GET", "/v1/runs/{run_id}", action="status")
async def get_run(call: Call) -> Response:
    return JSONResponse(_run(_find(call, poll=True)))


@acme.route("POST", "/v1/runs/{run_id}/cancel", action="cancel")
async def cancel_run(call: Call) -> Response:
    ex = _find(call)
    if not call.cancel(ex, asynchronous=True):
        raise ApiError(409, "run is not cancellable")
    return JSONResponse(_run(ex))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = create_app(EmulatorConfig(api_keys=["k"]), vendors=[*VENDORS.values(), acme])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    EmulatorClient.wait_for(lambda: server.started, timeout=30)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def control(url: str) -> Iterator[EmulatorClient]:
    with EmulatorClient(url) as client:
        client.reset()
        yield client


@pytest.fixture
def http(url: str, control: EmulatorClient) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{url}/acme", headers={"Authorization": "Bearer k"}, timeout=10) as client:
        yield client


def test_idempotency_key_returns_the_same_execution(http: httpx.Client, control: EmulatorClient) -> None:
    first = http.post("/v1/runs", json={"x": 1}, headers={"Idempotency-Key": "try-1"})
    again = http.post("/v1/runs", json={"x": 1}, headers={"Idempotency-Key": "try-1"})
    other = http.post("/v1/runs", json={"x": 1}, headers={"Idempotency-Key": "try-2"})
    assert first.status_code == again.status_code == 202
    assert first.json()["runId"] == again.json()["runId"] != other.json()["runId"]
    assert len(control.executions(vendor="acme")) == 2
    assert control.execution(first.json()["runId"])["idempotency_key"] == "try-1"
    assert [e["execution_id"] for e in control.journal(action="create")] == [
        first.json()["runId"], first.json()["runId"], other.json()["runId"]]


def test_asynchronous_cancel(http: httpx.Client, control: EmulatorClient) -> None:
    run_id = http.post("/v1/runs", json={"sql": "emulate:forever"}).json()["runId"]
    assert http.post(f"/v1/runs/{run_id}/cancel").json()["status"] == "cancelling"
    assert control.execution(run_id)["state"] == "cancelling"
    assert http.post(f"/v1/runs/{run_id}/cancel").json()["status"] == "cancelling"  # still live: accepted
    assert http.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
    refused = http.post(f"/v1/runs/{run_id}/cancel")
    assert refused.status_code == 409 and refused.json() == {"code": 409, "message": "run is not cancellable"}
    record = control.execution(run_id)
    assert (record["cancelled_by"], record["cancel_requests"]) == ("api", 3)
    assert len(control.cancels(run_id)) == 3  # the custom id path parameter reaches the journal


def test_list_and_vendor_isolation(http: httpx.Client, url: str, control: EmulatorClient) -> None:
    run_id = http.post("/v1/runs", json={}).json()["runId"]
    with httpx.Client(base_url=f"{url}/dune", headers={"X-Dune-Api-Key": "k"}) as dune:
        dune_id = dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"}).json()["execution_id"]
        assert dune.get(f"/api/v1/execution/{run_id}/status").status_code == 404
    assert http.get(f"/v1/runs/{dune_id}").json() == {"code": 404, "message": "run not found"}
    assert [r["runId"] for r in http.get("/v1/runs").json()["data"]] == [run_id]
    assert [e["action"] for e in control.journal(vendor="acme")] == ["create", "status", "list"]


def test_rate_limit_headers_where_documented(http: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("acme", "2/min")
    first, second, third = (http.get("/v1/runs") for _ in range(3))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    assert first.headers["X-RateLimit-Limit"] == "2" and int(third.headers["Retry-After"]) >= 1
    assert int(third.headers["X-RateLimit-Reset"]) >= int(first.headers["X-RateLimit-Reset"])
    assert third.json()["code"] == 429


def test_faults_are_scoped_by_vendor(http: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="500", vendor="dune")
    assert http.get("/v1/runs").status_code == 200
    control.add_fault(kind="500", vendor="acme", action="list")
    failed = http.get("/v1/runs")
    assert failed.status_code == 500 and failed.json() == {"code": 500, "message": "Internal Server Error"}
    assert len(control.faults()) == 1  # the dune fault is still waiting
