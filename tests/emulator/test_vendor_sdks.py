"""The vendors' own SDKs as clients of the emulator: they start, read, cancel and page through it over real HTTP on
loopback, and parse every answer with their own models. Where an SDK and the emulator disagree, the SDK is right.

dune-client (Dune's official Python SDK), meibel (Meibel's generated Python SDK) and bctrl 0.1.0 (bctrl's last
SDK release with an invocations API: generation 2, runtime-scoped) are test dependencies only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from bctrl import Bctrl
from bctrl import errors as bctrl_errors
from dune_client.client import DuneClient
from dune_client.models import ExecutionState, ExecutionStatusResponse, QueryFailedError, ResultsResponse
from dune_client.query import QueryBase
from dune_client.types import QueryParameter
from meibel import MeibelClient
from meibel import exceptions as meibel_errors
from meibel.models import (
    BatchExecutionResponse,
    CreateBatchDefinitionRequest,
    CreateBatchExecutionRequest,
    LegacyBatchInputConfig,
    LegacyBatchSpecJson,
)

from airflow_provider_cancel.emulator.bctrl import MISSING_ID
from airflow_provider_cancel.emulator.testing import RUNTIME_ID, EmulatorClient, EmulatorProcess, wait_for
from tests.emulator.helpers import KEY


@pytest.fixture(scope="module")
def emulator_args() -> list[str]:
    return ["--api-key", KEY]  # so that a wrong key is refused, as the vendor would


# -- Dune: dune-client -----------------------------------------------------------------------------------------------
@pytest.fixture
def dune(emulator: EmulatorProcess, control: EmulatorClient) -> DuneClient:
    return DuneClient(api_key=KEY, base_url=emulator.base_url("dune"), request_timeout=10)


def dune_finished(dune: DuneClient, execution_id: str) -> ExecutionStatusResponse:
    """Poll with the SDK's own status model until the SDK calls the state terminal."""
    return wait_for(lambda: (s := dune.get_execution_status(execution_id)).state in ExecutionState.terminal_states()
                    and s, timeout=10)


def test_dune_sql_runs_to_completion_and_every_status_parses(dune: DuneClient, control: EmulatorClient) -> None:
    started = dune.execute_sql("SELECT n FROM t -- emulate:succeed:3,rows=4", performance="large")
    assert started.state is ExecutionState.PENDING
    seen = [dune.get_execution_status(started.execution_id) for _ in range(4)]
    assert [s.state for s in seen] == [ExecutionState.PENDING, ExecutionState.EXECUTING, ExecutionState.EXECUTING,
                                       ExecutionState.COMPLETED]
    assert seen[0].queue_position == 1 and seen[0].times.submitted_at is not None
    done = seen[-1]
    assert done.is_execution_finished is True and done.query_id == 0 and done.execution_cost_credits
    assert done.times.execution_started_at and done.times.execution_ended_at and done.times.expires_at
    assert done.result_metadata is not None and done.result_metadata.total_row_count == 4
    assert done.result_metadata.column_names == ["n", "label"]
    assert control.execution(started.execution_id)["data"]["performance"] == "large"


def test_dune_saved_query_with_the_sdks_parameters(dune: DuneClient, control: EmulatorClient) -> None:
    query = QueryBase(query_id=3493826, params=[QueryParameter.number_type("days", 7),
                                                QueryParameter.text_type("chain", "ethereum")])
    started = dune.execute_query(query)
    assert dune.get_execution_status(started.execution_id).query_id == 3493826
    assert control.execution(started.execution_id)["data"] == {
        "query_id": 3493826, "performance": "medium", "query_parameters": {"days": "7", "chain": "ethereum"},
    }


def test_dune_cancel_answers_the_sdks_bool_and_the_status_says_cancelled(dune: DuneClient) -> None:
    started = dune.execute_sql("SELECT 1 -- emulate:forever")
    assert dune.cancel_execution(started.execution_id) is True
    status = dune.get_execution_status(started.execution_id)
    assert status.state is ExecutionState.CANCELLED and status.times.cancelled_at is not None
    assert dune.cancel_execution(started.execution_id) is False  # already ended
    results = dune.get_execution_results(started.execution_id)
    assert results.state is ExecutionState.CANCELLED and results.result is None and results.get_rows() == []


