"""Extra link to the vendor's page for the execution, filled as soon as the execution has started."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class ExecutionLink(BaseOperatorLink):
    name = "Remote execution"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        from airflow_provider_cancel.core.operator import XCOM_EXECUTION_URL

        return XCom.get_value(ti_key=ti_key, key=XCOM_EXECUTION_URL) or ""
