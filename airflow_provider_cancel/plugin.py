"""The provider's Airflow plugin: its only part is the orphan sweep's listener (airflow_provider_cancel.orphans),
which starts the sweep in each scheduler. Registered through the ``airflow.plugins`` entry point."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_cancel.orphans import LISTENER


class CancelProviderPlugin(AirflowPlugin):
    name = "airflow_provider_cancel"
    listeners = [LISTENER]