def test_dune_results_page_by_next_uri_as_the_sdk_follows_it(dune: DuneClient, control: EmulatorClient) -> None:
    started = dune.execute_sql("SELECT 1 -- emulate:succeed:0,rows=250")
    dune_finished(dune, started.execution_id)
    first = dune.get_execution_results(started.execution_id, limit=100)
    assert first.next_offset == 100 and first.next_uri is not None
    assert first.next_uri.startswith(dune.base_url)  # the SDK asserts this before following it
    everything: ResultsResponse = dune._fetch_entire_result(first)  # what run_query does after the first page
    assert [row["n"] for row in everything.get_rows()] == list(range(250))
    assert everything.next_uri is None and everything.result is not None
    assert everything.result.metadata.total_row_count == 250
    pages = control.journal(action="result", execution_id=started.execution_id)
    assert [e["query"] for e in pages] == [
        "allow_partial_results=true&limit=100",
        "offset=100&limit=100&allow_partial_results=true",
        "offset=200&limit=100&allow_partial_results=true",
    ]


def test_dune_csv_results_page_by_the_next_uri_header(dune: DuneClient) -> None:
    started = dune.execute_sql("SELECT 1 -- emulate:succeed:0,rows=25")
    dune_finished(dune, started.execution_id)
    first = dune.get_execution_results_csv(started.execution_id, limit=10)
    assert first.next_offset == "10" and first.next_uri and first.next_uri.startswith(dune.base_url)
    everything = dune._fetch_entire_result_csv(first)
    rows = list(csv.DictReader(io.TextIOWrapper(everything.data, encoding="utf-8")))
    assert [int(row["n"]) for row in rows] == list(range(25)) and rows[3]["label"] == "row 3"


def test_dune_run_query_end_to_end_with_the_sdks_own_loop(dune: DuneClient) -> None:
    result = dune.run_query(QueryBase(query_id=77), ping_frequency=0, batch_size=40)
    assert result.state is ExecutionState.COMPLETED and len(result.get_rows()) == 5


def test_dune_failure_reaches_the_sdk_with_dunes_error(dune: DuneClient) -> None:
    with pytest.raises(QueryFailedError, match=r"line 1:8: Column 'x' cannot be resolved"):
        dune.run_sql("SELECT x -- emulate:fail:1", ping_frequency=0)


def test_dune_partial_result_is_read_the_way_the_sdk_asks_for_it(dune: DuneClient) -> None:
    started = dune.execute_sql("SELECT 1 -- emulate:partial:0,rows=30")
    assert dune_finished(dune, started.execution_id).state is ExecutionState.PARTIAL
    page = dune.get_execution_results(started.execution_id, limit=20)  # the SDK sends allow_partial_results=true
    assert page.state is ExecutionState.PARTIAL and page.result is not None and len(page.result.rows) == 20
    assert "allow_partial_results=true" in (page.next_uri or "")


