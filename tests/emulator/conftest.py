"""One emulator process per test module, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from tests.emulator.helpers import KEY


@pytest.fixture(scope="module")
def emulator_args() -> list[str]:
    """Override in a module to start its emulator with other command-line arguments."""
    return []


@pytest.fixture(scope="module")
def emulator(emulator_args: list[str]) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(*emulator_args) as process:
        yield process


@pytest.fixture
def control(emulator: EmulatorProcess) -> Iterator[EmulatorClient]:
    with emulator.client() as client:
        client.reset()
        yield client


@pytest.fixture
def dune(emulator: EmulatorProcess, control: EmulatorClient) -> Iterator[httpx.Client]:
    """A Dune API client on the emulator (depends on `control` so the emulator is reset first)."""
    with httpx.Client(base_url=emulator.base_url("dune"), headers={"X-Dune-Api-Key": KEY}, timeout=10) as client:
        yield client
