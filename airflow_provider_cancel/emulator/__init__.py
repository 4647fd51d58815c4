"""A local, faithful emulator of the vendor APIs, for tests, demos and users' own CI.

Run it with ``python -m airflow_provider_cancel.emulator`` (or ``airflow-provider-cancel-emulator``); drive it
from tests with :mod:`airflow_provider_cancel.emulator.testing`, which needs only httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_cancel.emulator.app import create_app
    from airflow_provider_cancel.emulator.engine import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing .testing does not pull in FastAPI.
    if name == "create_app":
        from airflow_provider_cancel.emulator.app import create_app

        return create_app
    if name == "EmulatorConfig":
        from airflow_provider_cancel.emulator.engine import EmulatorConfig

        return EmulatorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
