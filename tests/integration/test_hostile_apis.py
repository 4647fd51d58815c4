"""Hostile and broken APIs, over real HTTP on both paths for every vendor: loopback servers that misbehave byte by byte
(`hostile.py`), and the emulator's fault kinds that answer a request the vendor really carried out, then break the
answer. Nothing may be left unbounded, unowned or leaked.

- time: every request ends by its deadline, whatever the server drips; the kill paths keep their budgets;
- size: a body over the limit is refused by its Content-Length before it is read, or once the limit is reached;
- reading: whatever is odd in an answer (a wrong-typed optional field, inf/nan rate-limit headers, a value nested
  past Python's recursion limit), what can be read is: a create's id always, a status as transient when it cannot;
  an answer about another execution is never taken for ours;
- secrets: no key or URL credential in any error, warning, Test button message or trigger event, even when the
  vendor echoes it; a key or host the provider cannot send is refused by connection and field, never echoed;
- sockets: a hook's connections are closed when it is.

The same classes against the emulator's hostile fault kinds run whole tasks (sync and deferred) on every vendor:
the execution the vendor really started is the one the task owns, and ends in its true state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from airflow.providers.common.compat.module_loading import import_string

from airflow_provider_cancel.core import http
from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.http import MAX_RESPONSE_BYTES, DeadlineExceeded, is_transient
from airflow_provider_cancel.core.operator import KILL_RETRY, ExecutionOperator
from airflow_provider_cancel.core.state import ExecutionState
from airflow_provider_cancel.core.trigger import CANCEL_RETRY, ExecutionTrigger
from airflow_provider_cancel.registry import BY_CONN_TYPE
from airflow_provider_cancel.version_compat import kill_budget_seconds

from .conftest import API_KEY, VENDORS, FakeStore, FakeTI, defer, drive_trigger, make_context
from .hostile import HostileServer, Reply, wait_until

# Every vendor's hook (a few tests use Dune as the example on every line); parametrized tests run VENDORS.
HOOKS: dict[str, type[ExecutionHook]] = {vendor: import_string(spec.hook_path) for vendor, spec in BY_CONN_TYPE.items()}
OPERATORS: dict[str, type[ExecutionOperator]] = {
    vendor: import_string(BY_CONN_TYPE[vendor].operator_path) for vendor in VENDORS
}
MARGIN = 2.0  # seconds past a deadline a loaded 2-core machine may take to notice it


@pytest.fixture
def server(monkeypatch):
    """A hostile loopback server behind every vendor's `<vendor>_hostile` connection; `server.reply` decides."""
    srv = HostileServer()
    for vendor in HOOKS:
        monkeypatch.setenv(f"AIRFLOW_CONN_{vendor.upper()}_HOSTILE", json.dumps(
            {"conn_type": vendor, "host": srv.url, "password": API_KEY}))
    yield srv
    srv.close()


def hook(vendor: str) -> ExecutionHook:
    return HOOKS[vendor](f"{vendor}_hostile")


def execution_id(vendor: str) -> str:
    return HOOKS[vendor].execution_id_example


def timed(action, *args, **kwargs):
    """(what `action` raised or returned, seconds it took)."""
    started = time.monotonic()
    try:
        outcome = action(*args, **kwargs)
    except Exception as err:
        outcome = err
    return outcome, time.monotonic() - started


async def atimed(action, *args, **kwargs):
    started = time.monotonic()
    try:
        outcome = await action(*args, **kwargs)
    except Exception as err:
        outcome = err
    return outcome, time.monotonic() - started


