"""The five connection forms as plain data: read by get_provider_info (Airflow 3.2+ builds the form from it
without importing a hook) and by the hooks' get_ui_field_behaviour (older Airflow). No imports on purpose."""

from __future__ import annotations

from typing import Any

_COMMON_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Read timeout (s)",
        "description": "Seconds to wait for each API response.",
        "schema": {"type": ["number", "null"], "default": 30},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "schema": {"type": ["number", "null"], "default": 10},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 429/502/503/504 and connection errors, with backoff and Retry-After.",
        "schema": {"type": ["integer", "null"], "default": 5},
    },
    "allow_insecure_http": {
        "label": "Allow plain http",
        "description": "Accept an http:// host that is not loopback (the API key would travel unencrypted).",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}


def _form(vendor: str, default_host: str, key_hint: str, extra_fields: dict[str, Any] | None = None) -> dict:
    return {
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL", "password": f"{vendor} API key"},
            "placeholders": {"host": f"{default_host} (default)", "password": key_hint},
        },
        "conn-fields": {**(extra_fields or {}), **_COMMON_FIELDS},
    }


CONNECTION_FORMS: dict[str, dict[str, Any]] = {
    "dune": _form("Dune", "https://api.dune.com", "Dune API key (sent as X-Dune-Api-Key)"),
    "izieroma": _form("ROMA", "https://api.izieroma.xyz", "sk_live_... (sent as X-API-Key)"),
    "bctrl": _form(
        "bctrl",
        "https://api.bctrl.ai",
        "bctrl_... (sent as Authorization: Bearer)",
        {
            "api_generation": {
                "label": "API generation",
                "description": "1: durable invocations of steps in a space (default). 2: runtime-scoped invocations "
                "of one action, as bctrl's published OpenAPI describes them.",
                "schema": {"type": ["string", "null"], "default": "1"},
            },
            "subaccount_id": {
                "label": "Subaccount id",
                "description": "Sent as BCTRL-Subaccount-Id, for organisation keys acting for a subaccount.",
                "schema": {"type": ["string", "null"]},
            },
        },
    ),
    "meibel": _form("Meibel", "https://api.meibel.ai/v2", "Meibel API key (sent as Meibel-API-Key)"),
    "b3os": _form(
        "B3OS",
        "https://api.b3os.org",
        "b3sk_... (sent as Authorization: Bearer)",
        {
            "org_id": {
                "label": "Organisation id",
                "description": "org_... sent as X-Org-ID, for endpoints that need an organisation context.",
                "schema": {"type": ["string", "null"]},
            }
        },
    ),
}
