"""The five connection forms show on every Airflow 3 line: from the provider info on 3.2+, from the hooks'
``get_ui_field_behaviour`` / ``get_connection_form_widgets`` on 3.0-3.1.

Read the way Airflow itself reads them, each in a fresh interpreter:
``ProvidersManager().field_behaviours`` / ``.connection_form_widgets`` (what every component registers), and
the UI's own ``HookMetaService.hook_meta_data()``, which the connection form in the browser is built from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_cancel.connections import CONNECTION_FORMS
from airflow_provider_cancel.registry import VENDORS
from airflow_provider_cancel.version_compat import AIRFLOW_V_3_2_PLUS

_PROBE = """
import json, sys

conn_types = json.loads(sys.argv[2])
if sys.argv[1] == "registered":  # what every Airflow component registers
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    print(json.dumps({
        "hooks": {ct: getattr(pm.hooks.get(ct), "hook_class_name", None) for ct in conn_types},
        "behaviours": {ct: pm.field_behaviours.get(ct) for ct in conn_types},
        "widgets": sorted(key for key in pm.connection_form_widgets if key.split("__")[1] in conn_types),
    }))
else:  # what the api-server hands the browser's connection form
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    print(json.dumps({
        meta.connection_type: {
            "standard": meta.standard_fields.model_dump(exclude_none=True) if meta.standard_fields else None,
            "extra": meta.extra_fields,
        }
        for meta in HookMetaService.hook_meta_data() if meta.connection_type in conn_types
    }, default=str))
"""


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-home")), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    conn_types = json.dumps([vendor.conn_type for vendor in VENDORS])
    seen = {}
    for mode in ("registered", "ui"):  # one fresh interpreter each: ProvidersManager is a process-wide singleton
        result = subprocess.run([sys.executable, "-c", _PROBE, mode, conn_types], env=env, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        seen[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.conn_type)
def test_every_component_registers_the_form(forms, vendor):
    conn_type, form = vendor.conn_type, CONNECTION_FORMS[vendor.conn_type]
    registered = forms["registered"]
    assert registered["hooks"][conn_type] == vendor.hook_path
    behaviour = registered["behaviours"][conn_type]
    assert behaviour is not None, f"no field behaviour registered for {conn_type}"
    assert sorted(behaviour["hidden_fields"]) == sorted(form["ui-field-behaviour"]["hidden-fields"])
    assert behaviour["relabeling"] == form["ui-field-behaviour"]["relabeling"]
    expected = sorted(f"extra__{conn_type}__{name}" for name in form["conn-fields"])
    assert [key for key in registered["widgets"] if key.startswith(f"extra__{conn_type}__")] == expected


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.conn_type)
def test_the_ui_shows_the_form(forms, vendor):
    conn_type, form = vendor.conn_type, CONNECTION_FORMS[vendor.conn_type]
    shown = forms["ui"][conn_type]
    assert shown["standard"]["password"]["title"] == form["ui-field-behaviour"]["relabeling"]["password"]
    assert shown["standard"]["host"]["placeholder"] == form["ui-field-behaviour"]["placeholders"]["host"]
    assert shown["standard"]["login"]["hidden"] is True
    extra = shown["extra"] or {}
    assert sorted(extra) == sorted(form["conn-fields"])
    for name, spec in form["conn-fields"].items():
        assert extra[name]["schema"]["title"] == spec["label"], (name, extra[name])
        assert extra[name]["value"] == spec["schema"].get("default"), (name, extra[name])


def test_before_3_2_the_form_comes_from_each_hook_class_itself():
    """Airflow 3.0-3.1 look for the form methods in the hook class's own ``__dict__``, not inherited ones."""
    import importlib

    for vendor in VENDORS:
        hook = getattr(importlib.import_module(vendor.module), vendor.hook)
        assert {"get_ui_field_behaviour", "get_connection_form_widgets"} <= set(hook.__dict__), vendor.hook
    if not AIRFLOW_V_3_2_PLUS:  # and that is where this Airflow reads it (3.2+ reads the provider info)
        from airflow import providers_manager

        source = Path(providers_manager.__file__).read_text()
        assert '"get_connection_form_widgets" in hook_class.__dict__' in source
        assert "conn-fields" not in source