# -- time: one total deadline per request ------------------------------------------------------------------------
DRIPS = {"headers": Reply(drip="all", drip_interval=0.3), "body": Reply(body=b'{"status": "running"}' + b" " * 400,
                                                                          drip="body", drip_interval=0.3)}


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("drip", sorted(DRIPS))
async def test_a_dripped_status_answer_ends_at_the_deadline_on_both_paths(server, vendor, drip):
    """One byte every 0.3 s passes every per-read timeout; the request's deadline still holds, sync and async."""
    server.reply = lambda request: DRIPS[drip]
    budget = 1.5
    sync, sync_took = await asyncio.to_thread(
        timed, hook(vendor).get_status, execution_id(vendor), deadline=time.monotonic() + budget)
    async_, async_took = await atimed(hook(vendor).aget_status, execution_id(vendor),
                                      deadline=time.monotonic() + budget)
    for outcome, took in ((sync, sync_took), (async_, async_took)):
        assert isinstance(outcome, DeadlineExceeded), outcome
        assert "no answer by the request's deadline (after 1." in str(outcome)
        assert f"(connection '{vendor}_hostile') GET" in str(outcome.__notes__)
        assert took < budget + MARGIN, took


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_retry_after_longer_than_what_is_left_ends_the_request_at_once(server, vendor):
    """A 429 asking for 6 s when 2 s are left: no wait that would end past the deadline, no second request."""
    server.reply = lambda request: Reply(429, {"error": "slow down"}, headers={"Retry-After": "6"})
    for read in (lambda: asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor),
                                           deadline=time.monotonic() + 2),
                 lambda: atimed(hook(vendor).aget_status, execution_id(vendor), deadline=time.monotonic() + 2)):
        before = len(server.requests)
        outcome, took = await read()
        assert getattr(outcome, "status_code", None) == 429 and outcome.retry_after == 6, outcome
        assert len(server.requests) == before + 1 and took < 1.0 + MARGIN


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_dripped_cancel_ends_at_the_cancel_deadline_on_both_paths(server, vendor):
    server.reply = lambda request: DRIPS["body"]
    sync, sync_took = await asyncio.to_thread(
        timed, hook(vendor).cancel, execution_id(vendor), deadline=time.monotonic() + 1.0)
    async_, async_took = await atimed(hook(vendor).acancel, execution_id(vendor), deadline=time.monotonic() + 1.0)
    assert isinstance(sync, DeadlineExceeded) and isinstance(async_, DeadlineExceeded), (sync, async_)
    assert sync_took < 1.0 + MARGIN and async_took < 1.0 + MARGIN


@pytest.mark.parametrize("vendor", VENDORS)
def test_on_kill_keeps_its_budget_against_a_dripped_cancel_answer(server, vendor):
    """Airflow sends SIGKILL ~5 s after SIGTERM (3.4: after killed_task_cleanup_time): on_kill's cancel must be
    over by then, whatever the server does."""
    server.reply = lambda request: DRIPS["headers"]
    task = OPERATORS[vendor](task_id="t", conn_id=f"{vendor}_hostile", **_operator_args(vendor))
    task.execution_id = task.hook.trust(execution_id(vendor))
    _, took = timed(task.on_kill)
    methods = [r.method for r in server.requests]
    assert methods and set(methods) == {"POST"}  # the cancel left at once, and only cancels followed
    if kill_budget_seconds() <= KILL_RETRY.give_up_after:  # up to 3.3 the one drip spends the whole budget
        assert methods == ["POST"]
    assert took < kill_budget_seconds() + MARGIN, took


async def test_the_triggers_cancel_keeps_its_budget_against_a_dripped_cancel_answer(server):
    """Every vendor at once (one event loop, as in the triggerer): each on_kill is over by the cancel budget."""
    server.reply = lambda request: DRIPS["headers"]

    async def kill(vendor: str) -> float:
        hook_class = HOOKS[vendor]
        trigger = ExecutionTrigger(hook_class=f"{hook_class.__module__}.{hook_class.__qualname__}",
                                   conn_id=f"{vendor}_hostile", execution_id=execution_id(vendor))
        _, took = await atimed(trigger.on_kill)
        return took

    took = await asyncio.gather(*(kill(vendor) for vendor in VENDORS))
    assert len(server.requests) >= len(VENDORS)
    assert max(took) < CANCEL_RETRY.give_up_after + MARGIN, took


def _operator_args(vendor: str) -> dict:
    from airflow_provider_cancel.emulator.testing import operator_args

    return operator_args(vendor, "forever")


