"""Narrow logic of the one scrubber: which forms of a secret it knows, and the places that call it."""

from __future__ import annotations

import logging
import pickle

import httpx
import pytest
import respx

from airflow_provider_cancel.core import redact
from airflow_provider_cancel.core.errors import ExecutionApiError
from airflow_provider_cancel.core.http import ApiCall, ApiClient, RetryPolicy

KEY = "sk-REDACT-unit-7c1f/+="
BASE = "https://api.example.test"
STATUS = ApiCall("GET", "/v1/x/status", "status")


@pytest.fixture(autouse=True)
def registered():
    redact.register(KEY, "sk-two-PIECES\r\nsecond-PIECE")


def test_every_form_of_a_secret_is_scrubbed_the_longest_first():
    text = f"a {KEY} b sk-REDACT-unit-7c1f%2F%2B%3D c sk-REDACT-unit-7c1f%2F%2B%3D d second-PIECE e sk-two-PIECES"
    assert redact.scrub(text) == "a *** b *** c *** d *** e ***"
    assert redact.scrub("ordinary words, ab, sk") == "ordinary words, ab, sk"  # short pieces never count


def test_an_api_error_never_holds_a_secret_even_once_pickled():
    err = ExecutionApiError(vendor="Acme", method="GET", path="/x", status_code=401, message=f"bad key {KEY}",
                            request_id=f"req-{KEY}", code=KEY)
    for text in (str(err), repr(err), err.message, str(pickle.loads(pickle.dumps(err)))):
        assert KEY not in text and "***" in text


@respx.mock
def test_retry_warnings_and_transport_errors_are_scrubbed(caplog):
    respx.get(f"{BASE}/v1/x/status").mock(side_effect=[
        httpx.Response(503, json={"error": f"overloaded, your key {KEY}"}),
        httpx.ConnectError(f"refused for {KEY}"),
        httpx.ConnectError(f"refused for {KEY}"),
    ])
    c = ApiClient(vendor="Acme", base_url=BASE, auth_headers={"X-Key": KEY},
                  retry=RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001))
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.ConnectError) as err:
        c.request(STATUS)
    assert len(caplog.records) == 2
    for text in (*(r.getMessage() for r in caplog.records), str(err.value), *err.value.__notes__):
        assert KEY not in text, text
