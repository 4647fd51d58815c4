"""get_provider_info: valid for Airflow's own schema, complete, and in step with the registry and the sweep."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path

import airflow
import jsonschema

import airflow_provider_cancel
from airflow_provider_cancel.get_provider_info import get_provider_info
from airflow_provider_cancel.orphans import SweepSettings
from airflow_provider_cancel.registry import VENDORS

ROOT = Path(__file__).resolve().parents[2]
INFO = get_provider_info()


def test_valid_against_airflows_provider_info_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(INFO, schema)


def test_version_is_the_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert INFO["versions"] == [project["version"]] == [airflow_provider_cancel.__version__]


def test_every_declared_module_and_class_imports() -> None:
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in INFO[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for path in [*INFO["extra-links"], *(c["hook-class-name"] for c in INFO["connection-types"]),
                 *(p["plugin-class"] for p in INFO["plugins"])]:
        module, _, name = path.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type), path


def test_every_vendor_is_an_integration_with_its_hook_operator_sensor_and_connection() -> None:
    integrations = {i["integration-name"] for i in INFO["integrations"]}
    for vendor in VENDORS:
        assert vendor.display_name in integrations
        for kind in ("hooks", "operators", "sensors"):
            assert {"integration-name": vendor.display_name, "python-modules": [vendor.module]} in INFO[kind]
        module = importlib.import_module(vendor.module)
        for name in (vendor.hook, vendor.operator, vendor.sensor):
            assert hasattr(module, name)
    for kind in ("hooks", "operators", "sensors", "triggers"):
        assert {e["integration-name"] for e in INFO[kind]} <= integrations
    assert [c["connection-type"] for c in INFO["connection-types"]] == [v.conn_type for v in VENDORS]
    assert {p for v in VENDORS for p in v.link_paths} == set(INFO["extra-links"])


def test_config_defaults_are_the_sweeps() -> None:
    options = INFO["config"]["provider_cancel"]["options"]
    defaults = SweepSettings()
    assert options["orphan_sweep"]["default"] == str(defaults.enabled)
    assert float(options["orphan_sweep_interval"]["default"]) == defaults.interval
    assert float(options["orphan_sweep_grace"]["default"]) == defaults.grace
    assert float(options["orphan_sweep_horizon"]["default"]) == defaults.horizon
    assert set(options) == {"orphan_sweep", "orphan_sweep_interval", "orphan_sweep_grace", "orphan_sweep_horizon"}
