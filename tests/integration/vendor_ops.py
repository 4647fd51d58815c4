"""The vendors as the shared tests drive them: one `Case` per vendor of the registry, and bctrl once more for its
second API generation. What a vendor's operator needs to run a scenario, and what its answers say, lives here;
`test_vendor_contract.py` runs the same lifecycle on every case. A sixth vendor adds one `Case`."""

from __future__ import annotations

import importlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_cancel.emulator.testing import RUNTIME_ID, SPACE_ID
from airflow_provider_cancel.registry import BY_CONN_TYPE, Vendor

from .conftest import VENDORS, FakeStore, FakeTI, make_context

BCTRL_STEPS = [
    {"call": "browser.goto", "args": ["https://shop.example.com"], "bind": "page1", "ref": "s1",
     "options": {"dryRun": False, "timeoutMs": 30000}},
    {"call": "browser.click", "args": ["#buy"], "options": {"timeoutMs": 5000}},
]
BCTRL_ACTION = {"action": "extract", "instruction": "Extract the order total."}


def meibel_spec(scenario: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "invoice-extraction",
        "agent": "agent-7d1c",
        "user_message": f"Extract the totals. emulate:{scenario}",
        "input": {"datasource_id": "ds-invoices", "filters": {"media_types": ["application/pdf"]}},
        "execution": {"concurrency": 4, "retry_limit": 1},
        **overrides,
    }


def _succeeded(key: str, value: Any, also: Callable[[Any, int], bool] = lambda result, rows: True) -> Any:
    def check(result: Any, rows: int = 5) -> None:
        assert isinstance(result, Mapping) and result.get(key) == value and also(result, rows), result

    return check


@dataclass(frozen=True)
class Case:
    """One vendor (bctrl: one API generation) against the session's emulator."""

    name: str  # the test id
    vendor: str  # the registry's conn_type, also the emulator's prefix and the journal's vendor
    args: Callable[[str], dict[str, Any]]  # operator arguments that make the emulator run a scenario
    check_success: Callable[..., None]  # (result, rows=5): the task's return value for a success says so
    idempotent_create: bool  # a create that failed ambiguously is retried without starting twice
    failure: tuple[str, str, str]  # a failing scenario, its status word, and a regex its error message starts with
    cancelled_remotely_says: tuple[str, ...] = ()  # beyond "cancelled outside this task"
    wrong_key_says: tuple[str, ...] = ()  # beyond HTTP 401
    bad_ids: tuple[str, ...] = ()  # malformed ids of this vendor's own shape
    extra: Mapping[str, Any] = field(default_factory=dict)  # connection extras beyond the emulator's

    def __str__(self) -> str:
        return self.name

    @property
    def entry(self) -> Vendor:
        return BY_CONN_TYPE[self.vendor]

    def _class(self, name: str) -> Any:
        return getattr(importlib.import_module(self.entry.module), name)

    @property
    def hook_class(self) -> Any:
        return self._class(self.entry.hook)

    @property
    def sensor_class(self) -> Any:
        return self._class(self.entry.sensor)

    def conn_id(self, *, bad_key: bool = False) -> str:
        """The emulator's connection for this case (conftest makes `<vendor>_emu` and `<vendor>_badkey`)."""
        suffix = "badkey" if bad_key else "emu"
        if not self.extra:
            return f"{self.vendor}_{suffix}"
        conn_id = f"{self.name.replace('-', '_')}_{suffix}"
        base = json.loads(os.environ[f"AIRFLOW_CONN_{self.vendor.upper()}_{suffix.upper()}"])
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({**base, "extra": dict(self.extra)})
        return conn_id

    def hook(self, *, bad_key: bool = False) -> Any:
        return self.hook_class(self.conn_id(bad_key=bad_key))

    def operator(self, scenario: str = "succeed:2", **kw: Any) -> Any:
        """The vendor's run operator against the emulator, polling fast, waiting in the worker unless told."""
        kw.setdefault("poll_interval", 0.05)
        kw.setdefault("max_poll_interval", 0.2)
        kw.setdefault("deferrable", False)
        kw.setdefault("task_id", f"{self.vendor}-{uuid.uuid4().hex[:8]}")
        kw.setdefault("conn_id", self.conn_id())
        return self._class(self.entry.operator)(**{**self.args(scenario), **kw})

    def start(self, scenario: str) -> str:
        """Start an execution as another task would, and return its id."""
        task = self.operator(scenario, wait_for_completion=False)
        return str(task.execute(make_context(FakeTI(task.task_id), FakeStore())))


