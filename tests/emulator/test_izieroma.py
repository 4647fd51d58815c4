"""The izieroma (ROMA API) router: paths, payloads, validation, idempotency, cancel, list, errors, rate-limit
headers, over real HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY

EXEC_ID = re.compile(r"exec_[a-z0-9]{16}")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
API = "/api/v1/executions"


@pytest.fixture(scope="module")
def emulator_args() -> list[str]:
    return ["--api-key", KEY]


@pytest.fixture
def roma(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url("izieroma"), headers={"X-API-Key": KEY}, timeout=10) as client:
        yield client


def create(roma: httpx.Client, goal: str = "Summarise the news", key: str | None = None, **fields: Any) -> dict:
    headers = {"X-Idempotency-Key": key} if key else {}
    response = roma.post(API, json={"goal": goal, **fields}, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def status(roma: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = roma.get(f"{API}/{execution_id}/status")
    assert response.status_code == 200, response.text
    return dict(response.json())


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "request_id"} and set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


# -- create ----------------------------------------------------------------------------------------------------
def test_create_answers_202_with_the_execution(roma: httpx.Client, control: EmulatorClient) -> None:
    body = create(roma, "Find facts about Mars", max_depth=5, config_profile="crypto_agent",
                  config_overrides={"temperature": 0.3, "model": "m"}, metadata={"team": "data"})
    assert EXEC_ID.fullmatch(body["execution_id"])
    assert body["status"] == "pending" and body["initial_goal"] == "Find facts about Mars"
    assert (body["config_profile"], body["max_depth"]) == ("crypto_agent", 5)
    assert STAMP.fullmatch(body["created_at"]) and body["created_at"] == body["updated_at"]
    assert body["request_id"].startswith("req_")
    record = control.execution(body["execution_id"])
    assert record["data"] == {"goal": "Find facts about Mars", "max_depth": 5, "config_profile": "crypto_agent",
                              "config_overrides": {"temperature": 0.3, "model": "m"}, "metadata": {"team": "data"}}


def test_create_defaults(roma: httpx.Client) -> None:
    body = create(roma)
    assert (body["max_depth"], body["config_profile"]) == (3, "general")


def test_idempotency_key_replays_the_original_answer(roma: httpx.Client, control: EmulatorClient) -> None:
    first = create(roma, "Goal emulate:succeed:0", key="try-1")
    assert status(roma, first["execution_id"])["status"] == "completed"
    again = create(roma, "A different body is ignored", key="try-1")
    other = create(roma, "Goal", key="try-2")
    assert again["execution_id"] == first["execution_id"] != other["execution_id"]
    assert {k: v for k, v in again.items() if k != "request_id"} == {
        k: v for k, v in first.items() if k != "request_id"}  # the original answer, status pending included
    assert len(control.executions(vendor="izieroma")) == 2
    assert control.execution(first["execution_id"])["idempotency_key"] == "try-1"
    assert [e["execution_id"] for e in control.journal(action="create")] == [
        first["execution_id"], first["execution_id"], other["execution_id"]]


def test_without_a_key_every_create_is_new(roma: httpx.Client, control: EmulatorClient) -> None:
    assert create(roma)["execution_id"] != create(roma)["execution_id"]
    assert len(control.executions(vendor="izieroma")) == 2


def test_a_slow_create_still_creates_and_a_retry_with_its_key_gets_the_same(
    roma: httpx.Client, control: EmulatorClient
) -> None:
    control.add_fault(vendor="izieroma", action="create", kind="slow", delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        roma.post(API, json={"goal": "g"}, headers={"X-Idempotency-Key": "slow-1"}, timeout=0.2)
    retried = create(roma, "g", key="slow-1")
    control.wait_for(lambda: [e["status_code"] for e in control.journal(action="create")] == [202, 202], 10)
    assert [ex["id"] for ex in control.executions(vendor="izieroma")] == [retried["execution_id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "goal"),
        ({"goal": ""}, "goal"),
        ({"goal": "   "}, "goal"),
        ({"goal": "x" * 10_001}, "goal"),
        ({"goal": 7}, "goal"),
        ({"goal": "g", "max_depth": 0}, "max_depth"),
        ({"goal": "g", "max_depth": 11}, "max_depth"),
        ({"goal": "g", "max_depth": "3"}, "max_depth"),
        ({"goal": "g", "max_depth": True}, "max_depth"),
        ({"goal": "g", "config_profile": "default"}, "config_profile"),
        ({"goal": "g", "config_overrides": {"top_p": 1}}, "config_overrides"),
        ({"goal": "g", "config_overrides": [1]}, "config_overrides"),
        ({"goal": "g", "metadata": {f"k{i}": "v" for i in range(11)}}, "metadata"),
        ({"goal": "g", "metadata": {"k" * 51: "v"}}, "metadata"),
        ({"goal": "g", "metadata": {"k": ""}}, "metadata"),
        ({"goal": "g", "metadata": {"k": 1}}, "metadata"),
    ],
)
def test_create_validation(roma: httpx.Client, control: EmulatorClient, body: dict[str, Any], field: str) -> None:
    response = roma.post(API, json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["details"]["field"] == field
    assert f"'{field}'" in error["message"]
    assert control.executions() == []


def test_missing_goal_has_the_documented_message(roma: httpx.Client) -> None:
    error = error_of(roma.post(API, json={"max_depth": 2}))
    assert error == {"code": "invalid_request", "message": "The 'goal' field is required",
                     "details": {"field": "goal", "issue": "missing_required_field"}}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_create_rejects_a_body_that_is_not_an_object(roma: httpx.Client, control: EmulatorClient,
                                                     content: bytes) -> None:
    response = roma.post(API, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"
    assert control.executions() == []


def test_the_marker_may_sit_in_the_metadata(roma: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(roma, "Plain goal", metadata={"emulate": "fail:0"})["execution_id"]
    assert control.execution(execution_id)["scenario"].startswith("fail:0")
    assert status(roma, execution_id)["status"] == "failed"


# -- status ----------------------------------------------------------------------------------------------------
def test_status_goes_pending_running_completed_with_progress_step_and_result(roma: httpx.Client) -> None:
    execution_id = create(roma, "Research emulate:succeed:3", metadata={"team": "data"})["execution_id"]
    polls = [status(roma, execution_id) for _ in range(4)]
    assert [p["status"] for p in polls] == ["pending", "running", "running", "completed"]
    assert (polls[0]["progress"], polls[0]["current_step"]) == (0, "Queued")
    progress = [p["progress"] for p in polls[1:3]]
    assert 0 < progress[0] < progress[1] < 100 and all(isinstance(p, int) for p in progress)
    assert all(p["current_step"] and p["current_step"] != "Queued" for p in polls[1:3])
    done = polls[3]
    assert done["progress"] == 100 and "current_step" not in done
    assert done["result"] == "Emulated ROMA answer to: Research emulate:succeed:3"
    assert done["metadata"]["tokens_used"] > 0 and done["metadata"]["execution_time"] >= 0
    assert done["metadata"]["user_metadata"] == {"team": "data"}
    assert STAMP.fullmatch(done["completed_at"]) and STAMP.fullmatch(done["updated_at"])


def test_failed_status_carries_the_error_object(roma: httpx.Client) -> None:
    execution_id = create(roma, "Bad emulate:fail:0")["execution_id"]
    body = status(roma, execution_id)
    assert body["status"] == "failed" and STAMP.fullmatch(body["failed_at"])
    assert body["error"]["code"] == "execution_error" and body["error"]["message"] == "Task execution failed"
    assert body["error"]["details"] and "result" not in body


def test_remote_cancel_shows_as_cancelled(roma: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(roma, "emulate:forever")["execution_id"]
    status(roma, execution_id)
    control.remote_cancel(execution_id)
    body = status(roma, execution_id)
    assert body["status"] == "cancelled" and STAMP.fullmatch(body["cancelled_at"])


# -- cancel ----------------------------------------------------------------------------------------------------
def test_cancel_a_running_execution(roma: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(roma, "emulate:forever")["execution_id"]
    status(roma, execution_id)
    status(roma, execution_id)
    response = roma.post(f"{API}/{execution_id}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert (body["execution_id"], body["status"]) == (execution_id, "cancelled")
    assert STAMP.fullmatch(body["cancelled_at"])
    assert status(roma, execution_id)["status"] == "cancelled"
    assert control.execution(execution_id)["cancelled_by"] == "api"


def test_cancel_a_pending_execution(roma: httpx.Client) -> None:
    execution_id = create(roma, "emulate:forever")["execution_id"]
    assert roma.post(f"{API}/{execution_id}/cancel").json()["status"] == "cancelled"


@pytest.mark.parametrize(("goal", "word"), [("emulate:succeed:0", "completed"), ("emulate:fail:0", "failed")])
def test_cancel_after_the_end_is_400_invalid_operation(
    roma: httpx.Client, control: EmulatorClient, goal: str, word: str
) -> None:
    execution_id = create(roma, goal)["execution_id"]
    assert status(roma, execution_id)["status"] == word
    response = roma.post(f"{API}/{execution_id}/cancel")
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_operation",
                                  "message": f"Cannot cancel execution in {word} state", "details": {}}
    assert status(roma, execution_id)["status"] == word
    assert len(control.cancels(execution_id)) == 1


def test_second_cancel_is_400_too(roma: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(roma, "emulate:forever")["execution_id"]
    assert roma.post(f"{API}/{execution_id}/cancel").status_code == 200
    again = roma.post(f"{API}/{execution_id}/cancel")
    assert again.status_code == 400 and "cancelled state" in error_of(again)["message"]
    assert control.execution(execution_id)["cancel_requests"] == 2


@pytest.mark.parametrize(("method", "suffix"), [("GET", "/status"), ("GET", ""), ("GET", "/dag"),
                                                ("POST", "/cancel")])
def test_unknown_execution_is_404_not_found(
    roma: httpx.Client, control: EmulatorClient, method: str, suffix: str
) -> None:
    response = roma.request(method, f"{API}/exec_1a2b3c4d5e6f{suffix}")
    assert response.status_code == 404
    assert error_of(response) == {"code": "not_found", "message": "Execution not found", "details": {}}
    (entry,) = control.journal(execution_id="exec_1a2b3c4d5e6f")
    assert entry["status_code"] == 404


# -- details, dag, list ----------------------------------------------------------------------------------------
def test_details_carry_the_result_and_do_not_count_as_polls(roma: httpx.Client, control: EmulatorClient) -> None:
    execution_id = create(roma, "Details emulate:succeed:1", max_depth=4)["execution_id"]
    running = roma.get(f"{API}/{execution_id}").json()
    assert running["status"] == "pending" and "result" not in running
    assert control.execution(execution_id)["polls"] == 0
    status(roma, execution_id)
    status(roma, execution_id)
    body = roma.get(f"{API}/{execution_id}").json()
    assert body["status"] == "completed" and body["result"] == "Emulated ROMA answer to: Details emulate:succeed:1"
    assert (body["initial_goal"], body["max_depth"], body["config_profile"]) == (
        "Details emulate:succeed:1", 4, "general")
    assert body["dag"]["stats"]["completed_nodes"] == body["dag"]["stats"]["total_nodes"] == 4
    assert STAMP.fullmatch(body["completed_at"]) and body["metadata"]["tokens_used"] > 0
    assert [e["action"] for e in control.journal(execution_id=execution_id)] == [
        "create", "result", "status", "status", "result"]


def test_dag_endpoint(roma: httpx.Client) -> None:
    execution_id = create(roma, "emulate:forever")["execution_id"]
    for _ in range(3):
        status(roma, execution_id)
    body = roma.get(f"{API}/{execution_id}/dag").json()
    dag = body["dag"]
    assert body["execution_id"] == execution_id
    assert {n["id"] for n in dag["nodes"]} == {"task_0", "task_1", "task_2", "task_3"}
    assert all(set(n) == {"id", "type", "status", "input", "output", "started_at", "completed_at"}
               for n in dag["nodes"])
    assert {n["status"] for n in dag["nodes"]} <= {"pending", "running", "completed", "failed"}
    assert "running" in {n["status"] for n in dag["nodes"]}
    assert all(e["type"] == "depends_on" for e in dag["edges"])
    assert dag["stats"]["total_edges"] == len(dag["edges"]) == 4


def test_list_pages_filters_and_sorts(roma: httpx.Client) -> None:
    ids = [create(roma, f"goal {i} emulate:succeed:0", config_profile="fast" if i % 2 else "general")["execution_id"]
           for i in range(5)]
    status(roma, ids[0])  # completed
    listed = roma.get(API).json()
    assert [e["execution_id"] for e in listed["data"]] == ids[::-1]  # newest first
    assert listed["pagination"] == {"total": 5, "limit": 20, "offset": 0, "has_more": False}
    assert set(listed["data"][-1]) == {"execution_id", "status", "initial_goal", "config_profile", "created_at",
                                       "completed_at"}
    page = roma.get(API, params={"limit": 2, "offset": 2, "order": "asc"}).json()
    assert [e["execution_id"] for e in page["data"]] == ids[2:4]
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 2, "has_more": True}
    fast = roma.get(API, params={"profile": "fast"}).json()
    assert {e["execution_id"] for e in fast["data"]} == {ids[1], ids[3]}
    completed = roma.get(API, params={"status": "completed"}).json()
    assert [e["execution_id"] for e in completed["data"]] == [ids[0]]
    future = roma.get(API, params={"created_after": "2999-01-01T00:00:00Z"}).json()
    assert future["data"] == [] and future["pagination"]["total"] == 0
    past = roma.get(API, params={"created_before": "2000-01-01T00:00:00Z"}).json()
    assert past["data"] == []


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"offset": "-1"}, {"sort": "goal"},
               {"order": "up"}, {"created_after": "yesterday"}],
)
def test_list_rejects_bad_parameters(roma: httpx.Client, params: dict[str, str]) -> None:
    response = roma.get(API, params=params)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["details"]["field"] == next(iter(params))


# -- auth, errors, rate limits, faults -------------------------------------------------------------------------
def test_auth_is_the_x_api_key_header(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    with httpx.Client(base_url=emulator.base_url("izieroma"), timeout=10) as http:
        assert http.get(API, headers={"x-api-key": KEY}).status_code == 200
        for headers in ({}, {"X-API-Key": "sk_live_wrong"}, {"Authorization": f"Bearer {KEY}"}):
            response = http.post(API, json={"goal": "g"}, headers=headers)
            assert response.status_code == 401
            assert error_of(response) == {"code": "unauthorized", "message": "Invalid or revoked API key",
                                          "details": {}}
    assert [e["auth"] for e in control.journal()] == ["ok", "missing", "invalid", "missing"]
    assert control.executions() == []


def test_rate_limit_headers_on_every_answer_and_the_429_body(roma: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("izieroma", "3/min")
    answers = [roma.get(API), roma.get(f"{API}/exec_1a2b3c4d5e6f/status"), roma.post(API, json={}),
               roma.get(API)]
    assert [r.status_code for r in answers] == [200, 404, 400, 429]
    for response in answers:
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    limited = answers[-1]
    assert int(limited.headers["Retry-After"]) >= 1
    assert error_of(limited)["code"] == "rate_limit_exceeded"


def test_no_rate_limit_headers_without_a_limit(roma: httpx.Client) -> None:
    assert "X-RateLimit-Limit" not in roma.get(API).headers


@pytest.mark.parametrize(("kind", "code"), [("500", "internal_error"), ("503", "service_unavailable"),
                                            ("429", "rate_limit_exceeded")])
def test_injected_faults_answer_in_romas_error_shape(
    roma: httpx.Client, control: EmulatorClient, kind: str, code: str
) -> None:
    control.add_fault(vendor="izieroma", action="create", kind=kind)
    response = roma.post(API, json={"goal": "g"})
    assert response.status_code == int(kind) and error_of(response)["code"] == code
    assert control.executions() == []  # a faulted create creates nothing
    assert create(roma)["execution_id"]


def test_unknown_path_is_404_and_journaled(roma: httpx.Client, control: EmulatorClient) -> None:
    response = roma.get("/api/v2/nothing")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    (entry,) = control.journal(vendor="izieroma")
    assert (entry["action"], entry["path"], entry["status_code"]) == ("other", "/izieroma/api/v2/nothing", 404)


def test_openapi_lists_the_izieroma_routes(emulator: EmulatorProcess) -> None:
    paths = httpx.get(f"{emulator.url}/_emulator/openapi.json").json()["paths"]
    for path in ("/izieroma/api/v1/executions", "/izieroma/api/v1/executions/{execution_id}",
                 "/izieroma/api/v1/executions/{execution_id}/status", "/izieroma/api/v1/executions/{execution_id}/dag",
                 "/izieroma/api/v1/executions/{execution_id}/cancel"):
        assert path in paths
