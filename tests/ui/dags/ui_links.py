"""Three tasks whose operators have an extra link (Dune, Meibel, B3OS), each succeeding against the emulator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_provider_cancel.vendors.b3os import B3osRunWorkflowOperator
from airflow_provider_cancel.vendors.dune import DuneRunQueryOperator
from airflow_provider_cancel.vendors.meibel import MeibelRunBatchOperator

FAST: dict[str, Any] = {"poll_interval": 1, "max_poll_interval": 2, "retries": 0}

with DAG("ui_links", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["ui"]):
    # a saved query (not raw SQL): only a saved query has a page on dune.com
    DuneRunQueryOperator(task_id="dune", query_id=4242, query_parameters={"emulate": "succeed:1"}, **FAST)
    MeibelRunBatchOperator(
        task_id="meibel",
        batch_spec={
            "name": "ui-links", "agent": "agent-ui", "input": {"datasource_id": "ds-ui"}, "emulate": "succeed:1"
        },
        **FAST,
    )
    B3osRunWorkflowOperator(task_id="b3os", workflow_id="wf_ui_links", payload={"emulate": "succeed:1"}, **FAST)
