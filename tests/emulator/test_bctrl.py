"""The bctrl router: paths, invocation payloads, idempotency, async cancel, error shape and 429s, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_cancel.emulator.bctrl import BUSY_RUNTIME_ID, FORBIDDEN_SUBACCOUNT, MISSING_ID
from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SPACE = "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01"
RUNTIME = "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7"
CREATE = f"/v1/spaces/{SPACE}/runtimes/{RUNTIME}/invocations"
STEPS = [
    {"call": "browser.goto", "args": ["https://example.com"], "bind": "page1", "ref": "s1",
     "options": {"dryRun": False, "timeoutMs": 30000}},
    {"call": "browser.click", "args": ["#buy"], "options": {"timeoutMs": 5000, "logs": "capture"}},
]


@pytest.fixture
def bctrl(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emulator.base_url("bctrl"), headers=headers, timeout=10) as client:
        yield client


def invoke(bctrl: httpx.Client, scenario: str = "succeed:2", *, steps: list | None = None,
           **extra: Any) -> dict[str, Any]:
    body = {"mode": "fail-fast", "runtimeId": RUNTIME, "steps": steps or STEPS, "metadata": {"emulate": scenario},
            **extra}
    response = bctrl.post(CREATE, json=body)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def read(bctrl: httpx.Client, invocation_id: str) -> dict[str, Any]:
    response = bctrl.get(f"/v1/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body: dict[str, Any] = response.json()
    return body


def test_create_answers_202_with_the_full_invocation(bctrl: httpx.Client, control: EmulatorClient) -> None:
    response = bctrl.post(CREATE, json={"steps": STEPS, "idempotencyKey": "k-1", "metadata": {"team": "growth"}})
    assert response.status_code == 202 and response.headers["x-request-id"].startswith("req_")
    inv = response.json()
    assert UUID.fullmatch(inv["id"]) and UUID.fullmatch(inv["runId"])
    assert (inv["status"], inv["spaceId"], inv["runtimeId"]) == ("queued", SPACE, RUNTIME)
    assert (inv["runtimeKind"], inv["executionMode"], inv["entryCall"]) == ("browser", "durable", "browser.goto")
    assert (inv["stepCount"], inv["artifactCount"], inv["sequenceNo"]) == (2, 0, 1)
    assert inv["request"] == {"idempotencyKey": "k-1", "mode": "fail-fast", "runtimeId": RUNTIME, "steps": STEPS}
    assert inv["metadata"] == {"team": "growth"} and inv["result"] is None and inv["error"] is None
    assert inv["createdAt"].endswith("Z") and inv["finishedAt"] is None and inv["cancelRequestedAt"] is None
    record = control.execution(inv["id"])
    assert record["vendor"] == "bctrl" and record["idempotency_key"] == "k-1"
    assert invoke(bctrl)["sequenceNo"] == 2  # per runtime


def test_reads_move_through_dispatching_and_running_to_succeeded(bctrl: httpx.Client) -> None:
    inv = invoke(bctrl, "succeed:3")
    seen = [read(bctrl, inv["id"]) for _ in range(4)]
    assert [s["status"] for s in seen] == ["dispatching", "running", "running", "succeeded"]
    assert seen[1]["progress"] == {"currentCall": "browser.goto", "lastEventType": "step.started", "step": 1,
                                   "totalSteps": 2, "message": "Running browser.goto"}
    assert seen[2]["progress"]["step"] == 2 and seen[2]["startedAt"] and seen[2]["lastHeartbeatAt"]
    done = seen[3]
    assert done["result"]["ok"] is True and done["result"]["mode"] == "fail-fast"
    assert [(s["index"], s["call"], s["ok"]) for s in done["result"]["steps"]] == [
        (0, "browser.goto", True), (1, "browser.click", True)]
    assert done["result"]["steps"][0]["binding"]["alias"] == "page1"
    assert done["error"] is None and done["finishedAt"] and isinstance(done["durationMs"], int)


def test_a_failing_step_carries_code_message_and_hint(bctrl: httpx.Client) -> None:
    inv = invoke(bctrl, "fail:0")
    body = read(bctrl, inv["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "invocation.failed" and "browser.click" in body["error"]["message"]
    first, failed = body["result"]["steps"]
    assert first["ok"] is True and failed["ok"] is False and body["result"]["ok"] is False
    assert failed["error"]["code"] == "TIMEOUT" and "5000 ms" in failed["error"]["message"]
    assert failed["error"]["hint"]


def test_partial_is_timed_out_and_remote_cancel_is_cancelled(bctrl: httpx.Client, control: EmulatorClient) -> None:
    timed_out = read(bctrl, invoke(bctrl, "partial:0")["id"])
    assert timed_out["status"] == "timed_out" and timed_out["error"]["code"] == "invocation.timed_out"
    assert [s["call"] for s in timed_out["result"]["steps"]] == ["browser.goto"]
    remote = read(bctrl, invoke(bctrl, "remote_cancel:0")["id"])
    assert remote["status"] == "cancelled" and remote["error"]["code"] == "invocation.cancelled"
    assert "another client" in remote["error"]["message"] and remote["cancelRequestedAt"]
    assert control.cancels(remote["id"]) == []


def test_cancel_is_asynchronous_then_409_once_terminal(bctrl: httpx.Client, control: EmulatorClient) -> None:
    inv = invoke(bctrl, "forever")
    read(bctrl, inv["id"])
    read(bctrl, inv["id"])
    first = bctrl.post(f"/v1/invocations/{inv['id']}/cancel", json={})
    assert first.status_code == 200 and first.headers["x-request-id"]
    assert first.json()["status"] == "cancelling" and first.json()["cancelRequestedAt"]
    assert first.json()["progress"]["message"] == "Cancel requested"
    assert control.execution(inv["id"])["state"] == "cancelling"
    again = bctrl.post(f"/v1/invocations/{inv['id']}/cancel")  # empty body, still live: accepted
    assert again.status_code == 200 and again.json()["cancelRequestedAt"] == first.json()["cancelRequestedAt"]
    after = read(bctrl, inv["id"])
    assert after["status"] == "cancelled" and after["error"]["code"] == "invocation.cancelled"
    assert "caller's request" in after["error"]["message"] and after["finishedAt"]
    refused = bctrl.post(f"/v1/invocations/{inv['id']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["code"] == "invocation.not_cancellable" and "cancelled" in refused.json()["error"]
    record = control.execution(inv["id"])
    assert (record["state"], record["cancelled_by"], record["cancel_requests"]) == ("cancelled", "api", 3)
    assert [e["status_code"] for e in control.cancels(inv["id"])] == [200, 200, 409]


def test_idempotency_key_in_body_or_header(bctrl: httpx.Client, control: EmulatorClient) -> None:
    body = {"runtimeId": RUNTIME, "steps": STEPS, "idempotencyKey": "airflow:d:r:t:try1"}
    first = bctrl.post(CREATE, json=body)
    replay = bctrl.post(CREATE, json=body, headers={"Idempotency-Key": "airflow:d:r:t:try1"})
    by_header = bctrl.post(CREATE, json={"steps": STEPS}, headers={"Idempotency-Key": "hdr-1"})
    header_replay = bctrl.post(CREATE, json={"steps": STEPS}, headers={"Idempotency-Key": "hdr-1"})
    assert [r.status_code for r in (first, replay, by_header, header_replay)] == [202] * 4
    assert first.json()["id"] == replay.json()["id"] != by_header.json()["id"] == header_replay.json()["id"]
    conflict = bctrl.post(CREATE, json={**body, "steps": STEPS[:1]})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency.conflict"
    mismatch = bctrl.post(CREATE, json=body, headers={"Idempotency-Key": "other"})
    assert mismatch.status_code == 400 and mismatch.json()["code"] == "request.invalid"
    assert len(control.executions(vendor="bctrl")) == 2


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "steps"),
        ({"steps": []}, "steps"),
        ({"steps": "browser.goto"}, "steps"),
        ({"steps": ["browser.goto"]}, "steps[0]"),
        ({"steps": [{"args": []}]}, "steps[0].call"),
        ({"steps": [{"call": "  "}]}, "steps[0].call"),
        ({"steps": [{"call": "a.b"}, {"call": 3}]}, "steps[1].call"),
        ({"steps": [{"call": "a.b", "args": "x"}]}, "steps[0].args"),
        ({"steps": [{"call": "a.b", "bind": 1}]}, "steps[0].bind"),
        ({"steps": [{"call": "a.b", "options": []}]}, "steps[0].options"),
        ({"steps": [{"call": "a.b", "options": {"dryRun": "no"}}]}, "steps[0].options.dryRun"),
        ({"steps": [{"call": "a.b", "options": {"timeoutMs": 0}}]}, "steps[0].options.timeoutMs"),
        ({"steps": [{"call": "a.b", "options": {"logs": "all"}}]}, "steps[0].options.logs"),
        ({"steps": [{"call": "a.b"}], "mode": "best-effort"}, "mode"),
        ({"steps": [{"call": "a.b"}], "runtimeId": SPACE}, "runtimeId"),
        ({"steps": [{"call": "a.b"}], "metadata": [1]}, "metadata"),
        ({"steps": [{"call": "a.b"}], "idempotencyKey": ""}, "idempotencyKey"),
    ],
)
def test_create_rejects_invalid_requests(
    bctrl: httpx.Client, control: EmulatorClient, body: dict[str, Any], path: str
) -> None:
    response = bctrl.post(CREATE, json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert (error["code"], error["reasonClass"], error["details"]) == ("request.invalid", "invalid_input",
                                                                       {"path": path})
    assert error["requestId"] == response.headers["x-request-id"] and isinstance(error["error"], str)
    assert control.executions() == []


def test_body_that_is_not_json_or_not_an_object(bctrl: httpx.Client, control: EmulatorClient) -> None:
    for kwargs in ({"content": b"{nope"}, {"json": ["steps"]}):
        response = bctrl.post(CREATE, **kwargs)
        assert response.status_code == 400 and response.json()["code"] == "request.invalid"
    assert control.executions() == []


@pytest.mark.parametrize(
    ("space", "runtime", "status", "code"),
    [
        (MISSING_ID, RUNTIME, 404, "runtime.not_found"),
        (SPACE, MISSING_ID, 404, "runtime.not_found"),
        (SPACE, "not-a-uuid", 404, "runtime.not_found"),
        (SPACE, BUSY_RUNTIME_ID, 409, "runtime.controller_busy"),
    ],
)
def test_special_ids(
    bctrl: httpx.Client, control: EmulatorClient, space: str, runtime: str, status: int, code: str
) -> None:
    response = bctrl.post(f"/v1/spaces/{space}/runtimes/{runtime}/invocations", json={"steps": STEPS})
    assert response.status_code == status and response.json()["code"] == code
    assert response.json()["hint"] and control.executions() == []


def test_runtime_not_found_body_shape(bctrl: httpx.Client) -> None:
    body = bctrl.post(f"/v1/spaces/{SPACE}/runtimes/{MISSING_ID}/invocations", json={"steps": STEPS}).json()
    assert body["error"] == "Runtime not found" and body["reasonClass"] == "not_found"
    assert body["requestId"].startswith("req_")


def test_forbidden_subaccount(bctrl: httpx.Client, control: EmulatorClient) -> None:
    response = bctrl.post(CREATE, json={"steps": STEPS}, headers={"BCTRL-Subaccount-Id": FORBIDDEN_SUBACCOUNT})
    assert response.status_code == 403 and response.json()["code"] == "auth.forbidden"
    ok = bctrl.post(CREATE, json={"steps": STEPS}, headers={"BCTRL-Subaccount-Id": "sub_123"})
    assert ok.status_code == 202


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/cancel"), ("POST", "/wait")])
def test_unknown_invocation_is_404(bctrl: httpx.Client, control: EmulatorClient, method: str, suffix: str) -> None:
    unknown = "3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f"
    response = bctrl.request(method, f"/v1/invocations/{unknown}{suffix}")
    assert response.status_code == 404 and response.json()["code"] == "invocation.not_found"
    (entry,) = control.journal(execution_id=unknown)
    assert entry["status_code"] == 404


def test_unknown_path_is_404_in_bctrl_shape(bctrl: httpx.Client, control: EmulatorClient) -> None:
    response = bctrl.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    (entry,) = control.journal(vendor="bctrl")
    assert (entry["action"], entry["path"]) == ("other", "/bctrl/v1/nothing")


def test_bearer_auth(emulator: EmulatorProcess, control: EmulatorClient) -> None:
    with httpx.Client(base_url=emulator.base_url("bctrl"), timeout=10) as http:
        assert http.post(CREATE, json={"steps": STEPS}, headers={"authorization": f"bearer {KEY}"}).status_code == 202
        for headers in ({}, {"Authorization": KEY}, {"Authorization": "Basic abc"}, {"X-API-Key": KEY}):
            response = http.post(CREATE, json={"steps": STEPS}, headers=headers)
            assert response.status_code == 401
            body = response.json()
            assert (body["code"], body["reasonClass"]) == ("auth.required", "unauthorized")
            assert body["error"] == "Authentication required: the API key is missing or invalid."
    assert [e["auth"] for e in control.journal()] == ["ok", "missing", "missing", "missing", "missing"]
    assert len(control.executions()) == 1


def test_rate_limit_429_with_retry_after(bctrl: httpx.Client, control: EmulatorClient) -> None:
    control.set_rate_limit("bctrl", "2/min")
    inv = invoke(bctrl)
    assert bctrl.get(f"/v1/invocations/{inv['id']}").status_code == 200
    limited = bctrl.get(f"/v1/invocations/{inv['id']}")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "X-RateLimit-Remaining" not in limited.headers  # bctrl documents Retry-After only
    body = limited.json()
    assert (body["code"], body["reasonClass"]) == ("rate_limited", "rate_limited")
    assert "Retry-After" in body["error"] and body["requestId"] == limited.headers["x-request-id"]


def test_injected_faults_speak_bctrl(bctrl: httpx.Client, control: EmulatorClient) -> None:
    inv = invoke(bctrl)
    control.add_fault(vendor="bctrl", action="status", kind="429", count=1, retry_after=3)
    control.add_fault(vendor="bctrl", action="status", kind="503", count=1)
    limited, unavailable = (bctrl.get(f"/v1/invocations/{inv['id']}") for _ in range(2))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["code"] == "rate_limited"
    assert unavailable.status_code == 503 and unavailable.json()["code"] == "runtime.host_unavailable"
    assert control.execution(inv["id"])["polls"] == 0  # faults answer before the handler


def test_wait_completes_or_times_out(bctrl: httpx.Client) -> None:
    done = bctrl.post(f"/v1/invocations/{invoke(bctrl, 'succeed:0')['id']}/wait", json={"timeoutMs": 5000})
    assert done.status_code == 200 and done.json()["waitStatus"] == "completed"
    assert done.json()["status"] == "succeeded"
    waiting = bctrl.post(f"/v1/invocations/{invoke(bctrl, 'forever')['id']}/wait", json={"timeoutMs": 100})
    assert waiting.json()["waitStatus"] == "timeout" and waiting.json()["retryAfterSeconds"] == 1
    assert waiting.json()["status"] in ("dispatching", "running")
    assert bctrl.post(f"/v1/invocations/{invoke(bctrl)['id']}/wait", json={"timeoutMs": -1}).status_code == 400


def test_list_run_invocations_with_filters_and_cursor(bctrl: httpx.Client) -> None:
    first = invoke(bctrl, "succeed:0")
    read(bctrl, first["id"])
    others = [invoke(bctrl, "forever") for _ in range(3)]
    run_id = first["runId"]
    assert all(o["runId"] == run_id for o in others)
    page = bctrl.get(f"/v1/runs/{run_id}/invocations", params={"limit": 2}).json()
    assert [i["id"] for i in page["data"]] == [first["id"], others[0]["id"]] and page["nextCursor"]
    rest = bctrl.get(f"/v1/runs/{run_id}/invocations", params={"limit": 2, "cursor": page["nextCursor"]}).json()
    assert [i["id"] for i in rest["data"]] == [o["id"] for o in others[1:]] and rest["nextCursor"] is None
    done = bctrl.get(f"/v1/runs/{run_id}/invocations", params=[("status", "succeeded"), ("status", "failed")])
    assert [(i["id"], i["status"]) for i in done.json()["data"]] == [(first["id"], "succeeded")]
    assert bctrl.get(f"/v1/runs/{run_id}/invocations", params={"limit": 0}).status_code == 400


def test_openapi_lists_the_bctrl_routes(emulator: EmulatorProcess) -> None:
    paths = httpx.get(f"{emulator.url}/_emulator/openapi.json").json()["paths"]
    for path in ("/bctrl/v1/spaces/{space_id}/runtimes/{runtime_id}/invocations",
                 "/bctrl/v1/invocations/{invocation_id}", "/bctrl/v1/invocations/{invocation_id}/cancel",
                 "/bctrl/v1/invocations/{invocation_id}/wait", "/bctrl/v1/runs/{run_id}/invocations",
                 "/bctrl/v1/runs/{run_id}/invocations/{invocation_id}",
                 "/bctrl/v1/runtimes/{runtime_id}/invocations",
                 "/bctrl/v1/runtimes/{runtime_id}/invocations/{invocation_id}/cancel",
                 "/bctrl/v1/runtimes/{runtime_id}/invocations/{invocation_id}/wait"):
        assert path in paths


# -- generation 2: runtime-scoped invocations of one action (bctrl's published OpenAPI types) -------------------
RUNTIME_CREATE = f"/v1/runtimes/{RUNTIME}/invocations"
# The properties of the spec's Invocation schema (components.schemas.Invocation), all of them always sent.
ACTION_INVOCATION_KEYS = {"action", "createdAt", "durationSeconds", "error", "finishedAt", "id", "output", "runId",
                          "runtimeId", "startedAt", "status"}


def act(bctrl: httpx.Client, scenario: str = "succeed:2", key: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"action": "extract", "instruction": "Extract the order total.", "metadata": {"emulate": scenario},
            **extra}
    response = bctrl.post(RUNTIME_CREATE, json=body, headers={"Idempotency-Key": key} if key else {})
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def test_runtime_create_answers_202_with_the_specs_invocation(bctrl: httpx.Client, control: EmulatorClient) -> None:
    inv = act(bctrl, key="k-2")
    assert set(inv) == ACTION_INVOCATION_KEYS
    assert (inv["status"], inv["action"], inv["runtimeId"]) == ("queued", "extract", RUNTIME)
    assert UUID.fullmatch(inv["id"]) and UUID.fullmatch(inv["runId"]) and inv["output"] is None
    assert control.execution(inv["id"])["idempotency_key"] == "k-2"
    assert act(bctrl, key="k-2")["id"] == inv["id"]  # the same key and request replays the same invocation
    conflict = bctrl.post(RUNTIME_CREATE, json={"action": "act", "instruction": "Click buy"},
                          headers={"Idempotency-Key": "k-2"})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency.conflict"


@pytest.mark.parametrize(("body", "path"), [
    ({"steps": STEPS}, "steps"),  # a generation-1 body is not an action request
    ({"instruction": "x"}, "action"),
    ({"action": "dance", "instruction": "x"}, "action"),
    ({"action": "observe"}, "instruction"),
    ({"action": "act"}, "instruction"),
    ({"action": "extract", "instruction": "  "}, "instruction"),
    ({"action": "extract", "metadata": ["x"]}, "metadata"),
    ({"action": "solveCaptcha", "timeoutSeconds": 0}, "timeoutSeconds"),
])
def test_runtime_create_checks_the_action_request(bctrl: httpx.Client, control: EmulatorClient,
                                                  body: dict[str, Any], path: str) -> None:
    response = bctrl.post(RUNTIME_CREATE, json=body)
    assert response.status_code == 400 and response.json()["code"] == "request.invalid"
    assert response.json()["details"] == {"path": path}
    assert control.executions(vendor="bctrl") == []


def test_runtime_invocation_reads_succeed_with_output_or_fail_with_a_code(bctrl: httpx.Client) -> None:
    inv = act(bctrl, "succeed:2")
    seen = [read(bctrl, inv["id"]) for _ in range(3)]
    assert [s["status"] for s in seen] == ["dispatching", "running", "succeeded"]
    assert all(set(s) == ACTION_INVOCATION_KEYS for s in seen)
    assert seen[-1]["output"]["action"] == "extract" and seen[-1]["error"] is None
    assert seen[-1]["finishedAt"] and isinstance(seen[-1]["durationSeconds"], float)
    failed = read(bctrl, act(bctrl, "fail:0")["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invocation.failed" and failed["output"] is None
    timed_out = read(bctrl, act(bctrl, "partial:0")["id"])
    assert timed_out["status"] == "timed_out" and timed_out["error"]["code"] == "invocation.timed_out"


def test_runtime_cancel_takes_no_body_is_asynchronous_and_only_on_its_runtime(
    bctrl: httpx.Client, control: EmulatorClient
) -> None:
    inv = act(bctrl, "forever")
    elsewhere = bctrl.post(f"/v1/runtimes/{BUSY_RUNTIME_ID}/invocations/{inv['id']}/cancel")
    assert elsewhere.status_code == 404 and elsewhere.json()["code"] == "invocation.not_found"
    cancel = bctrl.post(f"{RUNTIME_CREATE}/{inv['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelling"
    assert [e["body_bytes"] for e in control.cancels(inv["id"])] == [0, 0]  # the journal sees "no body"
    after = read(bctrl, inv["id"])
    assert after["status"] == "cancelled" and after["error"]["code"] == "invocation.cancelled"
    refused = bctrl.post(f"{RUNTIME_CREATE}/{inv['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["code"] == "invocation.not_cancellable"


def test_runtime_wait_takes_seconds_and_the_sdks_milliseconds(bctrl: httpx.Client) -> None:
    live = act(bctrl, "forever")
    waited = bctrl.post(f"{RUNTIME_CREATE}/{live['id']}/wait", json={"timeoutSeconds": 0.2})
    assert waited.status_code == 200
    assert (waited.json()["waitStatus"], waited.json()["retryAfterSeconds"]) == ("timeout", 1)
    assert set(waited.json()) == ACTION_INVOCATION_KEYS | {"waitStatus", "retryAfterSeconds"}
    done = act(bctrl, "succeed:0")
    by_ms = bctrl.post(f"{RUNTIME_CREATE}/{done['id']}/wait", json={"timeoutMs": 2000})  # what SDK 0.1.0 sends
    assert by_ms.json()["waitStatus"] == "completed" and by_ms.json()["status"] == "succeeded"
    assert bctrl.post(f"{RUNTIME_CREATE}/{done['id']}/wait", json={"timeoutSeconds": -1}).status_code == 400
    bctrl.post(f"{RUNTIME_CREATE}/{live['id']}/cancel")


def test_runs_list_and_get_serve_both_generations(bctrl: httpx.Client) -> None:
    steps, action = invoke(bctrl, "succeed:1"), act(bctrl, "succeed:1")
    run_id = steps["runId"]
    assert action["runId"] == run_id  # one run per runtime, whatever created the invocation
    listed = {i["id"]: i for i in bctrl.get(f"/v1/runs/{run_id}/invocations").json()["data"]}
    assert listed[action["id"]]["action"] == "extract" and "entryCall" not in listed[action["id"]]
    assert listed[steps["id"]]["entryCall"] == "browser.goto"
    one = bctrl.get(f"/v1/runs/{run_id}/invocations/{action['id']}")
    assert one.status_code == 200 and one.json()["id"] == action["id"]
    other_run = "00000000-0000-4000-8000-000000000001"
    assert bctrl.get(f"/v1/runs/{other_run}/invocations/{action['id']}").status_code == 404