# -- size: bodies that are huge or never end ---------------------------------------------------------------------
MiB = 1024 * 1024


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_huge_declared_body_is_refused_before_it_is_read_on_both_paths(server, vendor):
    server.reply = lambda request: Reply(body=b'{"padding": "', declared_length=600 * MiB)
    for outcome in (await asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor)),
                    await atimed(hook(vendor).aget_status, execution_id(vendor))):
        error = outcome[0]
        assert isinstance(error, ExecutionApiError), error
        assert error.status_code == 200 and "response of 629,145,600 bytes is over the 67,108,864-byte limit" in str(
            error)
    assert len(server.requests) == 2  # refused, not asked for again
    assert server.sent_bytes < MAX_RESPONSE_BYTES  # what the kernel buffered before the client hung up


@pytest.mark.parametrize("vendor", VENDORS)
async def test_an_endless_chunked_body_is_cut_at_the_limit_on_both_paths(server, vendor, monkeypatch):
    monkeypatch.setattr(http._config, "MAX_RESPONSE_BYTES", 1 * MiB)
    server.reply = lambda request: Reply(body=b'{"padding": "', chunked=True)  # never ends
    for outcome in (await asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor)),
                    await atimed(hook(vendor).aget_status, execution_id(vendor))):
        error = outcome[0]
        assert isinstance(error, ExecutionApiError), error
        assert error.status_code == 200 and "response is over the 1,048,576-byte limit of this provider" in str(error)
    assert len(server.requests) == 2


async def test_a_chunked_body_of_1_5_gib_is_cut_at_the_real_limit_on_both_paths(server):
    """The real 64 MiB limit (memory growth for this case is measured by benchmarks/huge_answers.py)."""
    server.reply = lambda request: Reply(body=b'{"padding": "', chunked=True, chunked_total=1536 * MiB)
    for outcome in (await asyncio.to_thread(timed, hook("dune").get_status, execution_id("dune")),
                    await atimed(hook("dune").aget_status, execution_id("dune"))):
        assert isinstance(outcome[0], ExecutionApiError) and "over the 67,108,864-byte limit" in str(outcome[0])
    assert server.sent_bytes < 3 * MAX_RESPONSE_BYTES  # both paths stopped reading at the limit


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_huge_error_answer_keeps_its_status(server, vendor):
    """A 503 whose body is too large is still a 503: a read is retried, the body is never read."""
    server.reply = lambda request: Reply(503, body=b"<html>", declared_length=600 * MiB)
    error, _ = await atimed(HOOKS[vendor](f"{vendor}_hostile", retry=http.NO_RETRY).aget_status,
                            execution_id(vendor))
    assert isinstance(error, ExecutionApiError) and error.status_code == 503, error
    assert "error response of 629,145,600 bytes is over the" in str(error)


# -- reading: answers that are odd, but carry what we need ---------------------------------------------------------
UUID = "5b0f6a57-4d1e-4c3a-9f0e-2d7c1b8a9e01"
WORDS = {  # vendor -> (running, succeeded)
    "dune": ("QUERY_STATE_EXECUTING", "QUERY_STATE_COMPLETED"), "izieroma": ("running", "completed"),
    "bctrl": ("running", "succeeded"), "meibel": ("running", "completed"), "b3os": ("running", "success"),
}
ODD_FIELD = {  # vendor -> an optional field of the status answer, with a value of the wrong type
    "dune": ("queue_position", "third"), "izieroma": ("completed_tasks", "many"), "bctrl": ("progress", "half"),
    "meibel": ("total_items", "lots"), "b3os": ("workflowVersion", "v2"),
}
DEEP = 100_000  # past Python's recursion limit: json.loads alone raises RecursionError


def status_body(vendor: str, *, done: bool = False, about: str | None = None, **extra: Any) -> Any:
    word = WORDS[vendor][done]
    eid = about or execution_id(vendor)
    body = {"dune": {"execution_id": eid, "state": word}, "izieroma": {"execution_id": eid, "status": word},
            "bctrl": {"id": eid, "status": word}, "meibel": {"id": eid, "status": word},
            "b3os": {"id": eid, "status": word}}[vendor]
    body.update(extra)
    return {"code": 0, "data": body} if vendor == "b3os" else body


