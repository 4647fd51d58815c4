"""Entry point read by Airflow's ProvidersManager: connection types, forms and extra links."""

from __future__ import annotations

from typing import Any

from airflow_provider_cancel.connections import CONNECTION_FORMS

_HOOKS = {
    "dune": ("Dune", "airflow_provider_cancel.vendors.dune.DuneHook"),
    "izieroma": ("izieroma (ROMA API)", "airflow_provider_cancel.vendors.izieroma.IzieromaHook"),
    "bctrl": ("bctrl", "airflow_provider_cancel.vendors.bctrl.BctrlHook"),
    "meibel": ("Meibel", "airflow_provider_cancel.vendors.meibel.MeibelHook"),
    "b3os": ("B3OS", "airflow_provider_cancel.vendors.b3os.B3osHook"),
}
_LINKS = [
    "airflow_provider_cancel.vendors.dune.DuneQueryLink",
    "airflow_provider_cancel.vendors.meibel.MeibelConsoleLink",
    "airflow_provider_cancel.vendors.b3os.B3osWorkflowLink",
]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-cancel",
        "name": "Cancel-on-kill remote executions",
        "description": "Start, wait for and fetch remote executions on Dune, izieroma (ROMA), bctrl, Meibel and "
        "B3OS, and cancel them whenever the Airflow task dies.",
        "connection-types": [
            {"connection-type": conn_type, "hook-name": name, "hook-class-name": path, **CONNECTION_FORMS[conn_type]}
            for conn_type, (name, path) in _HOOKS.items()
        ],
        "extra-links": list(_LINKS),
    }
