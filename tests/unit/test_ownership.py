"""core.ownership: the pure decisions and the cancel guard, without HTTP."""

from __future__ import annotations

import signal
import threading

import pytest

from airflow_provider_cancel.core import ownership
from airflow_provider_cancel.core.ownership import (
    CancelGuard,
    CancelState,
    ExecutionRecord,
    Existing,
    Finish,
    OrphanAction,
    RecordStore,
    decide_existing,
    decide_finished,
    decide_orphan,
    variable_key,
)
from airflow_provider_cancel.core.state import CancelOutcome, ExecutionState

S = ExecutionState


@pytest.mark.parametrize(
    ("state", "policy", "expected"),
    [
        (None, "reattach", Existing.START),  # unknown to the vendor (404)
        (None, "cancel", Existing.START),
        (S.SUCCEEDED, "reattach", Existing.USE_RESULT),
        (S.SUCCEEDED, "cancel", Existing.START),
        (S.FAILED, "reattach", Existing.START),
        (S.CANCELLED, "cancel", Existing.START),
        (S.CANCELLING, "reattach", Existing.WAIT_THEN_START),
        (S.CANCELLING, "cancel", Existing.WAIT_THEN_START),
        (S.RUNNING, "reattach", Existing.REATTACH),
        (S.QUEUED, "reattach", Existing.REATTACH),
        (S.UNKNOWN, "reattach", Existing.REATTACH),  # an unknown word is not an end: never start a second one
        (S.RUNNING, "cancel", Existing.CANCEL_THEN_START),
        (S.UNKNOWN, "cancel", Existing.CANCEL_THEN_START),
    ],
)
def test_decide_existing(state, policy, expected):
    assert decide_existing(state, policy) is expected


@pytest.mark.parametrize(
    ("state", "adopted", "restarted", "expected"),
    [
        (S.SUCCEEDED, False, False, Finish.RESULT),
        (S.SUCCEEDED, True, False, Finish.RESULT),
        (S.FAILED, True, False, Finish.FAILED),
        (S.CANCELLED, False, False, Finish.CANCELLED_REMOTELY),  # its own execution: someone else stopped it
        (S.CANCELLED, True, False, Finish.RESTART),  # adopted: most likely the earlier try's own kill
        (S.CANCELLED, True, True, Finish.CANCELLED_REMOTELY),  # restarts once, never in a loop
    ],
)
def test_decide_finished(state, adopted, restarted, expected):
    assert decide_finished(state, adopted=adopted, restarted=restarted) is expected


def test_guard_claims_once_per_execution():
    guard = CancelGuard()
    assert guard.claim() is None  # nothing owned yet
    guard.own("e1")
    assert guard.state is CancelState.LIVE and guard.claim() == "e1"
    assert guard.claim() is None  # a second path while the first one is cancelling
    guard.settle(CancelOutcome.REQUESTED)
    assert guard.state is CancelState.REQUESTED and guard.claim() is None


def test_a_failed_cancel_can_be_claimed_again():
    guard = CancelGuard()
    guard.own("e1")
    assert guard.claim() == "e1"
    guard.settle(CancelOutcome.FAILED)
    assert guard.state is CancelState.FAILED and guard.due
    assert guard.claim() == "e1"


@pytest.mark.parametrize("outcome", [CancelOutcome.ALREADY_FINISHED, CancelOutcome.NOT_FOUND])
def test_nothing_left_to_cancel_settles_it(outcome):
    guard = CancelGuard()
    guard.own("e1")
    guard.claim()
    guard.settle(outcome)
    assert not guard.due


def test_ended_released_and_policy_off_are_never_cancelled():
    ended = CancelGuard()
    ended.own("e1")
    ended.ended()
    released = CancelGuard()
    released.own("e2")
    released.release()
    off = CancelGuard(cancel_on_kill=False)
    off.own("e3")
    assert [g.claim() for g in (ended, released, off)] == [None, None, None]
    assert off.state is CancelState.RELEASED


def test_a_new_execution_gets_a_new_claim():
    guard = CancelGuard()
    guard.own("e1")
    guard.claim()
    guard.settle(CancelOutcome.REQUESTED)
    guard.own("e2")  # the retry's own execution after an adopted one ended cancelled
    assert guard.claim() == "e2"


def test_the_trigger_outcome_decides_whether_the_worker_tries_again():
    failed, sent = CancelGuard(), CancelGuard()
    for guard in (failed, sent):
        guard.own("e")
    failed.adopt_outcome(CancelOutcome.FAILED)
    sent.adopt_outcome(CancelOutcome.REQUESTED)
    assert failed.due and failed.claim() == "e"
    assert not sent.due


def test_many_threads_claim_and_exactly_one_wins():
    for _ in range(50):
        guard = CancelGuard()
        guard.own("e")
        barrier = threading.Barrier(8)
        won: list[str] = []

        def race(guard: CancelGuard = guard, barrier: threading.Barrier = barrier, won: list[str] = won) -> None:
            barrier.wait()
            if guard.claim():
                won.append("x")

        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1


