"""Narrow logic of reading answers: JSON that Python's json cannot read whole, rate-limit headers that are no
numbers, payload models whose optional fields come in the wrong type."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.hook import parse_model
from airflow_provider_cancel.core.http import ApiCall, is_transient, parse_rate_limit, parse_retry_after, read_answer
from airflow_provider_cancel.core.http._answer import FORGIVING_MAX_BYTES, parse_json
from airflow_provider_cancel.core.http._errorbody import parse_error_body
from airflow_provider_cancel.core.poll import PollSchedule

CALL = ApiCall("GET", "/v1/x/status", "status")


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# -- JSON ----------------------------------------------------------------------------------------------------------
def test_nan_and_infinity_read_as_null():
    assert parse_json(b'{"a": NaN, "b": [Infinity, -Infinity], "c": 1.5}') == {"a": None, "b": [None, None], "c": 1.5}


def test_a_value_nested_past_the_recursion_limit_is_cut_and_the_rest_read():
    body = parse_json(('{"id": "e1", "deep": ' + deep(200_000) + ', "state": "running"}').encode())
    assert body["id"] == "e1" and body["state"] == "running"
    depth, value = 0, body["deep"]
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    assert depth < 1000  # cut: what is left can be handed to pydantic, XCom, json.dumps


def test_an_integer_of_more_than_4300_digits_reads_as_null():
    assert parse_json(('{"id": "e1", "n": ' + "9" * 5000 + "}").encode()) == {"id": "e1", "n": None}


def test_brackets_inside_strings_do_not_count():
    text = '{"id": "[[[{{{\\"]]]", "deep": ' + deep(5000) + "}"
    assert parse_json(text.encode())["id"] == '[[[{{{"]]]'


def test_broken_or_too_large_to_forgive_is_no_usable_response():
    response = httpx.Response(200, content=b'{"id": "e1", "deep": ' + deep(FORGIVING_MAX_BYTES).encode() + b"}")
    with pytest.raises(ExecutionApiError) as err:
        read_answer(CALL, response, vendor="Acme", conn_id="c", error_parser=parse_error_body)
    assert err.value.status_code is None and "no usable response" in str(err.value)
    assert "RecursionError" in str(err.value)
    assert is_transient(err.value) and not is_transient(err.value, retry_safe=False)
    with pytest.raises(ExecutionApiError, match="not valid JSON"):
        read_answer(CALL, httpx.Response(200, content=b'{"id": "e'), vendor="Acme", conn_id="c",
                    error_parser=parse_error_body)


def test_an_error_answer_with_an_unreadable_body_keeps_its_status():
    response = httpx.Response(401, content=('{"error": ' + deep(100_000) + "}").encode())
    with pytest.raises(ExecutionApiError) as err:
        read_answer(CALL, response, vendor="Acme", conn_id="c", error_parser=parse_error_body)
    assert err.value.status_code == 401


# -- rate-limit headers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-5", "1e30", "Infinity", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_that_is_no_sensible_number_is_ignored(value):
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(("remaining", "reset"), [("nan", "inf"), ("inf", "nan"), ("-1", "-3"), ("1e300", "1e300")])
def test_rate_limit_headers_that_are_no_sensible_numbers_are_ignored_and_never_stretch_a_poll(remaining, reset):
    rate_limit = parse_rate_limit(httpx.Headers({"X-RateLimit-Remaining": remaining, "X-RateLimit-Reset": reset,
                                                 "Retry-After": "inf"}))
    assert (rate_limit.remaining, rate_limit.reset_at, rate_limit.retry_after) == (None, None, None)
    assert PollSchedule(1.0, 30.0).delay(5.0, rate_limit) <= 1.0


def test_a_daily_quota_window_is_kept():
    headers = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(time.time() + 86_000)})
    reset = parse_rate_limit(headers)
    assert reset.exhausted and math.isfinite(reset.reset_at)


# -- payload models -------------------------------------------------------------------------------------------------
class Step(BaseModel):
    index: int | None = None
    name: str


class Status(BaseModel):
    id: str
    state: str
    progress: int | None = None
    steps: list[Step] | None = None
    version: int | str | None = None


def parse(body: Any) -> Status:
    return parse_model(Status, body, vendor="Acme", call=CALL)


def test_only_the_required_fields_are_strict():
    with pytest.raises(ExecutionApiError, match=r"unexpected response shape \(state: Input should be a valid string"):
        parse({"id": "e1", "state": 5})
    with pytest.raises(ExecutionApiError, match=r"id: Field required") as err:
        parse({"state": "running"})
    assert err.value.status_code == 200 and is_transient(err.value)  # a wait asks again


def test_an_optional_field_of_the_wrong_type_is_dropped_and_logged_once(caplog):
    with caplog.at_level(logging.WARNING):
        first = parse({"id": "e1", "state": "running", "progress": "half", "version": ["x"]})
        parse({"id": "e2", "state": "running", "progress": "most"})
    assert (first.id, first.state, first.progress, first.version) == ("e1", "running", None, None)
    logged = [r.getMessage() for r in caplog.records if "'progress'" in r.getMessage()]
    assert len(logged) == 1 and "Acme" in logged[0] and "Status" in logged[0]


def test_the_smallest_odd_part_goes_and_the_rest_of_a_nested_value_stays():
    status = parse({"id": "e1", "state": "done", "steps": [{"name": "a", "index": "x"}, "junk", {"name": "c"}]})
    assert [(s.name, s.index) for s in status.steps or []] == [("a", None), ("c", None)]
    status = parse({"id": "e1", "state": "done", "steps": [{"index": 1}]})  # a step without its required name
    assert status.steps == []


@pytest.mark.parametrize("body", [[1, 2], "text", None, 7])
def test_a_body_that_is_no_object_is_strict(body):
    with pytest.raises(ExecutionApiError, match="unexpected response shape"):
        parse(body)


def test_the_answer_is_not_changed_in_place():
    body = {"id": "e1", "state": "s", "progress": "half", "steps": [{"name": "a", "index": "x"}]}
    parse(body)
    assert body == {"id": "e1", "state": "s", "progress": "half", "steps": [{"name": "a", "index": "x"}]}
