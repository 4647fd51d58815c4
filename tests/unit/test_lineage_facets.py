"""The facets every operator reports, serialised the way OpenLineage sends them."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("airflow.providers.openlineage")

from openlineage.client.serde import Serde

from airflow_provider_cancel.emulator.testing import operator_args
from airflow_provider_cancel.registry import VENDORS


class FakeTI:
    """Lineage reads nothing of the task instance: any call on it would go through the task's supervisor, which
    the OpenLineage listener's forked process must not use (it hangs there)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"lineage read task_instance.{name}")


def as_json(facets: dict[str, Any]) -> dict[str, Any]:
    return {key: json.loads(Serde.to_json(value)) for key, value in facets.items()}


def operator(vendor: Any, **extra: Any) -> Any:
    import importlib

    cls = getattr(importlib.import_module(vendor.module), vendor.operator)
    args = extra or operator_args(vendor.conn_type, "succeed:1", "t")
    return cls(task_id="t", **args)


@pytest.mark.parametrize("vendor", VENDORS, ids=[v.conn_type for v in VENDORS])
@pytest.mark.parametrize("method", ["get_openlineage_facets_on_complete", "get_openlineage_facets_on_failure"])
def test_run_facets_name_vendor_execution_and_page(vendor: Any, method: str) -> None:
    op = operator(vendor)
    op._guard.own("exec-42")
    lineage = getattr(op, method)(FakeTI())
    run = as_json(lineage.run_facets)
    facet = run["remoteExecution"]
    assert facet["vendor"] == vendor.conn_type
    assert facet["vendorName"] == op.hook_class.vendor
    assert facet["executionId"] == "exec-42"
    assert facet.get("executionUrl") == op.hook.execution_url("exec-42", op.link_info())
    assert facet["connectionId"] == f"{vendor.conn_type}_default"
    assert facet["_schemaURL"].endswith("#remoteexecutionrunfacet")
    assert run["externalQuery"]["externalQueryId"] == "exec-42"
    assert run["externalQuery"]["source"] == vendor.conn_type
    if vendor.conn_type != "dune":
        assert lineage.job_facets == {}


def test_a_dune_saved_query_has_its_page() -> None:
    from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

    op = DuneRunQueryOperator(task_id="t", query_id=77)
    op._guard.own("01HX")
    facet = as_json(op.get_openlineage_facets_on_complete(FakeTI()).run_facets)["remoteExecution"]
    assert facet["executionUrl"] == "https://dune.com/queries/77"


def test_no_execution_yet_gives_a_null_id_and_no_external_query() -> None:
    lineage = operator(VENDORS[0]).get_openlineage_facets_on_failure(FakeTI())
    assert as_json(lineage.run_facets)["remoteExecution"].get("executionId") is None
    assert "externalQuery" not in lineage.run_facets


def test_dune_sql_is_a_sql_job_facet() -> None:
    from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

    op = DuneRunQueryOperator(task_id="t", sql="SELECT number FROM ethereum.blocks LIMIT 1", performance="large")
    job = as_json(op.get_openlineage_facets_on_complete(FakeTI()).job_facets)
    assert job["sql"]["query"] == "SELECT number FROM ethereum.blocks LIMIT 1"
    assert job["sql"]["dialect"] == "dune"
    assert job["duneQuery"].get("queryId") is None  # Serde drops nulls
    assert job["duneQuery"]["performance"] == "large"


def test_dune_saved_query_gives_its_id_and_parameters() -> None:
    from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator

    op = DuneRunQueryOperator(task_id="t", query_id="1234", query_parameters={"min_block": 17, "chain": "eth"})
    job = as_json(op.get_openlineage_facets_on_complete(FakeTI()).job_facets)
    assert "sql" not in job
    assert job["duneQuery"]["queryId"] == 1234
    assert job["duneQuery"]["parameters"] == {"min_block": 17, "chain": "eth"}