def create_body(vendor: str, **extra: Any) -> Any:
    eid = execution_id(vendor)
    body = {"dune": {"execution_id": eid, "state": 7}, "izieroma": {"execution_id": eid, "status": 7},
            "bctrl": {"id": eid, "status": "queued", "progress": "half"},
            "meibel": {"execution_id": eid, "workflow_id": 7}, "b3os": {"runId": eid}}[vendor]  # 7: a wrong type
    body.update(extra)
    return {"code": 0, "message": 7, "data": body} if vendor == "b3os" else body


def create(vendor: str) -> str:
    h = hook(vendor)
    if vendor == "dune":
        return h.execute_sql("SELECT 1")
    if vendor == "izieroma":
        return h.start({"goal": "Summarise"})
    if vendor == "bctrl":
        return h.start_invocation({"steps": [{"call": "browser.goto"}]}, runtime_id=UUID, space_id=UUID)
    if vendor == "meibel":
        return h.execute_batch_definition("def-1")
    return h.run_workflow("wf_prices", run_id=execution_id(vendor))


def deep_json(body: Any) -> bytes:
    """`body` with a value nested DEEP levels down added next to its fields (in B3OS's envelope)."""
    text = json.dumps(body)
    return (text[:-1] + ', "extra": ' + "[" * DEEP + "]" * DEEP + "}").encode()


ODD_ANSWERS = {
    "wrong-typed optional field": lambda vendor, body: Reply(body=body),
    "inf and nan rate-limit headers": lambda vendor, body: Reply(body=body, headers={
        "Retry-After": "inf", "X-RateLimit-Remaining": "nan", "X-RateLimit-Reset": "-inf"}),
    "value nested past the recursion limit": lambda vendor, body: Reply(body=deep_json(body)),
}


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("odd", sorted(ODD_ANSWERS))
def test_a_create_answer_with_a_readable_id_yields_the_id_whatever_else_is_odd(server, vendor, odd):
    server.reply = lambda request: ODD_ANSWERS[odd](vendor, create_body(vendor))
    assert create(vendor) == execution_id(vendor)
    assert [r.method for r in server.requests] == ["POST"]  # read at once: nothing asked twice


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("odd", sorted(ODD_ANSWERS))
async def test_a_status_answer_with_odd_parts_is_read_on_both_paths(server, vendor, odd, caplog):
    field, value = ODD_FIELD[vendor]
    server.reply = lambda request: ODD_ANSWERS[odd](vendor, status_body(vendor, **{field: value}))
    with caplog.at_level(logging.WARNING):
        sync = await asyncio.to_thread(hook(vendor).get_status, execution_id(vendor))
        async_ = await hook(vendor).aget_status(execution_id(vendor))
    for status in (sync, async_):
        assert status.state is ExecutionState.RUNNING and status.execution_id == execution_id(vendor)
        assert status.rate_limit is not None and status.rate_limit.retry_after is None  # inf: ignored, no wait
        assert status.payload.get(field) is None  # dropped, not kept with its wrong type
    if odd == "wrong-typed optional field":
        # Logged (the first time this process meets it), naming the vendor and the field.
        assert all(hook(vendor).vendor in r.getMessage() for r in caplog.records if repr(field) in r.getMessage())


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_status_answer_about_another_execution_is_an_error_not_its_state(server, vendor):
    server.reply = lambda request: Reply(body=status_body(vendor, done=True, about=HOOKS[vendor].execution_id_example
                                                          .replace("1", "2")))
    for read in (lambda: asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor)),
                 lambda: atimed(hook(vendor).aget_status, execution_id(vendor))):
        error, _ = await read()
        assert isinstance(error, ExecutionApiError) and "answer about another execution" in str(error), error
        assert is_transient(error)  # a wait goes on: ours is still whatever it is


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_trigger_never_takes_another_executions_success_for_its_own(server, vendor):
    """Every answer says "another execution, succeeded": the trigger keeps waiting until its deadline, then cancels
    its own execution (one POST) and reports the timeout."""
    def reply(request):
        if request.method == "POST":
            return Reply(body={"code": 0, "data": {}} if vendor == "b3os" else {})
        return Reply(body=status_body(vendor, done=True, about=execution_id(vendor).replace("1", "2")))

    server.reply = reply
    hook_class = HOOKS[vendor]
    trigger = ExecutionTrigger(hook_class=f"{hook_class.__module__}.{hook_class.__qualname__}",
                               conn_id=f"{vendor}_hostile", execution_id=execution_id(vendor),
                               deadline=time.time() + 4, poll_interval=0.2, max_poll_interval=0.2)
    events = await drive_trigger(trigger, timeout=30)
    assert [e["kind"] for e in events] == ["timeout"], events
    assert [r.method for r in server.requests].count("POST") == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_an_unreadable_status_answer_mid_run_is_transient(server, vendor):
    """The state word itself of the wrong type: no state can be read, so the wait goes on (never a failure that
    would cancel a healthy execution)."""
    body = status_body(vendor)
    target = body["data"] if vendor == "b3os" else body
    target["state" if vendor == "dune" else "status"] = {"nested": True}
    server.reply = lambda request: Reply(body=body)
    for read in (lambda: asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor)),
                 lambda: atimed(hook(vendor).aget_status, execution_id(vendor))):
        error, _ = await read()
        assert isinstance(error, ExecutionApiError) and "unexpected response shape" in str(error), error
        assert is_transient(error)


