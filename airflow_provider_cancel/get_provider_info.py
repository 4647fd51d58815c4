"""Entry point read by Airflow's ProvidersManager: connection types, forms and extra links."""

from __future__ import annotations

from typing import Any

from airflow_provider_cancel.connections import CONNECTION_FORMS
from airflow_provider_cancel.registry import VENDORS


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-cancel",
        "name": "Cancel-on-kill remote executions",
        "description": "Start, wait for and fetch remote executions on Dune, izieroma (ROMA), bctrl, Meibel and "
        "B3OS, and cancel them whenever the Airflow task dies.",
        "connection-types": [
            {
                "connection-type": vendor.conn_type,
                "hook-name": vendor.display_name,
                "hook-class-name": vendor.hook_path,
                **CONNECTION_FORMS[vendor.conn_type],
            }
            for vendor in VENDORS
        ],
        "extra-links": [path for vendor in VENDORS for path in vendor.link_paths],
    }
