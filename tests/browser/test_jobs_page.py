"""The Jobs page is live: a job submitted over HTTP appears and its state changes without
a reload; the filters and row links work."""

from __future__ import annotations

from dashboard import SLOWER_TABULAR_HP, open_page, record_rows, row_states, submit_training
from playwright.sync_api import Page, expect

from conftest import System


def test_new_job_appears_and_its_state_changes_live(system: System, page: Page) -> None:
    main = open_page(page, system.base_url, "jobs")
    page.evaluate("window.__same_document = true")  # gone if the page reloads
    record_rows(page)
    job_id = submit_training(
        system.http, hyperparameters=SLOWER_TABULAR_HP, description="browser: live list"
    )
    row = main.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    for name in ("state", "job_type", "runtime", "model", "progress", "age"):
        expect(row.locator(f'[data-field="{name}"]')).to_have_count(1)
    expect(row.locator('[data-field="runtime"]')).to_have_text("sklearn")
    expect(row.locator('[data-field="job_type"]')).to_contain_text("training")
    expect(row.locator('[data-field="state"]')).to_contain_text("succeeded", timeout=60_000)
    assert page.evaluate("window.__same_document === true"), "the page reloaded"
    seen = row_states(page, job_id)
    assert len(seen) >= 2 and seen[-1] == "succeeded", seen  # changed in place, live

    # The state filter, then the row's link to the job page.
    main.locator('select[name="state"]').select_option("succeeded")
    expect(row).to_be_visible()
    states = main.locator('tr[data-job-id] [data-field="state"]')
    expect(states.filter(has_not_text="succeeded")).to_have_count(0)
    row.locator(f'a[href="#/jobs/{job_id}"]').first.click()
    job = page.locator('main[data-page="job"]')
    expect(job).to_have_attribute("data-ready", "1")
    expect(job.locator('[data-field="state"]')).to_contain_text("succeeded")