# -- secrets ---------------------------------------------------------------------------------------------------------
def use_conn(monkeypatch, vendor: str, **conn: Any) -> str:
    conn_id = f"{vendor}_odd"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": vendor, **conn}))
    return conn_id


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_401_that_echoes_the_key_never_carries_it_anywhere(server, vendor, caplog):
    """The key in the body (as is, URL-encoded, inside a JSON error): not in the exception on either path, not in
    the trigger's error event (which Airflow stores), not in the Test button's message, not in any log line."""
    from urllib.parse import quote

    echo = {"error": f"invalid key {API_KEY}", "message": f"key={quote(API_KEY)}", "detail": f"Bearer {API_KEY}"}
    server.reply = lambda request: Reply(401, echo)
    with caplog.at_level(logging.DEBUG):
        sync, _ = await asyncio.to_thread(timed, hook(vendor).get_status, execution_id(vendor))
        async_, _ = await atimed(hook(vendor).aget_status, execution_id(vendor))
        hook_class = HOOKS[vendor]
        events = await drive_trigger(ExecutionTrigger(
            hook_class=f"{hook_class.__module__}.{hook_class.__qualname__}", conn_id=f"{vendor}_hostile",
            execution_id=execution_id(vendor)), timeout=30)
        ok, message = await asyncio.to_thread(hook(vendor).test_connection)
    assert sync.status_code == 401 and async_.status_code == 401 and not ok and events[0]["kind"] == "error"
    assert "invalid key ***" in str(sync)
    texts = [str(sync), repr(sync), sync.message, str(async_), repr(async_), json.dumps(events), message,
             *(r.getMessage() for r in caplog.records)]
    assert server.requests[0].headers  # the key was sent: the server saw it
    for text in texts:
        assert API_KEY not in text and quote(API_KEY) not in text, text