ALL_CASES: tuple[Case, ...] = (
    Case(
        "dune", "dune",
        args=lambda scenario: {"sql": f"SELECT 1 -- emulate:{scenario}"},
        check_success=_succeeded("state", "QUERY_STATE_COMPLETED",
                                 lambda r, rows: r["row_count"] == len(r["rows"]) == rows and not r["truncated"]),
        idempotent_create=False,
        failure=("fail:2", "QUERY_STATE_FAILED", r"FAILED_TYPE_EXECUTION_FAILED: line 1:8: .*\(line 1, column 8\)"),
        bad_ids=("01HKZJ2683PHF9Q9PHHQ8FW4Q1/x", "a b", "é" * 26),
    ),
    Case(
        "izieroma", "izieroma",
        args=lambda scenario: {"goal": f"Summarise the week emulate:{scenario}"},
        check_success=_succeeded("status", "completed",
                                 lambda r, rows: r["result"].startswith("Emulated ROMA answer to: Summarise the week")),
        idempotent_create=True,
        failure=("fail:2", "failed", r"execution_error: Task execution failed.*emulated failure"),
        cancelled_remotely_says=("cancelled outside this task (cancelled)",),
        wrong_key_says=("unauthorized", "Invalid or revoked API key"),
        bad_ids=("exec_abc", "exec_1a2b3c4d5e6f/x", "exec_1a2b3c4d 5e6f", "exec_" + "a" * 33,
                 "12345678-1234-1234-1234-12345678901g"),
    ),
    Case(
        "bctrl", "bctrl",
        args=lambda scenario: {"space_id": SPACE_ID, "runtime_id": RUNTIME_ID, "steps": BCTRL_STEPS,
                               "metadata": {"emulate": scenario}},
        check_success=_succeeded("ok", True, lambda r, rows: (r["mode"], r["runtimeId"]) == ("fail-fast", RUNTIME_ID)
                                 and [(s["call"], s["ok"]) for s in r["steps"]] == [("browser.goto", True),
                                                                                   ("browser.click", True)]),
        idempotent_create=True,
        failure=("fail:2", "failed", r"invocation\.failed: Step 2 of 2 \(browser\.click\) failed: TIMEOUT.*"
                                     r"steps\[1\] browser\.click failed: TIMEOUT.*hint: Check"),
        cancelled_remotely_says=("invocation.cancelled: Invocation was cancelled by another client",),
        wrong_key_says=("auth.required",),
        bad_ids=("3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f/x", "not a uuid", "3f2b6c1e8a4d4c2b9e7f1a2b3c4d5e6f"),
    ),
    Case(
        "bctrl-gen2", "bctrl",
        args=lambda scenario: {"runtime_id": RUNTIME_ID, "action": BCTRL_ACTION, "metadata": {"emulate": scenario}},
        check_success=_succeeded("emulated", True, lambda r, rows: r["action"] == "extract"),
        idempotent_create=True,
        failure=("fail:2", "failed", r"invocation\.failed: extract failed: TIMEOUT.*hint: Check"),
        cancelled_remotely_says=("invocation.cancelled: Invocation was cancelled by another client",),
        wrong_key_says=("auth.required",),
        bad_ids=("3f2b6c1e-8a4d-4c2b-9e7f-1a2b3c4d5e6f/x", "not a uuid"),
        extra={"api_generation": "2"},
    ),
    Case(
        "meibel", "meibel",
        args=lambda scenario: {"batch_spec": meibel_spec(scenario)},
        check_success=_succeeded("status", "completed", lambda r, rows: r["total_items"] == len(r["items"]) == rows),
        idempotent_create=False,
        failure=("fail:2,rows=4", "failed", r"Batch workflow failed: .*exhausted their retries.*"
                                             r"1 of 4 items failed: document-0004\.pdf"),
        cancelled_remotely_says=("cancelled outside this task (cancelled)", "Meibel console"),
        wrong_key_says=("Meibel-API-Key",),
        bad_ids=("3f2b8c1e/x", "a b", "é" * 8, "-x", "a.b"),
    ),
    Case(
        "b3os", "b3os",
        args=lambda scenario: {"workflow_id": "wf_prices", "payload": {"emulate": scenario}},
        check_success=_succeeded("status", "success", lambda r, rows: {"root", "fetch_price", "notify"} <= set(
            r["outputs"])),
        idempotent_create=True,
        failure=("fail:2", "failure", r".*node 'notify' \(log\) failed.*insufficient funds for gas"),
        wrong_key_says=("API key",),
        bad_ids=("run_", "run_x/../y", "run_a b", "run_" + "é" * 5, "01HKZJ2683PHF9Q9PHHQ8FW4Q1"),
    ),
)
# The cases of the vendors this run covers (TEST_VENDORS: scripts/test-versions.sh runs one per extra line).
CASES = tuple(case for case in ALL_CASES if case.vendor in VENDORS)
BY_NAME = {case.name: case for case in ALL_CASES}


def scenario_operator(vendor: str, scenario: str, **kw: Any) -> Any:
    """The vendor's run operator (its registry name; bctrl: generation 1) running `scenario` on the emulator."""
    return BY_NAME[vendor].operator(scenario, **kw)