def test_dune_errors_are_http_errors_with_dunes_body(emulator: EmulatorProcess, dune: DuneClient) -> None:
    wrong = DuneClient(api_key="sk-wrong", base_url=emulator.base_url("dune"), request_timeout=10)
    with pytest.raises(requests.HTTPError) as refused:
        wrong.execute_sql("SELECT 1")
    assert refused.value.response.status_code == 401
    assert refused.value.response.json() == {"error": "invalid API Key"}
    with pytest.raises(requests.HTTPError) as missing:
        dune.get_execution_status("01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert missing.value.response.status_code == 404


# -- Meibel: the meibel SDK ------------------------------------------------------------------------------------------
@pytest.fixture
def meibel(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[MeibelClient]:
    with MeibelClient(base_url=emulator.base_url("meibel"), api_key=KEY, timeout=10) as client:
        yield client


def legacy_spec(scenario: str, **fields: Any) -> CreateBatchExecutionRequest:
    spec = LegacyBatchSpecJson(name="invoices", agent="agent-7d1c", user_message=f"emulate:{scenario}",
                               input=LegacyBatchInputConfig(datasource_id="ds-invoices"), **fields)
    return CreateBatchExecutionRequest(batch_spec_json=spec)


def meibel_ended(meibel: MeibelClient, execution_id: str) -> BatchExecutionResponse:
    return wait_for(lambda: (e := meibel.batches.executions.get_by_id(execution_id)).end_time is not None and e,
                    timeout=15)


def test_meibel_batch_definition_executes_and_its_items_parse(meibel: MeibelClient) -> None:
    definition = meibel.batches.create(CreateBatchDefinitionRequest(
        name="invoice-totals", agent_id="agent-7d1c", input_datasource_id="ds-invoices",
        description="emulate:succeed:2,rows=3",
    ))
    assert definition.catalog_urn.endswith(definition.id) and definition.version
    started = meibel.batches.execute(definition.id)
    assert started.execution_id and started.workflow_id == started.execution_id
    first = meibel.batches.executions.get_by_id(started.execution_id)
    assert first.status == "pending" and first.batch_definition_id == definition.id and first.end_time is None
    done = meibel_ended(meibel, started.execution_id)
    assert done.status == "completed" and (done.total_items, done.succeeded, done.failed) == (3, 3, 0)
    assert done.items is not None and [item.status for item in done.items] == ["completed"] * 3
    assert all(item.filename.endswith(".pdf") and item.output_artifacts for item in done.items)
    assert done.start_time <= done.end_time


def test_meibel_legacy_create_cancel_and_a_second_cancel(meibel: MeibelClient) -> None:
    created = meibel.batches.executions.create(legacy_spec("forever"))
    assert created.status == "pending" and created.batch_spec_json is not None
    assert meibel.batches.executions.cancel(created.id).status == "cancelling"
    cancelled = meibel.batches.executions.get_by_id(created.id)
    assert cancelled.status == "cancelled" and cancelled.end_time is not None and cancelled.error
    with pytest.raises(meibel_errors.ApiError) as again:
        meibel.batches.executions.cancel(created.id)
    assert again.value.status_code == 409 and "already ended" in again.value.message


def test_meibel_failure_carries_the_overall_and_per_item_errors(meibel: MeibelClient) -> None:
    created = meibel.batches.executions.create(legacy_spec("fail:0,rows=4"))
    failed = meibel_ended(meibel, created.id)
    assert failed.status == "failed" and failed.error and (failed.succeeded, failed.failed) == (3, 1)
    assert failed.items is not None and [i.status for i in failed.items].count("failed") == 1
    assert next(i for i in failed.items if i.status == "failed").error


def test_meibel_list_pages_by_offset_with_the_sdks_pagination_model(meibel: MeibelClient) -> None:
    made = {meibel.batches.executions.create(legacy_spec("succeed:1")).id for _ in range(5)}
    seen: list[str] = []
    offset = 0
    while True:
        page = meibel.batches.executions.list(offset=offset, limit=2, sort_order="asc")
        assert page.pagination.total == 5 and page.pagination.offset == offset and page.pagination.limit == 2
        seen += [execution.id for execution in page.data]
        offset += len(page.data)
        if not page.data or offset >= page.pagination.total:
            break
    assert set(seen) == made and len(seen) == 5


def test_meibel_errors_map_to_the_sdks_exceptions(emulator: EmulatorProcess, meibel: MeibelClient) -> None:
    with pytest.raises(meibel_errors.NotFoundError):
        meibel.batches.executions.get_by_id("3f2b8c1e-6f0a-4d9e-9b1c-2a7d5e8f4c10")
    with pytest.raises(meibel_errors.ApiError) as invalid:  # 2.0.7 maps only 401, 404 and 429 to subclasses
        meibel.batches.create(CreateBatchDefinitionRequest(name="Not Kebab", agent_id="a", input_datasource_id="d"))
    assert invalid.value.status_code == 422 and invalid.value.response_body["detail"][0]["loc"][-1] == "name"
    wrong = MeibelClient(base_url=emulator.base_url("meibel"), api_key="sk-wrong", timeout=10)
    with wrong, pytest.raises(meibel_errors.AuthenticationError):
        wrong.batches.executions.list()


def test_meibel_rate_limit_is_the_sdks_rate_limit_error(meibel: MeibelClient, control: EmulatorClient) -> None:
    control.add_fault(vendor="meibel", action="list", kind="429", retry_after=3)
    with pytest.raises(meibel_errors.RateLimitError) as limited:
        meibel.batches.executions.list()
    assert limited.value.status_code == 429


# -- bctrl: the bctrl SDK 0.1.0 (API generation 2, runtime-scoped invocations) --------------------------------------
@pytest.fixture
def bctrl(emulator: EmulatorProcess, control: EmulatorClient) -> Bctrl:
    return Bctrl(api_key=KEY, base_url=emulator.base_url("bctrl"), timeout=10, max_retries=0)


def test_bctrl_sdk_invokes_an_action_and_waits_for_it(bctrl: Bctrl, control: EmulatorClient) -> None:
    done = bctrl.runtimes.invocations.create_and_wait(
        RUNTIME_ID, action="extract", instruction="Extract the order total.", metadata={"emulate": "succeed:1"},
        idempotency_key="sdk-key-1", poll_timeout_ms=5000,
    )
    assert (done["waitStatus"], done["status"], done["action"]) == ("completed", "succeeded", "extract")
    assert done["output"]["instruction"] == "Extract the order total." and done["runtimeId"] == RUNTIME_ID
    (create,) = control.journal(vendor="bctrl", action="create")
    assert create["path"] == f"/bctrl/v1/runtimes/{RUNTIME_ID}/invocations" and create["status_code"] == 202
    assert control.execution(done["id"])["idempotency_key"] == "sdk-key-1"  # sent as the Idempotency-Key header
    again = bctrl.runtimes.invocations.create(RUNTIME_ID, action="extract", instruction="Extract the order total.",
                                              metadata={"emulate": "succeed:1"}, idempotency_key="sdk-key-1")
    assert again["id"] == done["id"]  # replayed, not started twice


def test_bctrl_sdk_cancels_without_a_body_and_a_second_cancel_conflicts(bctrl: Bctrl,
                                                                        control: EmulatorClient) -> None:
    live = bctrl.runtimes.invocations.stagehand.act(RUNTIME_ID, "Click buy", metadata={"emulate": "forever"})
    assert live["status"] == "queued" and live["action"] == "act"
    cancelling = bctrl.runtimes.invocations.cancel(RUNTIME_ID, live["id"])
    assert cancelling["status"] == "cancelling"
    assert [e["body_bytes"] for e in control.cancels(live["id"])] == [0]
    waited = bctrl.runtimes.invocations.wait(RUNTIME_ID, live["id"], timeoutMs=1000)
    assert waited["status"] == "cancelled" and waited["error"]["code"] == "invocation.cancelled"
    with pytest.raises(bctrl_errors.BctrlConflictError) as again:
        bctrl.runtimes.invocations.cancel(RUNTIME_ID, live["id"])
    assert again.value.code == "invocation.not_cancellable" and again.value.request_id


def test_bctrl_sdk_pages_a_runs_invocations_by_cursor_and_reads_one(bctrl: Bctrl) -> None:
    made = [bctrl.runtimes.invocations.stagehand.observe(RUNTIME_ID, f"Find button {n}",
                                                         metadata={"emulate": "succeed:0"})["id"] for n in range(5)]
    first = bctrl.runtimes.invocations.wait(RUNTIME_ID, made[0], timeoutMs=1000)
    run_id = first["runId"]
    page = bctrl.runs.invocations.list(run_id, limit=2)
    assert len(page["data"]) == 2 and page["nextCursor"]
    listed = [item["id"] for item in bctrl.runs.invocations.iter(run_id, limit=2)]  # follows nextCursor
    assert listed == made and all(item["action"] == "observe" for item in page["data"])
    assert bctrl.runs.invocations.get(run_id, made[-1])["id"] == made[-1]


def test_bctrl_sdk_errors_carry_bctrls_codes(emulator: EmulatorProcess, bctrl: Bctrl) -> None:
    with pytest.raises(bctrl_errors.BctrlNotFoundError) as missing:
        bctrl.runtimes.invocations.create(MISSING_ID, action="act", instruction="x")
    assert missing.value.code == "runtime.not_found"
    with pytest.raises(bctrl_errors.BctrlValidationError) as invalid:
        bctrl.runtimes.invocations.create(RUNTIME_ID, action="observe")  # observe needs an instruction
    assert invalid.value.code == "request.invalid" and invalid.value.body["details"] == {"path": "instruction"}
    wrong = Bctrl(api_key="sk-wrong", base_url=emulator.base_url("bctrl"), timeout=10, max_retries=0)
    with pytest.raises(bctrl_errors.BctrlAuthenticationError) as refused:
        wrong.runtimes.invocations.create(RUNTIME_ID, action="act", instruction="x")
    assert refused.value.code == "auth.required"
