"""With API keys on, the dashboard asks for a key once, then loads its data (the live
stream included) with it, and never puts the key in the page."""

from __future__ import annotations

from dashboard import TABULAR
from playwright.sync_api import Page, expect

from conftest import API_KEY, System


def test_key_prompt_then_data_and_the_key_is_never_shown(keyed_system: System, page: Page) -> None:
    assert keyed_system.http.get("/jobs", headers={"Authorization": ""}).status_code == 401
    first = keyed_system.http.post("/jobs/training", json=TABULAR).json()["job_id"]

    page.goto(keyed_system.ui("jobs"))
    prompt = page.locator('form[data-form="api-key"]')
    expect(prompt).to_be_visible()
    key_input = prompt.locator('input[name="api_key"][type="password"]')
    key_input.fill(API_KEY)
    key_input.press("Enter")

    main = page.locator('main[data-page="jobs"]')
    expect(main).to_have_attribute("data-ready", "1")
    expect(main.locator(f'tr[data-job-id="{first}"]')).to_be_visible()
    expect(prompt).to_have_count(0)
    # The live stream carries the key too: a job submitted now appears without a reload.
    second = keyed_system.http.post("/jobs/training", json=TABULAR).json()["job_id"]
    expect(main.locator(f'tr[data-job-id="{second}"]')).to_be_visible()

    assert API_KEY not in page.content()
    values = page.evaluate(
        "[...document.querySelectorAll('input, textarea, select')].map(e => e.value)"
    )
    assert not any(API_KEY in v for v in values)
    # Another page of the app: still no prompt, still no key.
    page.locator('a[data-nav="workers"]').click()
    expect(page.locator('main[data-page="workers"]')).to_have_attribute("data-ready", "1")
    expect(prompt).to_have_count(0)
    assert API_KEY not in page.content()
