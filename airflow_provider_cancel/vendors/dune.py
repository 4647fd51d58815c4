"""Dune Analytics: a query execution (saved query by id, or raw SQL) and its result rows.

API facts (docs/dune.md): `X-Dune-Api-Key`; states QUERY_STATE_*; cancel answers {"success": bool}; results
page through `next_uri` as dune-client follows it (only under the connection's base URL); no idempotency key, so
a create is never retried after an ambiguous failure. Execution ids are ULIDs.
"""

from __future__ import annotations

import contextlib
import functools
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from airflow_provider_cancel.core.errors import ProviderConfigError
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook, is_template, parse_model, short_repr
from airflow_provider_cancel.core.http import ApiCall, quote_path_id
from airflow_provider_cancel.core.links import ExecutionLink
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus, LazyPayload, normalize_status

if TYPE_CHECKING:
    from airflow.sdk import Context

S = ExecutionState
STATUS_WORDS = {
    "query_state_pending": S.QUEUED,
    "query_state_executing": S.RUNNING,
    "query_state_completed": S.SUCCEEDED,
    "query_state_completed_partial": S.SUCCEEDED,
    "query_state_failed": S.FAILED,
    "query_state_expired": S.FAILED,
    "query_state_cancelled": S.CANCELLED,
}
PERFORMANCE_TIERS = ("medium", "large")
PAGE_SIZE = 1000


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # schemas built on first use, not at DAG parse


class DuneError(_Model):
    type: str | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None


class DuneStatus(_Model):
    execution_id: str
    state: str
    query_id: int | None = None
    is_execution_finished: bool | None = None
    queue_position: int | None = None
    error: DuneError | None = None


class DuneStarted(_Model):
    execution_id: str
    state: str | None = None


class DuneResultPage(_Model):
    execution_id: str | None = None
    state: str | None = None
    next_offset: int | None = None
    next_uri: str | None = None
    result: dict[str, Any] | None = None