BAD_KEYS = {
    "line break": ("sk-first-HALF\r\nsecond-HALF-42", "line break or another control character"),
    "tab": ("sk-first-HALF\tsecond-HALF-42", "line break or another control character"),
    "non-ASCII": ("sk-cl\u00e9-secr\u00e8te-42", "non-ASCII characters"),
}


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_a_key_that_cannot_be_sent_is_refused_by_connection_and_field_and_never_echoed(server, monkeypatch, vendor,
                                                                                       case):
    key, why = BAD_KEYS[case]
    conn_id = use_conn(monkeypatch, vendor, host=server.url, password=key)
    from airflow_provider_cancel.core.errors import ProviderConfigError
    from airflow_provider_cancel.core.redact import forms

    with pytest.raises(ProviderConfigError) as err:
        HOOKS[vendor](conn_id).get_status(execution_id(vendor))
    text = str(err.value)
    assert repr(conn_id) in text and "password field" in text and why in text
    assert not any(form in text for form in forms(key)), text
    ok, message = HOOKS[vendor](conn_id).test_connection()
    assert not ok and why in message and not any(form in message for form in forms(key))
    assert server.requests == []  # refused before any request


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_host_with_credentials_is_refused_and_they_are_never_echoed(server, monkeypatch, vendor):
    from airflow.providers.common.compat.sdk import redact as airflow_redact

    from airflow_provider_cancel.core.errors import ProviderConfigError

    host = server.url.replace("http://", "http://admin-user:hunter2-PASSWORD@")
    conn_id = use_conn(monkeypatch, vendor, host=host, password=API_KEY)
    with pytest.raises(ProviderConfigError, match="host has credentials inside it") as err:
        HOOKS[vendor](conn_id).get_status(execution_id(vendor))
    ok, message = HOOKS[vendor](conn_id).test_connection()
    for text in (str(err.value), message):
        assert repr(conn_id) in text and "hunter2-PASSWORD" not in text and "admin-user" not in text, text
    assert not ok and server.requests == []
    assert "hunter2-PASSWORD" not in airflow_redact(f"logged {host}")  # Airflow's own masker knows it too


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("suffix", ["/?token=abc", "?x=1", "/#frag", "?"])
def test_a_host_with_a_query_string_or_fragment_is_refused(server, monkeypatch, vendor, suffix):
    from airflow_provider_cancel.core.errors import ProviderConfigError

    conn_id = use_conn(monkeypatch, vendor, host=server.url + suffix, password=API_KEY)
    with pytest.raises(ProviderConfigError, match="has a query string or fragment") as err:
        HOOKS[vendor](conn_id).get_status(execution_id(vendor))
    assert repr(conn_id) in str(err.value) and "token=abc" not in str(err.value)
    assert server.requests == []


# -- sockets --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vendor", VENDORS)
def test_closed_hooks_leave_no_socket_open(server, vendor):
    """Many executions in one long-lived process (`airflow dags test`, a worker): each hook closes its connections."""
    server.reply = lambda request: Reply(body=status_body(vendor))
    kept = [hook(vendor) for _ in range(10)]  # as operators keep their hooks
    for unclosed in kept:
        unclosed.get_status(execution_id(vendor))
    wait_until(lambda: server.open_connections == 10)  # unclosed: each hook's pooled connection stays open
    for _ in range(10):
        with hook(vendor) as h:
            h.get_status(execution_id(vendor))
            h.get_status(execution_id(vendor))  # one connection, reused
        assert h._client is not None
    closer = hook(vendor)
    closer.get_status(execution_id(vendor))
    closer.close()
    closer.close()  # twice is fine, and the hook can be used again
    closer.get_status(execution_id(vendor))
    closer.close()
    wait_until(lambda: server.open_connections == 10)  # only the first ten, never closed, are left
    for unclosed in kept:
        unclosed.close()
    wait_until(lambda: server.open_connections == 0)


# -- whole tasks against the emulator's hostile fault kinds ----------------------------------------------------------
def emulated_task(vendor: str, scenario: str, *, deferrable: bool):
    from uuid import uuid4

    from airflow_provider_cancel.emulator.testing import operator_args

    tag = f"hostile-{uuid4().hex[:10]}"
    task = OPERATORS[vendor](task_id=tag, conn_id=f"{vendor}_emu", deferrable=deferrable, poll_interval=0.05,
                             max_poll_interval=0.2, **operator_args(vendor, scenario, tag))
    return task, make_context(FakeTI(tag), FakeStore()), tag


def started_by(emu, vendor: str, tag: str) -> list[dict]:
    return [r for r in emu.executions(vendor) if tag in json.dumps(r["data"])]


