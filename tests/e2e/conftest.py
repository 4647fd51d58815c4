"""One real Airflow 3.3 stack and one emulator for the whole end-to-end session."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorClient, EmulatorProcess
from airflow_provider_cancel.registry import CONN_TYPES

from .airflow_stack import AirflowStack
from .topology import CELERY, STANDALONE

DAGS = Path(__file__).parent / "dags"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
E2E_KEY = "sk-E2E-SECRET-5d1c9b"
# The orphan sweep (airflow_provider_cancel.orphans) runs in the stack's scheduler for every e2e test; short
# settings so that N1-N5 (test_orphans.py) finish in minutes; the defaults are 30 s, 90 s and 300 s.
SWEEP_INTERVAL, SWEEP_GRACE, HEARTBEAT_TIMEOUT = 5, 15, 60
VENDORS = CONN_TYPES
# Which stack the session's tests run on: `standalone` (the K matrix of the README) or `celery` (CeleryExecutor,
# two workers, triggerers and schedulers: the second matrix and the D rows). The same tests serve both.
TOPOLOGY = {"standalone": STANDALONE, "celery": CELERY}[os.environ.get("E2E_TOPOLOGY", "standalone")]


@pytest.fixture(scope="session")
def e2e_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--api-key", E2E_KEY) as process:
        yield process


@pytest.fixture(scope="session")
def emu_client(e2e_emulator: EmulatorProcess) -> Iterator[EmulatorClient]:
    with e2e_emulator.client() as client:
        yield client


@pytest.fixture(scope="session")
def stack(e2e_emulator: EmulatorProcess) -> Iterator[AirflowStack]:
    env = {
        f"AIRFLOW_CONN_{vendor.upper()}_DEFAULT": json.dumps(
            {"conn_type": vendor, "host": e2e_emulator.base_url(vendor), "password": E2E_KEY}
        )
        for vendor in VENDORS
    }
    env["AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL"] = "2"  # K8's backstop fires within 2 s, not 15
    env["AIRFLOW__PROVIDER_CANCEL__ORPHAN_SWEEP_INTERVAL"] = str(SWEEP_INTERVAL)
    env["AIRFLOW__PROVIDER_CANCEL__ORPHAN_SWEEP_GRACE"] = str(SWEEP_GRACE)
    env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(HEARTBEAT_TIMEOUT)
    env["E2E_CALLBACK_MARKERS"] = tempfile.mkdtemp(prefix="e2e-callbacks-")  # N2: the user's own callback
    with AirflowStack(DAGS, env=env, parallelism=32, topology=TOPOLOGY) as airflow:
        yield airflow


class Matrix:
    """Rows of the kill-path matrix, written to artifacts/ at the end of the session (README shows it)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row: object) -> None:
        self.rows.append(row)

    def write(self) -> None:
        if not self.rows:
            return
        ARTIFACTS.mkdir(exist_ok=True)
        name = "e2e-matrix" if TOPOLOGY is STANDALONE else f"e2e-matrix-{TOPOLOGY.name}"
        (ARTIFACTS / f"{name}.json").write_text(json.dumps(self.rows, indent=1, default=str))
        (ARTIFACTS / f"{name}.md").write_text(self.pivot() + "\n" + self.detail())

    @staticmethod
    def _order(row: dict) -> tuple:
        path = str(row["path"])  # K rows (kill paths), then N (deaths no provider code sees), then D (distributed)
        family = {"K": 0, "N": 1, "D": 2}.get(path[:1], 3)
        return family, int(path[1:]) if path[1:].isdigit() else 99, str(row["mode"]), str(row["vendor"])

    def pivot(self) -> str:
        """One line per kill path and mode, one column per vendor: result, cancels, kill -> cancel seconds."""
        vendors = [v for v in VENDORS if any(r["vendor"] == v for r in self.rows)]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in sorted(self.rows, key=self._order):
            latency = "" if r.get("latency") is None else f", {r['latency']:.1f} s"
            cell = f"{r['result']}: {r['cancels']} cancel{'s' if r['cancels'] != 1 else ''}{latency}"
            cells.setdefault((str(r["path"]), str(r["mode"])), {})[str(r["vendor"])] = cell
        lines = ["| path | mode | " + " | ".join(vendors) + " |", "|---|---|" + "---|" * len(vendors)]
        for (path, mode), by_vendor in cells.items():
            lines.append(f"| {path} | {mode} | " + " | ".join(by_vendor.get(v, "") for v in vendors) + " |")
        return "\n".join(lines) + "\n"

    def detail(self) -> str:
        lines = [
            "| path | vendor | mode | result | cancels | final state | kill → cancel (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(self.rows, key=self._order):
            latency = "" if r.get("latency") is None else f"{r['latency']:.1f}"
            lines.append(
                f"| {r['path']} | {r['vendor']} | {r['mode']} | {r['result']} | {r['cancels']} | {r['state']} | "
                f"{latency} |"
            )
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def matrix() -> Iterator[Matrix]:
    table = Matrix()
    yield table
    table.write()


def now() -> float:
    return time.time()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the kill-path tests vendor by vendor (one DAG run at a time), keeping the order within a vendor."""

    def vendor_rank(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        vendor = callspec.params.get("vendor") if callspec else None
        return VENDORS.index(vendor) if vendor in VENDORS else -1

    items.sort(key=vendor_rank)
