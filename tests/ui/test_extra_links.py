"""A finished task's extra link in the Airflow UI opens the remote execution's page (execution_url in XCom)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.airflow_stack import AirflowStack

from .conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.ui]

DAG_ID = "ui_links"
# task id -> (link name, the page the provider builds for that task of tests/ui/dags/ui_links.py)
LINKS = {
    "dune": ("Dune query", "https://dune.com/queries/4242"),
    "meibel": ("Meibel console", "https://console.meibel.ai"),
    "b3os": ("B3OS workflow", "https://b3os.org/workflows/wf_ui_links"),
}


@pytest.fixture(scope="module")
def finished_run(stack: AirflowStack) -> str:
    stack.wait_dag(DAG_ID)
    run_id = stack.trigger(DAG_ID)
    for task_id in LINKS:
        stack.wait_ti(DAG_ID, run_id, task_id, "success", timeout=180, fail_states={"failed", "upstream_failed"})
    return run_id


@pytest.mark.parametrize("task_id", list(LINKS))
def test_extra_link_opens_execution_page(page: Page, stack: AirflowStack, finished_run: str, task_id: str) -> None:
    name, expected = LINKS[task_id]
    assert stack.xcom(DAG_ID, finished_run, task_id, key="execution_url") == expected

    page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{finished_run}/tasks/{task_id}")
    page.get_by_role("link", name="Details", exact=True).click()
    expect(page.get_by_text("Extra Links", exact=True)).to_be_visible()
    link = page.get_by_role("link", name=name, exact=True)
    expect(link).to_have_attribute("href", expected)
    screenshot(page, f"extra-link-{task_id}")

    with page.expect_popup() as popup:
        link.click()
    opened = popup.value
    opened.wait_for_load_state()
    assert opened.url.rstrip("/") == expected.rstrip("/")
