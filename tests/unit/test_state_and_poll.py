from __future__ import annotations

import time

import pytest

from airflow_provider_cancel.core.http import RateLimit
from airflow_provider_cancel.core.poll import PollSchedule
from airflow_provider_cancel.core.state import ExecutionState as S
from airflow_provider_cancel.core.state import normalize_status

WORDS = {"running": S.RUNNING, "completed": S.SUCCEEDED, "cancelled": S.CANCELLED}


@pytest.mark.parametrize(
    ("word", "state"),
    [("RUNNING", S.RUNNING), (" completed ", S.SUCCEEDED), ("canceled", S.CANCELLED), ("Cancelled", S.CANCELLED),
     ("succeeded-ish", S.UNKNOWN), ("", S.UNKNOWN), (None, S.UNKNOWN), (42, S.UNKNOWN)],
)
def test_normalize(word, state):
    assert normalize_status(word, WORDS) is state


def test_unknown_is_never_terminal_or_success():
    assert not S.UNKNOWN.is_terminal
    assert S.UNKNOWN is not S.SUCCEEDED


def test_poll_delay_grows_with_run_time_and_keeps_lag_under_ten_percent():
    schedule = PollSchedule(initial=1.0, maximum=30.0)
    assert schedule.delay(0) <= 1.1
    assert 9 <= schedule.delay(100) <= 11
    assert schedule.delay(10_000) <= 33


def test_poll_waits_for_an_exhausted_rate_limit_window():
    now = time.time()
    delay = PollSchedule().delay(5, RateLimit(remaining=0, reset_at=now + 120), now=now)
    assert 119 <= delay <= 121
    assert PollSchedule().delay(5, RateLimit(retry_after=45), now=now) >= 45


def test_lazy_payload_dumps_the_model_once_on_first_read_and_reads_like_its_dump():
    from pydantic import BaseModel, ConfigDict

    from airflow_provider_cancel.core.state import LazyPayload

    class Status(BaseModel):
        model_config = ConfigDict(extra="allow")
        state: str
        rows: int | None = None

    dumps = []

    class Counted(Status):
        def model_dump(self, **kw):
            dumps.append(1)
            return super().model_dump(**kw)

    payload = LazyPayload(Counted.model_validate({"state": "done", "extra_field": [1]}))
    assert dumps == []  # a poll that only reads the state never pays for the dump
    assert payload["state"] == "done" and payload.get("rows") is None and payload.get("missing") is None
    assert dict(payload) == {"state": "done", "rows": None, "extra_field": [1]} and len(payload) == 3
    assert Status.model_validate(payload).state == "done"  # as the Meibel adapter re-reads it
    assert dumps == [1]
