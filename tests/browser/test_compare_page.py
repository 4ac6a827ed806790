"""Compare: pick two trainings on the Jobs page, and the Compare page shows both, with
their hyperparameters side by side."""

from __future__ import annotations

import re

from dashboard import open_page
from playwright.sync_api import Page, expect

from conftest import System, Trained


def test_two_jobs_picked_on_the_jobs_page_are_compared(
    system: System, trained: Trained, page: Page
) -> None:
    first, second = trained.job_ids
    main = open_page(page, system.base_url, "jobs")
    # Narrowed to succeeded scikit-learn jobs, so that both are on the first page.
    main.locator('select[name="runtime"]').select_option("sklearn")
    main.locator('select[name="state"]').select_option("succeeded")
    for job_id in (first, second):
        main.locator(f'input[type="checkbox"][data-compare-id="{job_id}"]').check()
    page.locator('button[data-action="compare"]').click()
    expect(page).to_have_url(re.compile(r"#/compare\?ids="))
    ids = set(page.url.split("ids=", 1)[1].split("&")[0].replace("%2C", ",").split(","))
    assert ids == {first, second}
    compare = page.locator('main[data-page="compare"]')
    expect(compare).to_have_attribute("data-ready", "1")
    table = compare.locator('table[data-testid="hyperparameters"]')
    expect(table).to_contain_text("n_estimators")
    expect(table).to_contain_text("7")
    expect(table).to_contain_text("13")
    expect(table).to_contain_text("max_depth")


def test_compare_overlays_the_loss_curves_of_two_trainings(
    system: System, curves: tuple[str, str], page: Page
) -> None:
    first, second = curves
    compare = open_page(page, system.base_url, f"compare?ids={first},{second}")
    table = compare.locator('table[data-testid="hyperparameters"]')
    expect(table).to_contain_text("learning_rate")
    expect(table).to_contain_text("0.0005")
    expect(table).to_contain_text("0.002")
    chart = compare.locator('div[data-chart="loss"]')
    expect(chart).to_be_visible(timeout=30_000)
    # One series per job, named by the job (its legend), and the points of both drawn.
    for job_id in (first, second):
        expect(chart).to_contain_text(job_id[:8])
    one = open_page(page, system.base_url, f"jobs/{first}").locator('div[data-chart="loss"]')
    expect(one).not_to_have_attribute("data-points", "0")
    single = int(one.get_attribute("data-points") or 0)
    compare = open_page(page, system.base_url, f"compare?ids={first},{second}")
    total = compare.locator('div[data-chart="loss"]')
    expect(total).not_to_have_attribute("data-points", "0")
    page.wait_for_function(
        f"Number(document.querySelector('div[data-chart=loss]').dataset.points) > {single}"
    )
