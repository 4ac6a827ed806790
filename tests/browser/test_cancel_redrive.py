"""The Job page's buttons: cancel kills a running job, and redrive runs a dead job again
as a new job."""

from __future__ import annotations

from dashboard import long_job, open_page, wait_state
from playwright.sync_api import Page, expect

from conftest import System
from trainyard.connection import connect
from trainyard.engine import JobQueue
from trainyard.testing import wait_for
from trainyard.types import JobType


def test_cancel_button_cancels_a_running_job(system: System, page: Page) -> None:
    job_id = long_job(system.http, "browser: cancel me")
    try:
        main = open_page(page, system.base_url, f"jobs/{job_id}")
        state = main.locator('[data-field="state"]')
        expect(state).to_contain_text("running", timeout=60_000)
        main.locator('button[data-action="cancel"]').click()
        expect(state).to_contain_text("cancelled", timeout=60_000)
    finally:
        system.http.post(f"/jobs/{job_id}/cancel")
    assert system.http.get(f"/jobs/{job_id}/status").json()["status"] == "cancelled"


def _dead_job(system: System) -> str:
    """A dead job made as a worker makes one: claimed, then failed retriably on its last
    attempt. Its runtime has no worker in this system, so nothing else claims it."""
    queue = JobQueue(connect(system.redis_url))
    job_id, _ = queue.enqueue(
        job_type=JobType.TRAINING,
        runtime="pytorch-2.0",
        request={"model_type": "resnet", "data_path": "/data/cifar10",
                 "description": "browser: dead letter"},
        max_attempts=1,
    )  # fmt: skip
    claim = queue.claim("browser-test-worker", ["pytorch-2.0"], lease_ms=60_000)
    assert claim is not None and claim.job_id == job_id
    done = queue.finish(job_id, claim.attempt_id, "retry", error="crashed: worker lost",
                        error_kind="crashed")  # fmt: skip
    assert done.state == "dead"
    return job_id


def test_redrive_button_runs_a_dead_job_again_as_a_new_job(system: System, page: Page) -> None:
    dead = _dead_job(system)
    main = open_page(page, system.base_url, f"jobs/{dead}")
    expect(main.locator('[data-field="state"]')).to_contain_text("dead")
    expect(main.locator('[data-field="error_kind"]')).to_contain_text("crashed")
    expect(main.locator('[data-field="error"]')).to_contain_text("worker lost")
    main.locator('button[data-action="redrive"]').click()

    def redriven() -> str:
        value: str = system.http.get(f"/jobs/{dead}").json().get("redriven_to") or ""
        return value

    new_id = wait_for(redriven, 15, "the redriven job")
    try:
        jobs = open_page(page, system.base_url, "jobs")
        expect(jobs.locator(f'tr[data-job-id="{new_id}"]')).to_be_visible()
        expect(jobs.locator(f'tr[data-job-id="{new_id}"] [data-field="state"]')).to_contain_text(
            "queued"
        )
    finally:
        system.http.post(f"/jobs/{new_id}/cancel")
    wait_state(system.http, new_id, {"cancelled"}, 30)
