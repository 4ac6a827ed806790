"""User-supplied text is rendered as text: a description holding markup shows the markup
literally, creates no element and runs no script."""

from __future__ import annotations

from dashboard import open_page, submit_training
from playwright.sync_api import Page, expect

from conftest import System, Watched

PAYLOAD = "<img src=x onerror=alert(1)>"


def test_markup_in_a_description_renders_as_text(
    system: System, page: Page, watched: Watched
) -> None:
    job_id = submit_training(system.http, description=PAYLOAD)
    main = open_page(page, system.base_url, f"jobs/{job_id}")
    description = main.locator('[data-field="description"]')
    expect(description).to_have_text(PAYLOAD)
    assert description.text_content() == PAYLOAD
    expect(description.locator("img")).to_have_count(0)
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    # Visible in the list too (its model or description cells may show it), still inert.
    open_page(page, system.base_url, "jobs")
    expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_be_visible()
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert watched.dialogs == []