def test_a_signal_handler_interrupting_a_claim_does_not_deadlock_or_double_claim():
    """on_kill runs in a signal handler on the main thread; it may interrupt the same thread's own claim."""
    guard = CancelGuard()
    guard.own("e")
    seen: list[str | None] = []

    def handler(signum, frame):
        seen.append(guard.claim())

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        assert guard.claim() == "e"  # the main thread holds the claim...
        signal.raise_signal(signal.SIGUSR1)  # ...and the handler's claim fails at once instead of waiting
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [None]


def test_record_round_trip_and_tolerance():
    record = ExecutionRecord("e1", try_number=2, conn_id="c", hook="m.H", cancel_if_orphaned=False)
    assert ExecutionRecord.from_value(record.to_value()) == record
    assert ExecutionRecord.from_value("bare-id") == ExecutionRecord("bare-id")  # an earlier provider version
    assert ExecutionRecord.from_value({"execution_id": "e", "try_number": "2", "cancel_if_orphaned": "no"}) == (
        ExecutionRecord("e")
    )
    assert ExecutionRecord.from_value({"nope": 1}) is None
    assert ExecutionRecord.from_value(None) is None


class _TI:
    def __init__(self, try_number: int, run_id: str = "manual__2026-12-03") -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number = "d", run_id, "t", -1, try_number
        self.xcoms: dict[str, object] = {}  # one try's XComs: Airflow clears them when the next try starts

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> object:
        return self.xcoms.get(key)


class _Variables:
    """Airflow's Variable API, as far as the record uses it."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, key: str, value: str, description: str | None = None) -> None:
        assert len(key) <= 250  # Airflow's Variable.key column
        self.values[key] = value

    def get(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def test_before_3_3_a_variable_carries_the_record_to_the_next_try(monkeypatch):
    """No task_state_store (3.0-3.2) and XComs cleared at each new try: a retry after a lost worker still finds
    the execution, and a success removes the Variable."""
    variables = _Variables()
    monkeypatch.setattr("airflow.providers.common.compat.sdk.Variable", variables)
    monkeypatch.setattr(ownership, "_variables_hold_records", lambda: True)
    log = type("Log", (), {"warning": lambda *a, **k: pytest.fail(f"warned: {a}")})()
    first = RecordStore({"ti": _TI(1, run_id="r" * 250)}, log)
    assert first.durable
    first.save(ExecutionRecord("e-1", try_number=1, conn_id="c", hook="m.H"))
    (key,) = variables.values
    assert key == variable_key(_TI(2, run_id="r" * 250))  # the same Variable for every try
    retry = RecordStore({"ti": _TI(2, run_id="r" * 250)}, log)
    assert retry.recall() == ExecutionRecord("e-1", try_number=1, conn_id="c", hook="m.H")
    retry.forget()
    assert variables.values == {} and retry.recall() is None
    other_run = RecordStore({"ti": _TI(1, run_id="other")}, log)
    other_run.save(ExecutionRecord("e-2"))
    assert RecordStore({"ti": _TI(1)}, log).recall() is None  # another task instance's record is not ours


def test_from_3_3_the_task_state_store_holds_the_record_and_no_variable_is_written(monkeypatch):
    monkeypatch.setattr(ownership, "_variables_hold_records", lambda: False)
    assert not RecordStore({"ti": _TI(1)}, None).durable


@pytest.mark.parametrize(
    ("ti_state", "state", "expected"),
    [
        ("failed", S.RUNNING, "cancel"),
        ("success", S.QUEUED, "cancel"),  # marked success: the owner's cancel did not land
        ("skipped", S.UNKNOWN, "cancel"),  # an unknown word is not an end
        ("failed", S.CANCELLING, "forget"),  # someone's cancel is under way
        ("failed", S.CANCELLED, "forget"),
        ("failed", S.SUCCEEDED, "forget"),
        ("failed", None, "forget"),  # unknown to the vendor
        ("running", S.RUNNING, "leave"),
        ("deferred", S.RUNNING, "leave"),  # a trigger (maybe on another triggerer) polls it
        ("up_for_retry", S.RUNNING, "leave"),  # the retry adopts it
        ("restarting", S.RUNNING, "leave"),  # cleared: the new try adopts it
        ("queued", S.RUNNING, "leave"),
        (None, S.RUNNING, "leave"),
    ],
)
def test_decide_orphan(ti_state, state, expected):
    assert decide_orphan(ExecutionRecord("e"), ti_state, state).value == expected


def test_decide_orphan_leaves_what_the_user_kept():
    kept = ExecutionRecord("e", cancel_if_orphaned=False)
    assert decide_orphan(kept, "failed", S.RUNNING) is OrphanAction.LEAVE


def test_durable_is_the_aip_103_spelling_of_on_existing():
    from airflow_provider_cancel.core.errors import ProviderConfigError
    from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

    def op(**kw):
        return DuneRunQueryOperator(task_id="t", sql="SELECT 1", **kw)

    assert op().on_existing == "reattach"
    assert op(durable=True).on_existing == "reattach"
    assert op(durable=False).on_existing == "cancel"
    assert op(durable=True, on_existing="reattach").on_existing == "reattach"
    with pytest.raises(ProviderConfigError, match="give one of them"):
        op(durable=True, on_existing="cancel")
    with pytest.raises(ProviderConfigError, match="durable must be True or False"):
        op(durable="yes")
