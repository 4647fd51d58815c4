"""OpenLineage for every operator of this provider, the way the official providers report it.

`apache-airflow-providers-openlineage` calls an operator's ``get_openlineage_facets_on_complete(task_instance)``
when its task succeeds and ``get_openlineage_facets_on_failure(task_instance)`` when it fails; both return an
``OperatorLineage``. Ours carries, for every vendor:

- run facet ``remoteExecution`` (`RemoteExecutionRunFacet`): ``vendor`` (the connection type), ``vendorName``,
  ``executionId``, ``executionUrl`` (the vendor's page for it, where it has one) and ``connectionId``;
- run facet ``externalQuery`` (OpenLineage's ``ExternalQueryRunFacet``): ``externalQueryId`` is the execution id,
  ``source`` the vendor, as the official SQL providers report a query id;

and the job facets a vendor's operator adds (``lineage_job_facets``; Dune: ``sql`` and ``duneQuery``, in
vendors/dune.py). No connection secret is ever put in a facet: only the id, the page URL (which carries no
credentials) and what the DAG itself gave the operator.

Nothing here is imported at DAG parse: the operators import this module, and this module imports OpenLineage,
only inside the two methods, which only the OpenLineage listener calls (docs/lineage.md).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_cancel.core.operator import ExecutionOperator

log = logging.getLogger(__name__)

SCHEMA_BASE = "https://github.com/airflow-provider-cancel/airflow-provider-cancel/blob/main/docs/lineage.md"
RUN_FACET_KEY = "remoteExecution"
EXTERNAL_QUERY_FACET_KEY = "externalQuery"
SQL_JOB_FACET_KEY = "sql"


@functools.cache
def _run_facet_class() -> type:
    """The attrs facet class, built on first use (it subclasses OpenLineage's, so needs it importable)."""
    from attrs import define, field
    from openlineage.client.facet_v2 import RunFacet

    @define
    class RemoteExecutionRunFacet(RunFacet):  # type: ignore[misc]
        """The remote execution a task of this provider started (or adopted), at the vendor."""

        vendor: str
        vendorName: str
        executionId: str | None
        executionUrl: str | None = field(default=None)
        connectionId: str | None = field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}#remoteexecutionrunfacet"

    return RemoteExecutionRunFacet


def remote_execution_run_facet(**fields: Any) -> Any:
    return _run_facet_class()(**fields)


def _execution(operator: ExecutionOperator[Any]) -> tuple[str | None, str | None]:
    """The execution id the operator owns (a resumed deferred task owns it again from the trigger's event) and
    its page URL. Nothing here talks to Airflow or the vendor: the OpenLineage listener calls us in a forked
    process, where a call through the task's supervisor channel (XCom, connections) would hang it."""
    execution_id = operator.execution_id
    url: str | None = None
    if execution_id is not None:
        try:
            url = operator.hook.execution_url(execution_id, operator.link_info())
        except Exception:  # lineage must never fail a task
            log.debug("OpenLineage: no execution URL", exc_info=True)
    return execution_id, url


def operator_lineage(operator: ExecutionOperator[Any], task_instance: Any) -> Any:
    """The ``OperatorLineage`` of one finished task (succeeded or failed) of any operator of this provider."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.facet_v2 import external_query_run

    hook_class = operator.hook_class
    execution_id, url = _execution(operator)
    run_facets: dict[str, Any] = {
        RUN_FACET_KEY: remote_execution_run_facet(
            vendor=hook_class.conn_type, vendorName=hook_class.vendor, executionId=execution_id, executionUrl=url,
            connectionId=operator.conn_id,
        )
    }
    if execution_id is not None:
        run_facets[EXTERNAL_QUERY_FACET_KEY] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=execution_id, source=hook_class.conn_type
        )
    return OperatorLineage(run_facets=run_facets, job_facets=dict(operator.lineage_job_facets()))
