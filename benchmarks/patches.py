"""Apply a proposed core change in memory, so the benchmarks measure it without anyone editing core.

`apply()` patches a copy of the current `airflow_provider_cancel/core/http.py` with the diff in
`benchmarks/proposed/`, executes it as a separate module, and moves its functions onto the real module and
its `ApiClient` class (classes that exist in both stay the real ones). What gets measured is exactly the
diff applied to today's core; if the diff no longer applies, `apply()` says so instead of measuring
something else.

Also a pytest plugin, to run the project's own tests against the proposed core:

    PYTHONPATH=benchmarks python -m pytest -p patches tests/unit tests/integration
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, ROOT

DIFF = BENCH_DIR / "proposed" / "core-http-async-fast-path.diff"
TARGET = ROOT / "airflow_provider_cancel" / "core" / "http.py"
_applied = False


def patched_source() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "http.py"
        copy.write_text(TARGET.read_text())
        result = subprocess.run(
            ["patch", "--silent", "--force", "--no-backup-if-mismatch", "-r", "-", str(copy), str(DIFF)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{DIFF.name} no longer applies to {TARGET.relative_to(ROOT)} (core changed since): "
                f"{(result.stdout + result.stderr).strip()[:500]}"
            )
        return copy.read_text()


def apply() -> None:
    global _applied
    if _applied:
        return
    from airflow_provider_cancel.core import http

    proposed = types.ModuleType(http.__name__ + "_proposed")
    proposed.__file__ = str(TARGET)
    sys.modules[proposed.__name__] = proposed  # dataclasses look their module up while the class is built
    exec(compile(patched_source(), f"{TARGET} (+ {DIFF.name})", "exec"), proposed.__dict__)
    shared: dict[str, Any] = {}
    for name, value in vars(proposed).items():
        if inspect.isclass(value) and getattr(http, name, None) is not None and value.__module__ == proposed.__name__:
            shared[name] = getattr(http, name)  # keep the real classes: callers hold references to them
    for name, value in vars(proposed.ApiClient).items():
        if inspect.isfunction(value) or isinstance(value, property):
            setattr(http.ApiClient, name, value)
    vars(proposed).update(shared)
    for name, value in vars(proposed).items():
        if name.startswith("__") or name in shared:
            continue
        if inspect.isfunction(value) or not hasattr(http, name):
            setattr(http, name, value)
    _applied = True


def pytest_configure(config: Any) -> None:
    apply()
