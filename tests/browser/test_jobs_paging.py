"""The Jobs page pages through the API's cursor: older and newest walk every job of a
filtered list once, in order, whatever the page size."""

from __future__ import annotations

from dashboard import open_page
from playwright.sync_api import Page, expect

from conftest import System

COUNT = 120  # more than two pages of the dashboard's (it shows 50)


def test_older_and_newest_page_through_the_cursor(system: System, page: Page) -> None:
    # Waiting jobs of a runtime this system has no worker for: they stay as they are.
    job = {"type": "training", "model_type": "vgg", "data_path": "/data/cifar10",
           "framework_override": "pytorch-2.0", "description": "browser: paging"}  # fmt: skip
    main = open_page(page, system.base_url, "jobs")
    main.locator('select[name="runtime"]').select_option("pytorch-2.0")
    runtimes = main.locator('tr[data-job-id] [data-field="runtime"]')
    expect(runtimes.filter(has_not_text="pytorch-2.0")).to_have_count(0)  # filtered
    reply = system.http.post("/jobs/batch", json={"jobs": [job] * COUNT})
    assert reply.status_code == 200, reply.text
    mine = [r["job"]["job_id"] for r in reply.json()["results"]]
    assert len(set(mine)) == COUNT
    try:
        rows = main.locator("tr[data-job-id]")
        # The filtered list, refetched live when the new jobs were announced.
        expect(rows.first).to_have_attribute("data-job-id", mine[-1])  # newest first
        expect(runtimes.filter(has_not_text="pytorch-2.0")).to_have_count(0)
        pages: list[list[str]] = []
        older = main.locator('button[data-action="next-page"]')
        while True:
            ids = [r.get_attribute("data-job-id") or "" for r in rows.all()]
            pages.append(ids)
            if older.is_disabled() or len(pages) > 10:
                break
            older.click()
            expect(rows.first).not_to_have_attribute("data-job-id", ids[0])
        seen = [job_id for ids in pages for job_id in ids]
        assert len(pages) >= 3, [len(p) for p in pages]
        assert len(seen) == len(set(seen)), "a job shown on two pages"
        assert [j for j in seen if j in set(mine)] == mine[::-1]  # all of them, newest first

        main.locator('button[data-action="first-page"]').click()
        expect(rows.first).to_have_attribute("data-job-id", pages[0][0])
        assert [r.get_attribute("data-job-id") for r in rows.all()] == pages[0]
    finally:
        for job_id in mine:
            system.http.post(f"/jobs/{job_id}/cancel")
