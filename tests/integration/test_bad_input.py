"""Bad input across all five vendors, the gaps the per-vendor lifecycle tests leave: every id form on every vendor,
unusable connections, wrong-typed common operator arguments, and responses missing fields or too large.

Each must fail with a clear error naming the field and the connection, before anything is started remotely.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import respx

from airflow_provider_cancel.core import http
from airflow_provider_cancel.core.errors import ExecutionApiError, ProviderConfigError
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.trigger import ExecutionTrigger
from airflow_provider_cancel.vendors.b3os import B3osHook, B3osRunWorkflowOperator
from airflow_provider_cancel.vendors.bctrl import BctrlHook, BctrlInvokeOperator
from airflow_provider_cancel.vendors.dune import DuneHook, DuneRunQueryOperator
from airflow_provider_cancel.vendors.izieroma import IzieromaHook, IzieromaRunOperator
from airflow_provider_cancel.vendors.meibel import MeibelHook, MeibelRunBatchOperator

from .conftest import API_KEY, VENDORS, drive_trigger, make_context

HOOKS: dict[str, type[ExecutionHook]] = {
    "dune": DuneHook, "izieroma": IzieromaHook, "bctrl": BctrlHook, "meibel": MeibelHook, "b3os": B3osHook,
}
ARGS = {  # valid vendor arguments, so only the argument under test is wrong
    "dune": (DuneRunQueryOperator, {"sql": "SELECT 1"}),
    "izieroma": (IzieromaRunOperator, {"goal": "Summarise"}),
    "bctrl": (BctrlInvokeOperator, {"space_id": "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01",
                                    "runtime_id": "a1c2e3f4-5b6d-4e7f-8091-a2b3c4d5e6f7",
                                    "steps": [{"call": "browser.goto", "args": ["https://example.com"]}]}),
    "meibel": (MeibelRunBatchOperator, {"batch_spec": {"name": "n", "agent": "a", "input": {"datasource_id": "d"}}}),
    "b3os": (B3osRunWorkflowOperator, {"workflow_id": "wf_prices"}),
}
BAD_IDS = ["", "   ", "a/b", "../x", "..", "a?b", "a#b", "a b", "é" * 12, "x" * 10_240, "exec_\u202eabc"]


def vendor_requests(emu, vendor: str) -> int:
    return len(emu.journal(vendor=vendor))


# -- ids -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vendor", VENDORS)
def test_every_bad_id_form_is_refused_by_status_and_cancel_before_any_request(emu, vendor):
    hook = HOOKS[vendor](f"{vendor}_emu")
    seen = vendor_requests(emu, vendor)
    for bad in BAD_IDS:
        for action in (hook.get_status, hook.cancel):
            with pytest.raises(ProviderConfigError, match=r"(execution|run|invocation) id") as err:
                action(bad)
            assert len(str(err.value)) < 400  # a 10 KB id is shortened in the message, not echoed
    assert vendor_requests(emu, vendor) == seen


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_trigger_with_a_bad_id_ends_with_an_error_and_sends_nothing(emu, vendor):
    seen = vendor_requests(emu, vendor)
    hook = HOOKS[vendor]
    trigger = ExecutionTrigger(hook_class=f"{hook.__module__}.{hook.__qualname__}", conn_id=f"{vendor}_emu",
                               execution_id="x" * 10_240, poll_interval=0.05)
    # A trigger trusts the id its operator got from the vendor; a 10 KB one is not a vendor's id.
    with pytest.raises(ProviderConfigError, match="unusable execution id"):
        await drive_trigger(trigger, timeout=10)
    assert vendor_requests(emu, vendor) == seen


# -- connections ---------------------------------------------------------------------------------------------------
def use_conn(monkeypatch, vendor: str, **conn) -> str:
    conn_id = f"{vendor}_bad"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": vendor, **conn}))
    return conn_id


def start(vendor: str, conn_id: str) -> None:
    operator, args = ARGS[vendor]
    operator(task_id="t", conn_id=conn_id, deferrable=False, **args).execute(make_context())


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"host": "HOST"}, "has no API key: put the key in its password field"),
        ({"host": "HOST", "password": "   "}, "has no API key"),
        ({"host": "ftp://files.example.com", "password": API_KEY}, "is not an http\\(s\\) URL"),
        ({"host": "http://", "password": API_KEY}, "is not an http\\(s\\) URL"),
        ({"host": "http://api.example.com", "password": API_KEY}, "plain http to a non-loopback address"),
        ({"host": "http://10.0.0.7:8080", "password": API_KEY}, "allow_insecure_http"),
        ({"host": "HOST", "password": API_KEY, "extra": {"timeout": "soon"}}, "extra 'timeout' must be a number"),
        ({"host": "HOST", "password": API_KEY, "extra": {"max_retries": -1}}, "extra 'max_retries' must not be neg"),
    ],
)
def test_unusable_connections_fail_clearly_naming_the_connection_and_start_nothing(
    emu, emulator, monkeypatch, vendor, conn, message
):
    if conn.get("host") == "HOST":
        conn = {**conn, "host": emulator.base_url(vendor)}
    conn_id = use_conn(monkeypatch, vendor, **conn)
    seen = vendor_requests(emu, vendor)
    with pytest.raises(ProviderConfigError, match=message) as err:
        start(vendor, conn_id)
    assert repr(conn_id) in str(err.value)
    assert API_KEY not in str(err.value)
    assert vendor_requests(emu, vendor) == seen


def test_plain_http_off_loopback_is_accepted_only_when_allowed_explicitly(monkeypatch):
    for allow, accepted in ((True, True), ("true", True), (False, False), ("no", False)):
        conn_id = use_conn(monkeypatch, "dune", host="http://dune.internal:8080", password=API_KEY,
                           extra={"allow_insecure_http": allow})
        if accepted:
            assert DuneHook(conn_id).client.base_url == "http://dune.internal:8080"
        else:
            with pytest.raises(ProviderConfigError, match="allow_insecure_http"):
                DuneHook(conn_id).client  # noqa: B018 - building the client is the check


@pytest.mark.parametrize("vendor", VENDORS)
def test_an_unreachable_host_names_the_connection_and_the_request(monkeypatch, vendor):
    # `.invalid` never resolves (RFC 6761); no retries so the test does not wait through back-offs.
    conn_id = use_conn(monkeypatch, vendor, host="https://api.nonexistent.invalid", password=API_KEY,
                       extra={"max_retries": 0, "connect_timeout": 2})
    with pytest.raises(httpx.TransportError) as err:
        start(vendor, conn_id)
    note = " ".join(getattr(err.value, "__notes__", []))
    assert f"(connection {conn_id!r}) POST https://api.nonexistent.invalid/" in note
    assert API_KEY not in note and API_KEY not in str(err.value)


# -- common operator arguments: wrong types caught at DAG parse --------------------------------------------------------
@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": 5, "max_poll_interval": 1}, "max_poll_interval"),
        ({"on_existing": "ignore"}, "on_existing"),
    ],
)
def test_bad_common_arguments_fail_at_dag_parse_naming_the_field(vendor, kwargs, field):
    operator, args = ARGS[vendor]
    with pytest.raises(ProviderConfigError, match=field):
        operator(task_id="t", **args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": "5"}, "poll_interval"),  # today: TypeError "'<' not supported between 'int' and 'str'"
        ({"cancel_on_kill": "no"}, "cancel_on_kill"),  # today: accepted, and truthy, so it DOES cancel
        ({"deferrable": "false"}, "deferrable"),  # today: accepted, and truthy, so it defers
        ({"wait_for_completion": "no"}, "wait_for_completion"),
        ({"conn_id": 42}, "conn_id"),
    ],
)
def test_wrong_typed_common_arguments_fail_at_dag_parse_naming_the_field(kwargs, field):
    operator, args = ARGS["dune"]
    with pytest.raises(ProviderConfigError, match=field):
        operator(task_id="t", **args, **kwargs)


# -- responses: missing fields, too large --------------------------------------------------------------------------
MOCK = "https://{vendor}.mock.test"


@pytest.fixture
def mocked(monkeypatch):
    """Every vendor on a mocked https host (conn `<vendor>_mock`): for answers the emulator never gives."""
    for vendor in VENDORS:
        use_conn(monkeypatch, vendor, host=MOCK.format(vendor=vendor), password=API_KEY,
                 extra={"org_id": "org_abc123"} if vendor == "b3os" else {})
    with respx.mock(assert_all_called=False) as router:
        yield router


def status_route(router, vendor: str):
    hook = HOOKS[vendor](f"{vendor}_bad")
    call = hook.status_call(hook.execution_id_example)
    return hook, router.route(method=call.method, url=MOCK.format(vendor=vendor) + call.path)


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("body", [{}, {"unexpected": True}, [1, 2], "text", None])
def test_a_status_answer_missing_required_fields_is_a_clear_error_not_a_state(mocked, vendor, body):
    hook, route = status_route(mocked, vendor)
    route.respond(200, json=body)
    with pytest.raises(ExecutionApiError) as err:
        hook.get_status(hook.execution_id_example)
    text = str(err.value)
    # Names the vendor, the request and the field (not yet the connection: see soak-readme.md).
    assert text.startswith(f"{hook.vendor} API GET "), text
    assert re.search(r"-> HTTP 200: unexpected response shape \((body|[a-z_]+): (Field required|Input should be)", text)
    assert route.call_count == 1  # a wrong shape is not retried: asking again gives the same answer


class Server:
    """A real HTTP server on loopback answering every request with one canned response and recording what came
    in: for answers the emulator never gives, on the async path too (respx cannot see the aiohttp transport)."""

    def __init__(self) -> None:
        self.status, self.headers, self.body = 200, {}, b"{}"
        self.requests: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_any(self) -> None:
                owner.requests.append((self.path, dict(self.headers)))
                self.send_response(owner.status)
                for name, value in {"Content-Type": "application/json", **owner.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            do_GET = do_POST = do_any

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    """A loopback server behind every vendor's `<vendor>_srv` connection."""
    srv = Server()
    for vendor in VENDORS:
        monkeypatch.setenv(f"AIRFLOW_CONN_{vendor.upper()}_SRV", json.dumps(
            {"conn_type": vendor, "host": srv.url, "password": API_KEY, "extra": {"max_retries": 1}}))
    yield srv
    srv.close()


