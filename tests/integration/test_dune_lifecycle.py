"""The Dune operator, sensor, hook and trigger over real HTTP against the emulator: every lifecycle path."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cancel.core.errors import (
    ProviderConfigError,
)
from airflow_provider_cancel.emulator.testing import wait_for
from airflow_provider_cancel.vendors.dune import DuneHook, DuneRunQueryOperator

from .conftest import API_KEY, make_context
from .test_bad_input import Server

CONN = "dune_emu"


def op(sql: str = "SELECT 1 -- emulate:succeed:2", **kw) -> DuneRunQueryOperator:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("max_poll_interval", 0.2)
    kw.setdefault("deferrable", False)
    return DuneRunQueryOperator(task_id=kw.pop("task_id", "q"), conn_id=CONN, sql=sql, **kw)


def creates(emu) -> int:
    return len(emu.journal(vendor="dune", action="create"))


# -- sync lifecycle ---------------------------------------------------------------------------------------


def test_results_page_through_and_respect_max_rows(emu):
    hook = DuneHook(CONN)
    eid = hook.execute_sql("SELECT 1 -- emulate:succeed:0,rows=2500")
    wait_for(lambda: hook.get_status(eid).state.is_terminal, timeout=10)
    everything = hook.get_results(eid, max_rows=None)
    assert everything["row_count"] == 2500 and not everything["truncated"]
    assert [r["n"] for r in everything["rows"][:3]] == [0, 1, 2]
    assert len(emu.journal(action="result", execution_id=eid)) >= 3  # 1000 + 1000 + 500
    capped = hook.get_results(eid, max_rows=150)
    assert capped["row_count"] == 150 and capped["truncated"] and capped["total_row_count"] == 2500


def test_results_follow_next_uri_as_the_sdk_does_and_ask_only_for_the_rows_still_wanted(emu):
    hook = DuneHook(CONN)
    eid = hook.execute_sql("SELECT 1 -- emulate:succeed:0,rows=2500")
    wait_for(lambda: hook.get_status(eid).state.is_terminal, timeout=10)
    assert hook.get_results(eid, max_rows=1500)["row_count"] == 1500
    # The first page, then Dune's own next_uri, its limit cut to the 500 rows still wanted.
    assert [e["query"] for e in emu.journal(action="result", execution_id=eid)] == [
        "limit=1000&offset=0", "offset=1000&limit=500",
    ]


def test_a_next_uri_outside_the_connection_is_not_followed_and_the_key_stays_home(monkeypatch):
    home, elsewhere = Server(), Server()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DUNE_HOME", json.dumps({"conn_type": "dune", "host": home.url,
                                                                  "password": API_KEY}))
        eid = DuneHook.execution_id_example
        home.body = json.dumps({
            "execution_id": eid, "state": "QUERY_STATE_COMPLETED", "next_offset": 2,
            "next_uri": f"{elsewhere.url}/api/v1/execution/{eid}/results?offset=2&limit=2",
            "result": {"rows": [{"n": 0}, {"n": 1}], "metadata": {"total_row_count": 4}},
        }).encode()
        hook = DuneHook("dune_home")
        hook.trust(eid)
        result = hook.get_results(eid, max_rows=None)
        assert elsewhere.requests == []  # never followed, so the key never went there
        assert [path.split("?")[1] for path, _ in home.requests] == ["limit=1000&offset=0", "limit=1000&offset=2"]
        assert result["row_count"] == 4  # page two came from the connection's own host, by next_offset
    finally:
        home.close()
        elsewhere.close()


# -- bad input: clear errors before any request ------------------------------------------------------------
def test_bad_arguments_fail_before_any_request(emu):
    before = creates(emu)
    with pytest.raises(ProviderConfigError, match="exactly one of query_id or sql"):
        DuneRunQueryOperator(task_id="x", conn_id=CONN)
    with pytest.raises(ProviderConfigError, match="performance"):
        DuneRunQueryOperator(task_id="x", conn_id=CONN, sql="SELECT 1", performance="huge")
    for bad in ("", "   "):
        with pytest.raises(ProviderConfigError, match="sql must be a non-blank string"):
            op(bad).execute(make_context())
    for bad_id in ("abc", "0", "-3", "1/2"):
        task = DuneRunQueryOperator(task_id="x", conn_id=CONN, query_id=bad_id, deferrable=False)
        with pytest.raises(ProviderConfigError, match="query_id must be a positive integer"):
            task.execute(make_context())
    assert creates(emu) == before


# -- deferrable lifecycle: the trigger driven as Airflow's triggerer drives it -----------------------------


# -- retry after a hard worker crash (the id was recorded before polling) ----------------------------------


# -- sensor --------------------------------------------------------------------------------------------------


