"""The fault soak's moving parts: fast-retrying hooks, one builder per vendor, and jobs that remember what happened.

Each job is one logical execution: one operator task with a unique tag in its create request, so the emulator's
records can be matched back to it (a second record with the same tag would be a duplicate start).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.http import ClientTimeouts, RetryPolicy
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.emulator.testing import EmulatorProcess
from airflow_provider_cancel.registry import CONN_TYPES
from airflow_provider_cancel.vendors.b3os import B3osHook, B3osRunWorkflowOperator
from airflow_provider_cancel.vendors.bctrl import BctrlHook, BctrlInvokeOperator
from airflow_provider_cancel.vendors.dune import DuneHook, DuneRunQueryOperator
from airflow_provider_cancel.vendors.izieroma import IzieromaHook, IzieromaRunOperator
from airflow_provider_cancel.vendors.meibel import MeibelHook, MeibelRunBatchOperator

SOAK_KEY = "sk-SOAK-SECRET-31e9a0"
VENDORS = CONN_TYPES
# A short read timeout so `slow` faults (SLOW_DELAY) really pass it; back-offs short enough for a 2-minute soak.
TIMEOUTS = ClientTimeouts(connect=2.0, read=1.0)
RETRY = RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=0.5, max_retry_after=2.0)
SLOW_DELAY = 1.5
DRIP_DELAY = 0.005  # seconds per byte: a status answer takes ~1-3 s, inside one attempt's limit (TIMEOUTS.attempt)


def _fast(hook: type[ExecutionHook]) -> type[ExecutionHook]:
    """The vendor's hook with the soak's timeouts and retry policy. Module-level, so a trigger can import it."""

    def __init__(self: ExecutionHook, conn_id: str | None = None, **kw: Any) -> None:
        kw.setdefault("timeouts", TIMEOUTS)
        kw.setdefault("retry", RETRY)
        hook.__init__(self, conn_id, **kw)

    name = f"Fast{hook.__name__}"
    fast = type(name, (hook,), {"__init__": __init__, "__module__": __name__, "__qualname__": name})
    globals()[name] = fast
    return fast


OPERATORS: dict[str, type[ExecutionOperator]] = {
    vendor: type(f"Soak{op.__name__}", (op,), {"hook_class": _fast(hook)})
    for vendor, hook, op in (
        ("dune", DuneHook, DuneRunQueryOperator),
        ("izieroma", IzieromaHook, IzieromaRunOperator),
        ("bctrl", BctrlHook, BctrlInvokeOperator),
        ("meibel", MeibelHook, MeibelRunBatchOperator),
        ("b3os", B3osHook, B3osRunWorkflowOperator),
    )
}


# Their creates carry a key, so an ambiguous one is retried.
IDEMPOTENT = frozenset(vendor for vendor, op in OPERATORS.items() if op.hook_class.idempotent_create)


def connect(emulator: EmulatorProcess, suffix: str = "soak") -> None:
    """Point `<vendor>_<suffix>` connections at the emulator (Airflow reads AIRFLOW_CONN_* at lookup)."""
    for vendor in VENDORS:
        conn = {"conn_type": vendor, "host": emulator.base_url(vendor), "password": SOAK_KEY}
        os.environ[f"AIRFLOW_CONN_{vendor.upper()}_{suffix.upper()}"] = json.dumps(conn)


@dataclass
class Job:
    """One logical execution and what became of it."""

    index: int
    vendor: str
    path: str  # "sync" (poll in the worker) or "async" (deferred to ExecutionTrigger)
    plan: str  # succeed | fail | remote_cancel | kill | deadline | restart
    scenario: str
    task: Any = None
    context: Any = None
    result: Any = None
    error: BaseException | None = None
    events: list[dict] = field(default_factory=list)
    killed: bool = False

    @property
    def tag(self) -> str:
        return f"soak-{self.index:05d}x"  # fixed width plus an end mark: no tag is a prefix of another


SCENARIOS = {
    "succeed": lambda rng: f"succeed:{rng.randint(1, 3)}",
    "fail": lambda rng: "fail:2",
    "remote_cancel": lambda rng: "remote_cancel:2",
    "kill": lambda rng: "forever",
    "deadline": lambda rng: "forever",
    "restart": lambda rng: "succeed@2s",
}


def plan_jobs(start: int, count: int, path: str, mix: dict[str, float], rng: random.Random) -> list[Job]:
    plans = list(mix)
    jobs = []
    for i in range(start, start + count):
        plan = rng.choices(plans, weights=[mix[p] for p in plans])[0]
        jobs.append(Job(i, VENDORS[i % len(VENDORS)], path, plan, SCENARIOS[plan](rng)))
    return jobs


def fault_rules(actions: dict[str, list[tuple[str, float]]]) -> list[dict[str, Any]]:
    """Emulator fault rules from {action: [(kind, probability)]}; `slow` and `drip` creates only where a retry is
    safe (an answer that comes too late for a create without an idempotency key leaves what it created unknown)."""
    rules: list[dict[str, Any]] = []
    for action, kinds in actions.items():
        for kind, probability in kinds:
            rule: dict[str, Any] = {"action": action, "kind": kind, "probability": probability}
            if kind == "429":
                rule["retry_after"] = 1 if probability < 0.02 else 0  # a few real 1 s waits, most immediate
            if kind == "slow":
                rule["delay"] = SLOW_DELAY
            if kind == "drip":
                rule["delay"] = DRIP_DELAY
            if kind in ("slow", "drip") and action == "create":
                rules += [{**rule, "vendor": vendor} for vendor in sorted(IDEMPOTENT)]
            else:
                rules.append(rule)
    return rules
