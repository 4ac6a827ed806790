"""The Job page draws a PyTorch training's metrics live: the loss chart gains points as
the progress events arrive, and the page ends on succeeded with the log tail shown."""

from __future__ import annotations

from dashboard import TRANSFORMER, open_page, record, recorded, states_seen, submit_training
from playwright.sync_api import Page, expect

from conftest import System


def test_loss_chart_gains_points_while_a_pytorch_job_trains(system: System, page: Page) -> None:
    job_id = submit_training(system.http, **TRANSFORMER, description="browser: live chart")
    record(
        page,
        {
            "points": ('div[data-chart="loss"]', "data-points"),
            "state": ('main[data-page="job"] [data-field="state"]', None),
        },
    )
    main = open_page(page, system.base_url, f"jobs/{job_id}")
    expect(main.locator('[data-field="state"]')).to_contain_text("succeeded", timeout=180_000)
    chart = main.locator('div[data-chart="loss"]')
    expect(chart).to_be_visible()
    points = [int(v) for v in recorded(page, "points")]
    # Drawn as the events arrived: several distinct, growing counts, not one final draw.
    assert len(points) >= 2 and points == sorted(points), points
    assert points[-1] >= 3, points  # at least one point per epoch
    assert int(chart.get_attribute("data-points") or 0) == points[-1]
    assert states_seen(recorded(page, "state"))[-2:] == ["running", "succeeded"]
    expect(main.locator('pre[data-testid="log"]')).to_contain_text("parameters")
