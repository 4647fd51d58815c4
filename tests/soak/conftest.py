"""One emulator for the soak tests, with `<vendor>_soak` connections pointing at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorProcess

from .driver import SOAK_KEY, connect

os.environ.setdefault("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")  # triggers run in-process, as in the tests


@pytest.fixture(scope="session")
def soak_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--api-key", SOAK_KEY, "--seed", "5") as process:
        connect(process)
        yield process
