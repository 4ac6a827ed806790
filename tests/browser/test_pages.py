"""Every page loads from the navigation, `/` leads to the dashboard, and nothing is
fetched from outside the backend (the dashboard works offline)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from dashboard import open_page
from playwright.sync_api import Page, Request, expect

from conftest import System

PAGES = ("jobs", "compare", "workers", "queues", "models", "submit")


def test_root_redirects_to_the_dashboard(system: System) -> None:
    reply = httpx.get(system.base_url + "/", follow_redirects=False)
    assert reply.status_code == 307 and reply.headers["location"].endswith("/ui/")


def test_every_page_loads_from_the_navigation_with_nothing_from_outside(
    system: System, page: Page
) -> None:
    hosts: set[str] = set()

    def on_request(request: Request) -> None:
        hosts.add(urlsplit(request.url).netloc)

    page.on("request", on_request)
    open_page(page, system.base_url, "jobs")
    for name in PAGES:
        page.locator(f'a[data-nav="{name}"]').click()
        expect(page.locator(f'main[data-page="{name}"]')).to_have_attribute("data-ready", "1")
    assert hosts <= {urlsplit(system.base_url).netloc}, hosts


def test_queues_page_shows_each_served_runtime(system: System, page: Page) -> None:
    main = open_page(page, system.base_url, "queues")
    for runtime in ("sklearn", "pytorch-2.1"):
        row = main.locator(f'tr[data-runtime="{runtime}"]')
        expect(row).to_be_visible()
        for name in ("high", "normal", "low", "oldest_wait", "why"):
            expect(row.locator(f'[data-field="{name}"]')).to_have_count(1)