def trigger_for(vendor: str) -> ExecutionTrigger:
    hook = HOOKS[vendor]
    return ExecutionTrigger(hook_class=f"{hook.__module__}.{hook.__qualname__}", conn_id=f"{vendor}_srv",
                            execution_id=hook.execution_id_example, poll_interval=0.05)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_huge_response_is_refused_with_a_clear_error_on_both_paths_and_not_retried(
    server, monkeypatch, vendor
):
    monkeypatch.setattr(http._config, "MAX_RESPONSE_BYTES", 4096)
    server.body = json.dumps({"padding": "x" * 10_000}).encode()
    hook = HOOKS[vendor](f"{vendor}_srv")
    with pytest.raises(ExecutionApiError, match=r"response of 10,0\d\d bytes is over the 4,096-byte limit") as err:
        await asyncio.to_thread(hook.get_status, hook.execution_id_example)
    assert f"(connection '{vendor}_srv')" in str(err.value)
    events = await drive_trigger(trigger_for(vendor), timeout=20)
    assert [e["kind"] for e in events] == ["error"] and "4,096-byte limit" in events[0]["message"]
    assert len(server.requests) == 2  # one each: a 200 that is too large is not asked for again


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_redirect_is_never_followed_with_the_key_on_either_path(server, vendor):
    elsewhere = Server()  # another host (port): it must never hear from us
    try:
        server.status, server.headers = 307, {"Location": f"{elsewhere.url}/steal"}
        hook = HOOKS[vendor](f"{vendor}_srv")
        with pytest.raises(ExecutionApiError, match=r"HTTP 307: unexpected redirect to .*not followed") as err:
            await asyncio.to_thread(hook.get_status, hook.execution_id_example)
        assert API_KEY not in str(err.value)
        events = await drive_trigger(trigger_for(vendor), timeout=20)
        assert [e["kind"] for e in events] == ["error"] and "not followed" in events[0]["message"]
        assert elsewhere.requests == []
        assert all(API_KEY in " ".join(headers.values()) for _, headers in server.requests)  # the key went here only
    finally:
        elsewhere.close()


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_create_answer_without_an_id_fails_clearly(mocked, vendor):
    operator, args = ARGS[vendor]
    mocked.route(method="POST", url__startswith=MOCK.format(vendor=vendor)).respond(200, json={"status": "queued"})
    with pytest.raises((ExecutionApiError, ProviderConfigError)) as err:
        operator(task_id="t", conn_id=f"{vendor}_bad", deferrable=False, **args).execute(make_context())
    assert "response" in str(err.value) or "execution id" in str(err.value), str(err.value)
