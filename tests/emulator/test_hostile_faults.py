"""The hostile fault kinds on the wire: what each sends, and which let the vendor act before spoiling the answer."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY, run_sql

FOREVER = "SELECT 1 -- emulate:forever"


def test_huge_declares_its_size_and_refusing_it_costs_the_server_nothing(dune: httpx.Client,
                                                                         control: EmulatorClient) -> None:
    control.add_fault(kind="huge", action="status", size=10**9)
    execution_id = run_sql(dune, FOREVER)
    with dune.stream("GET", f"/api/v1/execution/{execution_id}/status") as response:
        assert response.status_code == 200 and response.headers["content-length"] == str(10**9)
        first = next(response.iter_raw())
    assert first.startswith(b'{"padding": "')
    assert control.execution(execution_id)["polls"] == 0  # answered instead of the vendor
    assert control.health()  # still serving after the client hung up mid-body


def test_endless_never_ends_until_the_client_leaves(dune: httpx.Client, control: EmulatorClient) -> None:
    control.add_fault(kind="endless", action="status")
    with dune.stream("GET", "/api/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status") as response:
        assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 8 * 1024 * 1024:
                break
    assert received > 8 * 1024 * 1024 and control.health()


def test_echo_key_puts_the_key_in_a_401_body_and_never_in_the_journal(dune: httpx.Client,
                                                                      control: EmulatorClient) -> None:
    control.add_fault(kind="echo_key")
    response = dune.post("/api/v1/sql/execute", json={"sql": "SELECT 1"})
    assert response.status_code == 401 and KEY in response.text
    assert control.executions() == [] and KEY not in json.dumps(control.journal())


def test_drip_sends_the_real_answer_one_byte_at_a_time_after_the_vendor_acted(emulator: EmulatorProcess,
                                                                             control: EmulatorClient) -> None:
    control.add_fault(kind="drip", action="create", delay=0.05)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=30) as sock:
        body = b'{"sql": "SELECT 1"}'
        sock.sendall(b"POST /dune/api/v1/sql/execute HTTP/1.1\r\nHost: x\r\nX-Dune-Api-Key: " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        reads, data = [], b""
        while b"}" not in data.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(65536)
            assert chunk, data
            reads.append(chunk)
            data += chunk
    answer = json.loads(data.partition(b"\r\n\r\n")[2])
    assert len(reads) > 10 and time.monotonic() - started > 0.05 * 10  # byte by byte
    assert [e["id"] for e in control.executions()] == [answer["execution_id"]]  # the create happened


@pytest.mark.parametrize("vendor", ["dune", "izieroma", "bctrl", "meibel", "b3os"])
def test_odd_field_spoils_only_declared_optional_fields(emulator: EmulatorProcess, control: EmulatorClient,
                                                        vendor: str) -> None:
    from airflow_provider_cancel.emulator.app import VENDORS

    declared = VENDORS[vendor].odd_fields
    assert set(declared) == {"create", "status"}
    assert not {"id", "execution_id", "runId", "status", "state"} & {p.split(".")[-1] for p in declared["status"]}


def test_odd_rate_limit_deep_json_and_other_id_spoil_a_real_answer(dune: httpx.Client,
                                                                   control: EmulatorClient) -> None:
    execution_id = run_sql(dune, FOREVER)
    url = f"/api/v1/execution/{execution_id}/status"
    for kind in ("odd_rate_limit", "deep_json", "other_id", "odd_field"):
        control.add_fault(kind=kind, action="status")
    odd_headers = dune.get(url)
    assert (odd_headers.headers["retry-after"], odd_headers.headers["x-ratelimit-remaining"]) == ("inf", "nan")
    deep = dune.get(url)
    assert deep.content.count(b"[") == 100_000 and b'"execution_id": "' + execution_id.encode() in deep.content
    other = dune.get(url).json()
    assert other["execution_id"] != execution_id and other["execution_id"][:-1] == execution_id[:-1]
    assert dune.get(url).json()["queue_position"] == "third"
    assert control.execution(execution_id)["polls"] == 4  # the vendor answered each one
    assert control.stats()["faults"] == {"odd_rate_limit": 1, "deep_json": 1, "other_id": 1, "odd_field": 1}
