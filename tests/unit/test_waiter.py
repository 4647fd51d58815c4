"""core.poll.Waiter: what comes after each status read, on a virtual clock; and its two drivers."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http import RateLimit
from airflow_provider_cancel.core.poll import (
    DeadlinePassed,
    Failed,
    Finished,
    Poll,
    PollSchedule,
    Waiter,
    await_end,
    wait,
)
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus

RUNNING = ExecutionStatus("e", ExecutionState.RUNNING, "running")
DONE = ExecutionStatus("e", ExecutionState.SUCCEEDED, "completed")


def api_error(status: int, **kw) -> ExecutionApiError:
    return ExecutionApiError(vendor="V", method="GET", path="/x", status_code=status, message="m", **kw)


def waiter(**kw) -> Waiter:
    return Waiter("V", "e", schedule=PollSchedule(1.0, 30.0), started_at=0.0, **kw)


def test_reads_at_once_then_stretches_with_the_run_time():
    w = waiter()
    assert w.first(0.0) == Poll(0.0)
    first = w.after(RUNNING, 1.0)
    late = w.after(RUNNING, 200.0)
    assert isinstance(first, Poll) and 0.9 <= first.delay <= 1.0
    assert isinstance(late, Poll) and 18 <= late.delay <= 20  # 10% of the time waited


def test_a_terminal_status_finishes():
    assert waiter().after(DONE, 5.0) == Finished(DONE)


def test_transient_errors_never_end_the_wait_and_others_do():
    w = waiter()
    assert isinstance(w.after(httpx.ReadTimeout("slow"), 1.0), Poll)
    assert isinstance(w.after(api_error(503), 2.0), Poll)
    assert isinstance(w.after(api_error(None), 3.0), Poll)  # an unreadable answer
    error = api_error(401)
    assert w.after(error, 4.0) == Failed(error)


def test_a_retry_after_is_honoured_but_never_past_the_deadline():
    free = waiter()
    bounded = waiter(deadline=10.0)
    assert free.after(api_error(429, retry_after=60.0), 1.0) == Poll(60.0)
    assert bounded.after(api_error(429, retry_after=60.0), 1.0) == Poll(9.0)


def test_an_exhausted_budget_waits_for_its_reset():
    status = ExecutionStatus("e", ExecutionState.RUNNING, "running", rate_limit=RateLimit(remaining=0, reset_at=1e10))
    action = waiter().after(status, 1.0)
    assert isinstance(action, Poll) and action.delay >= 30


def test_the_deadline_ends_the_wait_before_and_between_reads():
    assert waiter(deadline=5.0).first(6.0) == DeadlinePassed()
    assert waiter(deadline=5.0).after(RUNNING, 5.0) == DeadlinePassed()
    assert waiter(deadline=5.0).after(DONE, 5.0) == Finished(DONE)  # an end seen in time still counts


def test_an_unknown_status_word_is_reported_once_per_execution(caplog):
    w = waiter(log=logging.getLogger("t"))
    odd = ExecutionStatus("e", ExecutionState.UNKNOWN, "thinking_hard")
    with caplog.at_level(logging.WARNING, "t"):
        for now in (1.0, 2.0, 3.0):
            assert isinstance(w.after(odd, now), Poll)  # never success: keeps waiting
    warnings = [r for r in caplog.records if "thinking_hard" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "V execution e" in warnings[0].getMessage()


def test_sync_driver_reads_until_the_end_and_raises_what_cannot_be_ridden_out():
    clock = iter(range(100))
    answers = iter([httpx.ConnectError("down"), RUNNING, DONE])
    slept: list[float] = []

    def read(left):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ending = wait(waiter(), read, slept.append, clock=lambda: float(next(clock)))
    assert ending == Finished(DONE) and len(slept) == 3
    with pytest.raises(ExecutionApiError):
        wait(waiter(), lambda left: (_ for _ in ()).throw(api_error(403)), lambda s: None, clock=lambda: 0.0)


def test_sync_driver_passes_the_time_left_to_each_read():
    lefts: list[float | None] = []
    now = [0.0]

    def read(left):
        lefts.append(left)
        now[0] += 4.0
        return RUNNING

    ending = wait(waiter(deadline=10.0), read, lambda s: None, clock=lambda: now[0])
    assert ending == DeadlinePassed() and lefts == [10.0, 6.0, 2.0]


def test_async_driver_returns_every_ending():
    async def read(left):
        return DONE

    async def fail(left):
        raise api_error(404)

    assert asyncio.run(await_end(waiter(), read, clock=lambda: 1.0)) == Finished(DONE)
    assert isinstance(asyncio.run(await_end(waiter(), fail, clock=lambda: 1.0)), Failed)
    assert asyncio.run(await_end(waiter(deadline=0.5), read, clock=lambda: 1.0)) == DeadlinePassed()
