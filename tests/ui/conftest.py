"""The Airflow 3.3 UI in a real headless Chromium: one Airflow stack, one emulator, one browser per session.

The browser is Debian's ``chromium`` (scripts/install-browser.sh) driven by Playwright: Playwright's own browser
download needs the internet. Every test leaves a screenshot in artifacts/ui/ (``<test>.png``, or
``<test>-FAILED.png`` when it failed), besides the named ones the tests take on the way.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

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
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test itself failed, for the name of its last screenshot."""
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


def shot_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


@pytest.fixture
def page(browser: Browser, stack: AirflowStack, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)

    # Nothing leaves the machine: the vendors' pages an extra link opens are answered by a stub here.
    def stub(route: Route) -> None:
        route.fulfill(content_type="text/html", body=f"<h1>stub of {html.escape(route.request.url)}</h1>")

    context.route(lambda url: not url.startswith(stack.base_url), stub)
    ui_page = context.new_page()
    try:
        yield ui_page
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        suffix = "-FAILED" if request.node.stash.get(_FAILED, True) else ""
        for n, opened in enumerate(context.pages):  # the test's page, then any page it opened (an extra link)
            extra = f"-{n}" if n else ""
            with contextlib.suppress(PlaywrightError):  # a crashed page must not hide the test's own outcome
                opened.screenshot(path=SHOTS / f"{shot_name(request.node.name)}{extra}{suffix}.png", full_page=True)
        context.close()


def screenshot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{shot_name(name)}.png", full_page=True)
