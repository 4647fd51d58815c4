"""Every operator and sensor documents every argument, and that documentation reaches the Airflow UI: Airflow 3.3
shows a task's `doc_md` (from the serialized DAG), never its class docstring."""

from __future__ import annotations

import inspect
from datetime import datetime

import pytest
from airflow.sdk import DAG

from airflow_provider_cancel.core.docs import documented_params
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.vendors.b3os import B3osRunSensor, B3osRunWorkflowOperator
from airflow_provider_cancel.vendors.bctrl import BctrlInvocationSensor, BctrlInvokeOperator
from airflow_provider_cancel.vendors.dune import DuneExecutionSensor, DuneRunQueryOperator
from airflow_provider_cancel.vendors.izieroma import IzieromaExecutionSensor, IzieromaRunOperator
from airflow_provider_cancel.vendors.meibel import MeibelBatchExecutionSensor, MeibelRunBatchOperator
from tests.airflow_compat import DagSerialization

# One valid set of arguments per class: enough to build the task.
OPERATORS = {
    DuneRunQueryOperator: {"query_id": 1},
    IzieromaRunOperator: {"goal": "g"},
    BctrlInvokeOperator: {"space_id": "{{ params.s }}", "runtime_id": "{{ params.r }}", "steps": [{"call": "x"}]},
    MeibelRunBatchOperator: {"batch_definition_id": "def-1"},
    B3osRunWorkflowOperator: {"workflow_id": "wf_1"},
}
SENSORS = {
    DuneExecutionSensor: {"execution_id": "x"},
    IzieromaExecutionSensor: {"execution_id": "x"},
    BctrlInvocationSensor: {"execution_id": "x"},
    MeibelBatchExecutionSensor: {"execution_id": "x"},
    B3osRunSensor: {"execution_id": "x"},
}
TASKS = {**OPERATORS, **SENSORS}
BASES = (ExecutionOperator, ExecutionSensor)


def own_arguments(cls: type) -> set[str]:
    """The keyword arguments the provider's classes add, up to and including the provider's base class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            params = inspect.signature(klass.__dict__["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        if klass in BASES:
            return names
    raise AssertionError(f"{cls} is not a provider operator or sensor")


@pytest.mark.parametrize("cls", TASKS, ids=lambda c: c.__name__)
def test_the_docstring_documents_every_argument(cls):
    missing = own_arguments(cls) - documented_params(cls)
    assert not missing, f"{cls.__name__} docstring lacks :param: for {sorted(missing)}"
    assert cls.__doc__.count(":param conn_id:") == 1, "the shared arguments are appended once"


@pytest.mark.parametrize("cls", TASKS, ids=lambda c: c.__name__)
def test_the_serialized_task_carries_the_docstring_as_markdown(cls):
    with DAG(dag_id="docs", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
        cls(task_id="task", **TASKS[cls])
        cls(task_id="own_doc", doc_md="Our own words.", **TASKS[cls])
    tasks = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(dag)["dag"]["tasks"]}

    doc = tasks["task"]["doc_md"]
    assert doc.startswith(inspect.cleandoc(cls.__doc__).splitlines()[0].replace("``", "`"))
    assert "- **conn_id**:" in doc and ":param" not in doc and "``" not in doc
    assert tasks["own_doc"]["doc_md"] == "Our own words."