class DuneHook(ExecutionHook):
    conn_type = "dune"
    default_conn_name = "dune_default"
    hook_name = "Dune"
    vendor = "Dune"
    default_host = "https://api.dune.com"
    api_key_header = "X-Dune-Api-Key"
    status_words = STATUS_WORDS
    execution_id_pattern = re.compile(r"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}")
    execution_id_example = "01HKZJ2683PHF9Q9PHHQ8FW4Q1"

    # -- start -----------------------------------------------------------------------------------------
    def execute_query(
        self, query_id: int, *, parameters: Mapping[str, Any] | None = None, performance: str = "medium"
    ) -> str:
        body: dict[str, Any] = {"performance": performance}
        if parameters:
            body["query_parameters"] = dict(parameters)
        call = ApiCall("POST", f"/api/v1/query/{int(query_id)}/execute", "create", json=body, retry_safe=False)
        return self._started(call)

    def execute_sql(self, sql: str, *, performance: str = "medium") -> str:
        call = ApiCall("POST", "/api/v1/sql/execute", "create", json={"sql": sql, "performance": performance},
                       retry_safe=False)
        return self._started(call)

    def _started(self, call: ApiCall) -> str:
        started = parse_model(DuneStarted, self.client.request(call), vendor=self.vendor, call=call)
        return self.started(started.execution_id)

    # -- adapter ---------------------------------------------------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        return ApiCall("GET", f"/api/v1/execution/{quote_path_id(execution_id)}/status", "status")

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        status = parse_model(DuneStatus, body, vendor=self.vendor, call=call)
        state = normalize_status(status.state, self.status_words)
        error = None
        if status.error is not None:
            where = status.error.metadata or {}
            error = ": ".join(p for p in (status.error.type, status.error.message) if p)
            if "line" in where:
                error += f" (line {where.get('line')}, column {where.get('column')})"
        if state is S.UNKNOWN and status.is_execution_finished:
            # A finished execution in a state we do not know can't be trusted as a success.
            state, error = S.FAILED, f"finished in an unrecognised state {status.state!r}"
        progress = f"queue position {status.queue_position}" if status.queue_position is not None else None
        if status.state.upper().endswith("COMPLETED_PARTIAL"):
            progress = "partial result (truncated by Dune)"
        return ExecutionStatus(status.execution_id, state, status.state, progress=progress, error=error,
                               payload=LazyPayload(status))

    def cancel_call(self, execution_id: str) -> ApiCall:
        return ApiCall("POST", f"/api/v1/execution/{quote_path_id(execution_id)}/cancel", "cancel")

    def cancel_outcome(self, body: Any) -> CancelOutcome:
        # Dune answers 200 {"success": false} when the execution had already ended.
        if isinstance(body, Mapping) and body.get("success") is False:
            return CancelOutcome.ALREADY_FINISHED
        return CancelOutcome.REQUESTED

    def test_call(self) -> ApiCall:
        # Reading an execution that cannot exist: 404 proves the key was accepted, 401 that it was not.
        return self.status_call("0" * 26)

    def execution_url(self, execution_id: str, info: Mapping[str, Any]) -> str | None:
        query_id = info.get("query_id")
        return f"https://dune.com/queries/{int(query_id)}" if query_id else None

    # -- results ---------------------------------------------------------------------------------------
    def get_results(
        self, execution_id: str, *, max_rows: int | None = 1000, allow_partial: bool = False
    ) -> dict[str, Any]:
        """Rows of a finished execution, paged as dune-client pages them: the first page, then each `next_uri`
        (with a smaller `limit` once `max_rows` is near). A `next_uri` outside the connection's base URL is never
        followed with the key: that page is read from our own host by `next_offset` instead.
        Returns {"rows", "metadata", "row_count", "total_row_count", "truncated"}."""
        execution_id = self.validate_execution_id(execution_id)
        params: dict[str, Any] = {"limit": PAGE_SIZE, "offset": 0}
        if allow_partial:
            params["allow_partial_results"] = "true"
        path = f"/api/v1/execution/{quote_path_id(execution_id)}/results"
        rows: list[Any] = []
        metadata: dict[str, Any] = {}
        while max_rows is None or len(rows) < max_rows:
            if max_rows is not None:
                params["limit"] = min(_int(params.get("limit"), PAGE_SIZE), max_rows - len(rows))
            call = ApiCall("GET", path, "result", params=params)
            page = parse_model(DuneResultPage, self.client.request(call), vendor=self.vendor, call=call)
            result = page.result or {}
            page_rows = result.get("rows") or []
            rows.extend(page_rows)
            metadata = result.get("metadata") or metadata
            following = self._next_page(page, path, params) if page_rows else None
            if following is None:
                break
            path, params = following
        total = metadata.get("total_row_count", len(rows))
        if max_rows is not None and len(rows) > max_rows:
            rows = rows[:max_rows]
        return {
            "rows": rows,
            "metadata": metadata,
            "row_count": len(rows),
            "total_row_count": total,
            "truncated": isinstance(total, int) and total > len(rows),
        }

    def _next_page(
        self, page: DuneResultPage, path: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The next page's path and query: `next_uri` when it is under the connection's base URL (the SDK's own
        rule), else `next_offset` on our host; None at the end, or when the offset would not move forward."""
        offset = _int(params.get("offset"), 0)
        base = self.client.base_url
        if page.next_uri and page.next_uri.startswith(base + "/"):
            parts = urllib.parse.urlsplit(page.next_uri)
            following = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
            if _int(following.get("offset"), offset + 1) <= offset:
                return None
            return parts.path[len(urllib.parse.urlsplit(base).path):], following
        if page.next_uri:
            self.log.warning("Dune answered with a next_uri outside the connection's base URL (host %s); the next "
                             "page is read from %s by next_offset instead, so the key never leaves it",
                             urllib.parse.urlsplit(page.next_uri).netloc, base)
        if page.next_offset is not None and page.next_offset > offset:
            return path, {**params, "offset": page.next_offset}
        return None


def _int(value: object, default: int) -> int:
    return int(value) if isinstance(value, (str, int)) and str(value).isdigit() else default


class DuneQueryLink(ExecutionLink):
    name = "Dune query"


class DuneRunQueryOperator(ExecutionOperator[DuneHook]):
    """Run a Dune query (a saved query by id, or raw SQL), wait for it, and return its rows.

    :param query_id: a saved query's id (templated). Give this or ``sql``.
    :param sql: raw SQL to execute (templated). Give this or ``query_id``.
    :param query_parameters: values for the saved query's parameters (templated).
    :param performance: ``"medium"`` (default) or ``"large"`` (more resources, more credits; templated).
    :param max_rows: the most rows returned to XCom (default 1000; None for all: mind your XCom backend); when the
        result is larger the log says how many were left out and the return value has ``truncated=True``.
    :param allow_partial_results: accept a result Dune truncated (QUERY_STATE_COMPLETED_PARTIAL);
        otherwise such a run fails.

    Returns ``{"execution_id", "state", "rows", "metadata", "row_count", "total_row_count", "truncated"}``.
    The execution id is in XCom under ``execution_id`` as soon as the execution starts; for a saved query,
    ``execution_url`` and the "Dune query" link lead to the query's page. Dune cancels synchronously.
    """

    hook_class = DuneHook
    template_fields: Sequence[str] = ("conn_id", "query_id", "sql", "query_parameters", "performance")
    template_fields_renderers = {"sql": "sql", "query_parameters": "json"}
    operator_extra_links = (DuneQueryLink(),)

    def __init__(
        self,
        *,
        query_id: int | str | None = None,
        sql: str | None = None,
        query_parameters: Mapping[str, Any] | None = None,
        performance: Literal["medium", "large"] = "medium",
        max_rows: int | None = 1000,
        allow_partial_results: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.query_id = query_id
        self.sql = sql
        self.query_parameters = query_parameters
        self.performance = performance
        self.max_rows = max_rows
        self.allow_partial_results = allow_partial_results
        if not is_template(performance):
            self._check_performance()
        if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 0):
            raise ProviderConfigError(f"{self.task_id}: max_rows must be a non-negative int or None, got {max_rows!r}")
        if (query_id is None) == (sql is None):
            raise ProviderConfigError(f"{self.task_id}: give exactly one of query_id or sql")

    def _check_performance(self) -> None:
        if self.performance not in PERFORMANCE_TIERS:
            raise ProviderConfigError(
                f"{self.task_id}: performance must be one of {PERFORMANCE_TIERS}, got {short_repr(self.performance)}"
            )

    def validate_request(self) -> None:
        self._check_performance()
        if self.sql is not None:
            if not isinstance(self.sql, str) or not self.sql.strip():
                raise ProviderConfigError(f"{self.task_id}: sql must be a non-blank string, got {short_repr(self.sql)}")
        else:
            self.query_id = self._query_id_number()
        if self.query_parameters is not None and not isinstance(self.query_parameters, Mapping):
            raise ProviderConfigError(
                f"{self.task_id}: query_parameters must be a mapping of name to value, got "
                f"{type(self.query_parameters).__name__}"
            )

    def _query_id_number(self) -> int:
        value = self.query_id
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ProviderConfigError(f"{self.task_id}: query_id must be a positive integer, got {short_repr(value)}")
        return value

    def link_info(self) -> Mapping[str, Any]:
        return {"query_id": self.query_id if self.sql is None else None}

    def lineage_job_facets(self) -> Mapping[str, Any]:
        """``sql`` (raw SQL only) and ``duneQuery`` (the saved query's id, or null for raw SQL; its parameters)."""
        from openlineage.client.facet_v2 import sql_job

        from airflow_provider_cancel.core.lineage import SQL_JOB_FACET_KEY

        facets: dict[str, Any] = {}
        query_id: int | None = None
        if isinstance(self.sql, str):
            facets[SQL_JOB_FACET_KEY] = sql_job.SQLJobFacet(query=self.sql, dialect="dune")
        else:
            with contextlib.suppress(ProviderConfigError):  # lineage never fails a task
                query_id = self._query_id_number()
        facets[DUNE_QUERY_FACET_KEY] = _dune_query_facet_class()(
            queryId=query_id,
            parameters=dict(self.query_parameters) if isinstance(self.query_parameters, Mapping) else {},
            performance=self.performance if isinstance(self.performance, str) else None,
        )
        return facets

    def start_execution(self, hook: DuneHook, context: Context) -> str:
        if self.sql is not None:
            return hook.execute_sql(self.sql, performance=self.performance)
        return hook.execute_query(self._query_id_number(), parameters=self.query_parameters,
                                  performance=self.performance)

    def fetch_result(self, hook: DuneHook, status: ExecutionStatus) -> Any:
        partial = status.vendor_status.upper().endswith("COMPLETED_PARTIAL")
        if partial and not self.allow_partial_results:
            from airflow_provider_cancel.core.errors import ExecutionFailed

            raise ExecutionFailed(
                f"Dune execution {status.execution_id} finished with a partial (truncated) result; "
                "set allow_partial_results=True to accept it"
            )
        result = hook.get_results(status.execution_id, max_rows=self.max_rows, allow_partial=partial)
        if result["truncated"]:
            self.log.warning(
                "Returning %d of %s rows (max_rows=%s): raise max_rows, or read the rest from Dune "
                "with execution id %s", result["row_count"], result["total_row_count"], self.max_rows,
                status.execution_id,
            )
        else:
            self.log.info("Returning %d rows", result["row_count"])
        return {"execution_id": status.execution_id, "state": status.vendor_status, **result}


class DuneExecutionSensor(ExecutionSensor):
    """Wait for a Dune execution started elsewhere, by its execution id. Never cancels it."""

    hook_class = DuneHook


DUNE_QUERY_FACET_KEY = "duneQuery"


@functools.cache
def _dune_query_facet_class() -> type:
    """OpenLineage job facet of a Dune task, built on first use (it subclasses OpenLineage's, which is imported
    only when OpenLineage asks for lineage)."""
    from attrs import define, field
    from openlineage.client.facet_v2 import JobFacet

    from airflow_provider_cancel.core.lineage import SCHEMA_BASE

    @define
    class DuneQueryJobFacet(JobFacet):  # type: ignore[misc]
        """What a Dune task runs: a saved query (``queryId``) or raw SQL (``queryId`` null), and its parameters."""

        queryId: int | None
        parameters: dict[str, Any] = field(factory=dict)
        performance: str | None = field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}#dunequeryjobfacet"

    return DuneQueryJobFacet
