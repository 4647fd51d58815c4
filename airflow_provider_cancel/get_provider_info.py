"""Entry point read by Airflow's ProvidersManager: everything an official provider declares.

Integrations (one per vendor), hooks, operators, sensors, triggers, extra links, connection types with their
forms, the ``[provider_cancel]`` config section (the orphan sweep's settings, airflow_provider_cancel.orphans)
and the plugin that starts the sweep. Plain data built from the registry: reading it imports no vendor module.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_cancel import __version__
from airflow_provider_cancel.connections import CONNECTION_FORMS
from airflow_provider_cancel.registry import VENDORS

PACKAGE_NAME = "airflow-provider-cancel"
CORE_INTEGRATION = "Cancel-on-kill remote executions"


def _config() -> dict[str, Any]:
    """The ``[provider_cancel]`` section; the defaults are `orphans.SweepSettings`'s (a test keeps them equal)."""
    return {
        "provider_cancel": {
            "description": "The orphan sweep: every scheduler cancels recorded remote executions whose task "
            "instance finished with no try left to own them (a worker lost with no retry left, a deferred task "
            "killed before its trigger started, every cancel attempt failed). See docs/kill-paths.md.\n",
            "options": {
                "orphan_sweep": {
                    "description": "Run the orphan sweep in every scheduler (needs Airflow 3.3+ and its "
                    "task_state_store on the default metadata-database backend).\n",
                    "version_added": "0.2.0",
                    "type": "boolean",
                    "example": "False",
                    "default": "True",
                },
                "orphan_sweep_interval": {
                    "description": "Seconds between two rounds of the sweep.\n",
                    "version_added": "0.2.0",
                    "type": "float",
                    "example": "60",
                    "default": "30.0",
                },
                "orphan_sweep_grace": {
                    "description": "Seconds after a task instance finished before the sweep may cancel its "
                    "execution: the owner's own cancel (on_kill or the trigger's) lands within it.\n",
                    "version_added": "0.2.0",
                    "type": "float",
                    "example": "300",
                    "default": "90.0",
                },
                "orphan_sweep_horizon": {
                    "description": "How far back, in seconds, finished task instances are looked at "
                    "(default one day).\n",
                    "version_added": "0.2.0",
                    "type": "float",
                    "example": "604800",
                    "default": "86400.0",
                },
            },
        }
    }


def get_provider_info() -> dict[str, Any]:
    core_modules = ["airflow_provider_cancel.core.operator", "airflow_provider_cancel.cancel"]
    return {
        "package-name": PACKAGE_NAME,
        "name": "Cancel-on-kill remote executions",
        "description": "Start, wait for and fetch remote executions on Dune, izieroma (ROMA), bctrl, Meibel and "
        "B3OS, and cancel them whenever the Airflow task dies.",
        "state": "ready",
        "versions": [__version__],
        "integrations": [
            {"integration-name": CORE_INTEGRATION, "tags": ["software"]},
            *({"integration-name": vendor.display_name, "tags": ["service"]} for vendor in VENDORS),
        ],
        "hooks": [
            {"integration-name": CORE_INTEGRATION, "python-modules": ["airflow_provider_cancel.core.hook"]},
            *({"integration-name": vendor.display_name, "python-modules": [vendor.module]} for vendor in VENDORS),
        ],
        "operators": [
            {"integration-name": CORE_INTEGRATION, "python-modules": core_modules},
            *({"integration-name": vendor.display_name, "python-modules": [vendor.module]} for vendor in VENDORS),
        ],
        "sensors": [
            {"integration-name": CORE_INTEGRATION, "python-modules": ["airflow_provider_cancel.core.sensor"]},
            *({"integration-name": vendor.display_name, "python-modules": [vendor.module]} for vendor in VENDORS),
        ],
        "triggers": [
            # One trigger serves every vendor: it runs the vendor's hook on the async path.
            {"integration-name": CORE_INTEGRATION, "python-modules": ["airflow_provider_cancel.core.trigger"]},
        ],
        "extra-links": [path for vendor in VENDORS for path in vendor.link_paths],
        "connection-types": [
            {
                "connection-type": vendor.conn_type,
                "hook-name": vendor.display_name,
                "hook-class-name": vendor.hook_path,
                **CONNECTION_FORMS[vendor.conn_type],
            }
            for vendor in VENDORS
        ],
        "config": _config(),
        "plugins": [
            {"name": "airflow_provider_cancel", "plugin-class": "airflow_provider_cancel.plugin.CancelProviderPlugin"},
        ],
    }
