"""Waiting for an execution to end: one waiter, whatever waits (the operator, the trigger, the clean-up operator).

`Waiter` decides, without doing I/O, what comes after each status read: read again after a delay, the
execution has finished, the deadline has passed, or the error is not one to ride out. A short sync driver
(`wait`, with the caller's sleep, which a kill interrupts) and a short async driver (`await_end`) run it, the
way httpx drives one auth flow from both kinds of client. Polling policy (the schedule, rate limits, deadlines,
progress lines, unknown status words) therefore lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_cancel.core.http import RateLimit, is_transient
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus

# The lag between the remote end and the task noticing stays under this share of the run time,
# while a 30-minute run costs ~10x fewer requests than polling every 2 s.
LAG_RATIO = 0.1
MAX_RATE_LIMIT_WAIT = 600.0
PROGRESS_HEARTBEAT = 300.0  # log "still running" at least this often even when nothing changes


@dataclass(frozen=True)
class PollSchedule:
    initial: float = 1.0
    maximum: float = 30.0

    def delay(self, elapsed: float, rate_limit: RateLimit | None = None, *, now: float | None = None) -> float:
        """Seconds to wait before the next status read of an execution that has run `elapsed` seconds."""
        delay = min(self.maximum, max(self.initial, elapsed * LAG_RATIO))
        delay *= random.uniform(0.9, 1.0)  # spread many tasks on one API key; never past the 10% lag bound
        if rate_limit is not None:
            now = time.time() if now is None else now
            if rate_limit.retry_after is not None:
                delay = max(delay, rate_limit.retry_after)
            elif rate_limit.exhausted and rate_limit.reset_at is not None:
                # Out of budget: every task on this key waits for the window to reset, instead of failing.
                delay = max(delay, min(rate_limit.reset_at - now, MAX_RATE_LIMIT_WAIT))
        return max(0.0, delay)


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog:
    """One readable line when something changes (or every few minutes), not a wall of identical lines; an
    unknown status word is reported once per execution, with the vendor's name, so users can report it."""

    def __init__(self, vendor: str, execution_id: str) -> None:
        self.vendor, self.execution_id = vendor, execution_id
        self._last: str | None = None
        self._last_at = 0.0
        self._unknown_words: set[str] = set()

    def unknown_word(self, status: ExecutionStatus) -> str | None:
        """A warning the first time this execution answers with a status word the hook does not know."""
        if status.state is not ExecutionState.UNKNOWN or status.vendor_status in self._unknown_words:
            return None
        self._unknown_words.add(status.vendor_status)
        return (f"{self.vendor} execution {self.execution_id} reports the status word {status.vendor_status!r}, "
                "which this provider does not know: treated as still running (please report it)")

    def line(self, status: ExecutionStatus, elapsed: float, next_delay: float | None) -> str | None:
        now = time.monotonic()
        described = status.describe()
        if described == self._last and now - self._last_at < PROGRESS_HEARTBEAT:
            return None
        self._last, self._last_at = described, now
        text = f"{self.vendor} execution {self.execution_id}: {described}; {format_duration(elapsed)} elapsed"
        if next_delay is not None and not status.state.is_terminal:
            text += f"; next check in {next_delay:.0f}s"
        if status.state is ExecutionState.UNKNOWN:
            text += " (unknown status word: treated as still running)"
        return text


# -- what comes next ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Poll:
    """Read the status after `delay` seconds."""

    delay: float


@dataclass(frozen=True)
class Finished:
    status: ExecutionStatus


@dataclass(frozen=True)
class DeadlinePassed:
    """The wait's deadline passed before the execution ended."""


@dataclass(frozen=True)
class Failed:
    """A status read failed in a way that waiting longer cannot mend (a wrong key, a vanished execution)."""

    error: BaseException


Action = Poll | Finished | DeadlinePassed | Failed


