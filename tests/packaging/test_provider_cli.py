"""`airflow providers list|get|hooks|triggers|links|configs`, `airflow config get-value` and `airflow plugins`,
the real CLI in a subprocess with a throwaway AIRFLOW_HOME and SQLite: everything get_provider_info declares
shows, under this package's name and version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_cancel
from airflow_provider_cancel.get_provider_info import PACKAGE_NAME, get_provider_info
from airflow_provider_cancel.registry import VENDORS

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
INFO = get_provider_info()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


def cli(env: dict[str, str], *args: str) -> str:
    run = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"airflow {' '.join(args)} exited {run.returncode}:\n{run.stderr[-3000:]}"
    return run.stdout


def cli_json(env: dict[str, str], *args: str) -> Any:
    """The command's JSON answer: its last line that parses (3.0-3.1 print log lines to stdout before it)."""
    out = cli(env, *args, "--output", "json")
    for line in reversed(out.splitlines()):
        if line.startswith(("[", "{")) and not line.startswith("[20"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON in the output of airflow {' '.join(args)}:\n{out[-3000:]}")


def ours(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("package_name") == PACKAGE_NAME]


def test_providers_list_shows_the_package_and_its_version(airflow_env: dict[str, str]) -> None:
    rows = ours(cli_json(airflow_env, "providers", "list"))
    assert [row["version"] for row in rows] == [airflow_provider_cancel.__version__]
    assert rows[0]["description"].startswith("Start, wait for and fetch remote executions")


def test_providers_get_full_is_the_whole_provider_info(airflow_env: dict[str, str]) -> None:
    (shown,) = cli_json(airflow_env, "providers", "get", PACKAGE_NAME, "--full")
    for key in ("versions", "integrations", "hooks", "operators", "sensors", "triggers", "extra-links", "config",
                "plugins"):
        assert shown[key] == json.loads(json.dumps(INFO[key])), key
    # Airflow fills in the forms' defaults as it reads them: compare what names the connection types
    assert [(c["connection-type"], c["hook-class-name"], c["hook-name"]) for c in shown["connection-types"]] == [
        (v.conn_type, v.hook_path, v.display_name) for v in VENDORS
    ]


def test_providers_hooks_shows_every_connection_type(airflow_env: dict[str, str]) -> None:
    rows = {row["connection_type"]: row for row in ours(cli_json(airflow_env, "providers", "hooks"))}
    assert set(rows) == {vendor.conn_type for vendor in VENDORS}
    for vendor in VENDORS:
        assert rows[vendor.conn_type]["class"] == vendor.hook_path
        assert rows[vendor.conn_type]["hook_name"] == vendor.display_name


def test_providers_triggers_shows_the_trigger(airflow_env: dict[str, str]) -> None:
    rows = ours(cli_json(airflow_env, "providers", "triggers"))
    assert {row["class"] for row in rows} == {"airflow_provider_cancel.core.trigger"}


def test_providers_links_shows_every_extra_link(airflow_env: dict[str, str]) -> None:
    shown = {row["extra_link_class_name"] for row in cli_json(airflow_env, "providers", "links")}
    expected = {path for vendor in VENDORS for path in vendor.link_paths}
    assert expected and expected <= shown


def test_config_section_is_registered_with_its_defaults(airflow_env: dict[str, str]) -> None:
    configs = [row["provider_config"] for row in cli_json(airflow_env, "providers", "configs")]
    assert [section for name, section in configs if name == PACKAGE_NAME] == [INFO["config"]]
    assert cli(airflow_env, "config", "get-value", "provider_cancel", "orphan_sweep_grace").splitlines()[-1] == "90.0"
    assert cli(airflow_env, "config", "get-value", "provider_cancel", "orphan_sweep").splitlines()[-1] == "True"


def test_plugins_shows_the_sweep_listener(airflow_env: dict[str, str]) -> None:
    plugins = {row["name"]: row for row in cli_json(airflow_env, "plugins")}
    assert plugins["airflow_provider_cancel"]["listeners"] == ["airflow_provider_cancel.orphans._Listener"]
