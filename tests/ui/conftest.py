"""The Airflow 3.3 UI in a real headless Chromium: one Airflow stack, one emulator, one browser per session.

The browser is Debian's ``chromium`` (scripts/install-browser.sh) driven by Playwright: Playwright's own browser
download needs the internet. Every test leaves a screenshot in artifacts/ui/ (``<test>.png``, or
``<test>-FAILED.png`` when it failed), besides the named ones the tests take on the way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_cancel.emulator.testing import EmulatorProcess
from tests.e2e.airflow_stack import AirflowStack

DAGS = Path(__file__).parent / "dags"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
UI_KEY = "sk-UI-SECRET-7e21c4"
WAIT_MS = 60_000  # generous: two cores shared with a scheduler, a dag-processor and other agents' stacks


@pytest.fixture(scope="session")
def ui_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--api-key", UI_KEY) as process:
        yield process


@pytest.fixture(scope="session")
def stack(ui_emulator: EmulatorProcess) -> Iterator[AirflowStack]:
    env = {
        f"AIRFLOW_CONN_{vendor.upper()}_DEFAULT": json.dumps(
            {"conn_type": vendor, "host": ui_emulator.base_url(vendor), "password": UI_KEY}
        )
        for vendor in ("dune", "meibel", "b3os")  # the vendors of tests/ui/dags
    }
    env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"  # the Test button is disabled by default
    with AirflowStack(DAGS, env=env, parallelism=4) as airflow:
        yield airflow


def chromium_path() -> str:
    path = os.environ.get("UI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium on PATH: run scripts/install-browser.sh (Debian's chromium package)")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def shot_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


@pytest.fixture
def page(browser, stack: AirflowStack, request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    # Nothing leaves the machine: the vendors' pages an extra link opens are answered by a stub here.
    context.route(
        lambda url: not url.startswith(stack.base_url),
        lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>stub of an external page</h1>"),
    )
    ui_page = context.new_page()
    try:
        yield ui_page
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        suffix = "-FAILED" if request.node.stash.get(_FAILED, True) else ""
        for n, p in enumerate(context.pages):
            extra = f"-{n}" if n else ""
            p.screenshot(path=SHOTS / f"{shot_name(request.node.name)}{extra}{suffix}.png", full_page=True)
        context.close()


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{shot_name(name)}.png", full_page=True)