class Waiter:
    """When to read an execution's status next, and when to stop. No I/O: the driver reads and sleeps.

    Times are on the caller's clock (`time.monotonic()` in a worker; the wall clock in a trigger, whose start and
    deadline travel through the database). Transient errors (429, 5xx, timeouts, unreadable answers) never end
    the wait: only the deadline does. A delay never runs past the deadline.
    """

    def __init__(
        self,
        vendor: str,
        execution_id: str,
        *,
        schedule: PollSchedule,
        started_at: float,
        deadline: float | None = None,
        log: Any = None,
        progress: bool = True,
    ) -> None:
        self.vendor, self.execution_id = vendor, execution_id
        self.schedule = schedule
        self.started_at = started_at
        self.deadline = deadline
        self.log = log or logging.getLogger(__name__)
        self._progress = ProgressLog(vendor, execution_id) if progress else None

    def first(self, now: float, status: ExecutionStatus | None = None) -> Action:
        """The first step: use a status already read (e.g. by the create), else read at once."""
        if status is not None:
            return self.after(status, now)
        return DeadlinePassed() if self._past(now) else Poll(0.0)

    def after(self, result: ExecutionStatus | BaseException, now: float) -> Action:
        """What to do after a status read that gave `result` (a status or the exception the read raised)."""
        rate_limit: RateLimit | None
        if isinstance(result, BaseException):
            if not is_transient(result):
                return Failed(result)
            self.log.warning("Could not read the status of %s execution %s (%s); will try again", self.vendor,
                             self.execution_id, result)
            rate_limit = getattr(result, "rate_limit", None) or _retry_after(result)
        else:
            rate_limit = result.rate_limit
        delay = self.schedule.delay(now - self.started_at, rate_limit)
        if isinstance(result, ExecutionStatus):
            if self._progress is not None:
                if warning := self._progress.unknown_word(result):
                    self.log.warning("%s", warning)
                if line := self._progress.line(result, now - self.started_at, delay):
                    self.log.info("%s", line)
            if result.state.is_terminal:
                return Finished(result)
        if self._past(now):
            return DeadlinePassed()
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - now))
        return Poll(delay)

    def remaining(self, now: float) -> float | None:
        """Seconds left before the deadline (None: no deadline): the budget of the next read."""
        return None if self.deadline is None else max(0.0, self.deadline - now)

    def _past(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


def request_deadline(left: float | None) -> float | None:
    """The `time.monotonic()` instant a read given `left` seconds must be done by (the hooks' `deadline=`)."""
    return None if left is None else time.monotonic() + left


def _retry_after(error: BaseException) -> RateLimit | None:
    retry_after = getattr(error, "retry_after", None)
    return RateLimit(retry_after=retry_after) if isinstance(retry_after, (int, float)) else None


# -- drivers -----------------------------------------------------------------------------------------------
def wait(
    waiter: Waiter,
    read: Callable[[float | None], ExecutionStatus],
    sleep: Callable[[float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    status: ExecutionStatus | None = None,
) -> Finished | DeadlinePassed:
    """Drive `waiter` in a worker: `read(remaining seconds)` reads the status, `sleep` waits (and may raise when
    the task is killed). A non-transient read error is raised."""
    action = waiter.first(clock(), status)
    while isinstance(action, Poll):
        sleep(action.delay)
        try:
            result: ExecutionStatus | BaseException = read(waiter.remaining(clock()))
        except Exception as err:
            result = err
        action = waiter.after(result, clock())
    if isinstance(action, Failed):
        raise action.error
    return action


async def await_end(
    waiter: Waiter,
    read: Callable[[float | None], Awaitable[ExecutionStatus]],
    *,
    clock: Callable[[], float] = time.time,
) -> Finished | DeadlinePassed | Failed:
    """Drive `waiter` on an event loop (the trigger). Returns the last action instead of raising: the trigger
    turns every ending into an event."""
    action = waiter.first(clock())
    while isinstance(action, Poll):
        await asyncio.sleep(action.delay)
        action = await _read_once(waiter, read, clock)
    return action


async def _read_once(
    waiter: Waiter, read: Callable[[float | None], Awaitable[ExecutionStatus]], clock: Callable[[], float]
) -> Action:
    """One read, in a frame of its own: its answer (payload included) is not kept through the next sleep, which
    is what thousands of deferred executions in one triggerer spend most of their time in."""
    try:
        result: ExecutionStatus | BaseException = await read(waiter.remaining(clock()))
    except Exception as err:
        result = err
    return waiter.after(result, clock())
