"""The Submit page: a training job submitted from the form is followed on its job page
from queued through running to succeeded, and an API error shows next to its field."""

from __future__ import annotations

import json
import re
import uuid

from dashboard import (
    SLOWER_TABULAR_HP,
    TABULAR,
    long_job,
    open_page,
    record,
    recorded,
    states_seen,
    wait_state,
)
from playwright.sync_api import Page, expect

from conftest import System


def test_form_submission_is_followed_queued_running_succeeded(system: System, page: Page) -> None:
    # The scikit-learn worker is kept busy first, so the new job is really seen waiting.
    blocker = long_job(system.http, "browser: keeps the worker busy")
    try:
        wait_state(system.http, blocker, {"running"}, 60)
        record(page, {"state": ('main[data-page="job"] [data-field="state"]', None)})
        open_page(page, system.base_url, "submit")
        form = page.locator('form[data-form="training"]')
        # Prefilled with the README's example.
        expect(form.locator('[name="model_type"]')).to_have_value("random_forest")
        expect(form.locator('[name="data_path"]')).to_have_value("/data/tabular_data.csv")
        description = f"browser form {uuid.uuid4().hex[:8]}"
        form.locator('[name="description"]').fill(description)
        form.locator('[name="hyperparameters"]').fill(json.dumps(SLOWER_TABULAR_HP))
        form.locator('[type="submit"]').click()

        expect(page).to_have_url(re.compile(r"#/jobs/[A-Za-z0-9_-]+$"))
        job_id = page.url.rsplit("/", 1)[1]
        main = page.locator('main[data-page="job"]')
        expect(main).to_have_attribute("data-ready", "1")
        expect(main.locator('[data-field="description"]')).to_have_text(description)
        state = main.locator('[data-field="state"]')
        expect(state).to_contain_text("queued")
    finally:
        system.http.post(f"/jobs/{blocker}/cancel")
    expect(state).to_contain_text("succeeded", timeout=90_000)
    assert states_seen(recorded(page, "state")) == ["queued", "running", "succeeded"]
    assert system.http.get(f"/jobs/{job_id}/status").json()["status"] == "succeeded"
    expect(main.locator('[data-testid="result"]')).to_contain_text("accuracy")
    # One entry per state change at least: queued, running, succeeded.
    assert main.locator('ol[data-testid="timeline"] > li').count() >= 3


def test_api_error_is_shown_next_to_the_field_it_concerns(system: System, page: Page) -> None:
    bad = {"n_estimators": {"deep": 1}}  # a nested value: the API refuses it (422)
    reply = system.http.post("/jobs/training", json={**TABULAR, "hyperparameters": bad})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["error"]["details"][0]

    open_page(page, system.base_url, "submit")
    form = page.locator('form[data-form="training"]')
    form.locator('[name="hyperparameters"]').fill(json.dumps(bad))
    form.locator('[type="submit"]').click()
    error = page.locator(f'[data-error-for="{detail["field"]}"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text(detail["reason"])
    expect(page).to_have_url(re.compile(r"#/submit$"))  # no job: the page stays