def run_whole(task, context, deferred=lambda: None) -> Any:
    """A task to its end, deferred or not: execute, and for a deferral `deferred()`, the trigger, execute_complete."""
    if not task.deferrable:
        return task.execute(context)
    trigger = defer(task, context)
    deferred()
    events = asyncio.run(drive_trigger(trigger, timeout=60))
    assert len(events) == 1, events
    return task.execute_complete(context, events[0])


CREATE_SPOILERS = ("odd_field", "odd_rate_limit", "deep_json")
STATUS_SPOILERS = ("odd_field", "odd_rate_limit", "deep_json", "other_id", "drip")


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("kind", CREATE_SPOILERS)
def test_a_create_the_vendor_carried_out_is_owned_whatever_its_answer_held(emu, vendor, kind):
    task, context, tag = emulated_task(vendor, "succeed:1", deferrable=False)
    emu.add_fault(vendor=vendor, action="create", kind=kind)
    assert run_whole(task, context) is not None
    (record,) = started_by(emu, vendor, tag)  # one execution, and it is the task's
    assert record["id"] == task.execution_id == context["ti"].xcoms["execution_id"]
    assert record["state"] == "succeeded" and emu.cancels(record["id"]) == []


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("kind", STATUS_SPOILERS)
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferred"])
def test_odd_status_answers_mid_run_never_fail_or_cancel_a_healthy_execution(emu, vendor, kind, deferrable):
    """Deferred, the faults start once the trigger polls (the worker's one read before deferring is the lead's
    waiter's to make transient too)."""
    task, context, tag = emulated_task(vendor, "succeed:4", deferrable=deferrable)

    def faults() -> None:
        emu.add_fault(vendor=vendor, action="status", kind=kind, count=3, delay=0.01 if kind == "drip" else None)

    if not deferrable:
        faults()
    assert run_whole(task, context, faults) is not None
    (record,) = started_by(emu, vendor, tag)
    assert record["state"] == "succeeded" and emu.cancels(record["id"]) == []
    assert kind in [e["fault"] for e in emu.journal(vendor=vendor, action="status", execution_id=record["id"])]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("kind", ["huge", "endless"])
def test_a_create_answered_huge_or_endless_is_refused_cleanly_or_asked_again_with_its_key(emu, vendor, kind):
    """Only the answer names what a create started. Without an idempotency key the create is refused clearly and
    never sent again; with one it is asked again, and the vendor's answer about that key is the task's one run."""
    task, context, tag = emulated_task(vendor, "succeed:1", deferrable=False)
    emu.add_fault(vendor=vendor, action="create", kind=kind, count=1)
    sent_before = len(emu.journal(vendor=vendor, action="create"))
    if HOOKS[vendor].idempotent_create:
        task.execute(context)
        (record,) = started_by(emu, vendor, tag)
        assert record["id"] == task.execution_id and record["state"] == "succeeded"
        assert len(emu.journal(vendor=vendor, action="create")) - sent_before == 2
    else:
        with pytest.raises(ExecutionApiError, match="-byte limit of this provider"):
            task.execute(context)
        assert started_by(emu, vendor, tag) == [] and task.execution_id is None
        assert len(emu.journal(vendor=vendor, action="create")) - sent_before == 1


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferred"])
def test_a_401_echoing_the_key_mid_run_fails_the_task_without_the_key(emu, vendor, deferrable):
    task, context, tag = emulated_task(vendor, "forever", deferrable=deferrable)
    emu.add_fault(vendor=vendor, action="status", kind="echo_key", count=1 if not deferrable else 2)
    try:
        run_whole(task, context)  # deferred: the read before deferring fails (the trigger's event is tested above)
    except Exception as err:
        failure = err
    else:
        raise AssertionError("the task succeeded")
    assert "401" in str(failure) and API_KEY not in str(failure) and API_KEY not in repr(failure.args)
    (record,) = started_by(emu, vendor, tag)
    assert len(emu.cancels(record["id"])) == 1  # the task failed while its execution ran: cancelled once
