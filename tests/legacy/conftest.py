"""Airflow 3.0-3.2 triggerer tests. They run for real only in a venv with Airflow < 3.3 (scripts/test-versions.sh);
under Airflow >= 3.3 (the main suite) every test here is skipped.

Nothing in this file imports Airflow at module level: the version comes from package metadata, so that the
settings below are in the environment before Airflow reads its configuration (and never touch the main suite).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.version import Version


def _airflow_version() -> Version | None:
    try:
        return Version(version("apache-airflow-core"))
    except PackageNotFoundError:
        return None


AIRFLOW_VERSION = _airflow_version()
LEGACY = AIRFLOW_VERSION is not None and Version(AIRFLOW_VERSION.base_version) < Version("3.3.0")
SKIP_REASON = f"legacy triggerer tests need Airflow 3.0-3.2 (found {AIRFLOW_VERSION}); run scripts/test-versions.sh"

API_KEY = "sk-LEGACY-SECRET-41c2"
CONN_ID = "dune_legacy"

if LEGACY:
    _home = tempfile.mkdtemp(prefix="airflow-legacy-home-")
    atexit.register(shutil.rmtree, _home, True)
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "false"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "false"
    # A real key: the trigger's kwargs go through the same Fernet encrypt/decrypt as a Trigger row's.
    os.environ["AIRFLOW__CORE__FERNET_KEY"] = "UKRG2b7ONcy0y9L6y_VXkJXaQ4PHxmvBbfl-zV3UybM="
    # The greenback portal stays on, as in a real triggerer (the integration suite turns it off).
    os.environ.pop("AIRFLOW_DISABLE_GREENBACK_PORTAL", None)


@pytest.fixture(scope="session")
def emulator() -> Iterator:
    from airflow_provider_cancel.emulator.testing import EmulatorProcess

    with EmulatorProcess("--api-key", API_KEY) as process:
        conn = {"conn_type": "dune", "host": process.base_url("dune"), "password": API_KEY}
        # The trigger runner subprocess is forked from this process and inherits the connection.
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(conn)
        yield process


@pytest.fixture
def emu(emulator) -> Iterator:
    client = emulator.client()
    client.clear_faults()
    yield client
    client.close()
