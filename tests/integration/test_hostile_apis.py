"""Hostile and broken APIs, over real HTTP on both paths for every vendor: loopback servers that misbehave byte by byte
(`hostile.py`), and the emulator's fault kinds that answer a request the vendor really carried out, then break the
answer. Nothing may be left unbounded, unowned or leaked.

- time: every request ends by its deadline, whatever the server drips; the kill paths keep their budgets;
- size: a body over the limit is refused by its Content-Length before it is read, or once the limit is reached;
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk.module_loading import import_string

from airflow_provider_cancel.core import http
from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.http import MAX_RESPONSE_BYTES, DeadlineExceeded
from airflow_provider_cancel.core.operator import KILL_RETRY, ExecutionOperator
from airflow_provider_cancel.core.trigger import CANCEL_RETRY, ExecutionTrigger
from airflow_provider_cancel.registry import BY_CONN_TYPE

from .conftest import API_KEY, VENDORS
from .hostile import HostileServer, Reply

HOOKS: dict[str, type[ExecutionHook]] = {vendor: import_string(BY_CONN_TYPE[vendor].hook_path) for vendor in VENDORS}
OPERATORS: dict[str, type[ExecutionOperator]] = {
    vendor: import_string(BY_CONN_TYPE[vendor].operator_path) for vendor in VENDORS
}
MARGIN = 2.0  # seconds past a deadline a loaded 2-core machine may take to notice it


@pytest.fixture
def server(monkeypatch):
    """A hostile loopback server behind every vendor's `<vendor>_hostile` connection; `server.reply` decides."""
    srv = HostileServer()
    for vendor in VENDORS:
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
    """Airflow sends SIGKILL ~5 s after SIGTERM: on_kill's cancel must be over by then, whatever the server does."""
    server.reply = lambda request: DRIPS["headers"]
    task = OPERATORS[vendor](task_id="t", conn_id=f"{vendor}_hostile", **_operator_args(vendor))
    task.execution_id = task.hook.trust(execution_id(vendor))
    _, took = timed(task.on_kill)
    assert [r.method for r in server.requests] == ["POST"]  # the cancel left at once
    assert took < KILL_RETRY.give_up_after + MARGIN, took


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
