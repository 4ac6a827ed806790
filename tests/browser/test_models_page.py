"""The Models page lists the registry, and its try-it form runs an inference job and
shows the prediction."""

from __future__ import annotations

import json
from typing import Any

from dashboard import open_page
from playwright.sync_api import Page, expect

from conftest import System, Trained

INPUT = "5.1,3.5,1.4,0.2"


def predict_over_http(system: System, model_id: str) -> dict[str, Any]:
    """The inference job's final status, run through the API (the answer to compare to)."""
    answer: dict[str, Any] = system.http.post(
        "/jobs/inference", params={"wait": 60}, json={"model_id": model_id, "input_data": INPUT}
    ).json()
    assert answer["status"] == "succeeded", answer
    return answer


def test_try_it_form_returns_a_prediction(system: System, trained: Trained, page: Page) -> None:
    label = str(predict_over_http(system, trained.model_id)["result"]["prediction"])

    main = open_page(page, system.base_url, "models")
    row = main.locator(f'tr[data-model-id="{trained.model_id}"]')
    expect(row).to_be_visible()
    form = page.locator('form[data-form="try"]')
    expect(form).to_be_visible()
    form.locator('select[name="model_id"]').select_option(trained.model_id)
    form.locator('textarea[name="input_data"]').fill(json.dumps(INPUT))
    form.locator('[type="submit"]').click()
    prediction = page.locator('[data-testid="prediction"]')
    expect(prediction).not_to_be_empty(timeout=60_000)
    expect(prediction).to_contain_text(label)  # what the same input gave over HTTP


def test_inference_job_page_shows_input_and_prediction(
    system: System, trained: Trained, page: Page
) -> None:
    answer = predict_over_http(system, trained.model_id)
    main = open_page(page, system.base_url, f"jobs/{answer['job_id']}")
    expect(main.locator('[data-testid="input"]')).to_contain_text(INPUT)
    expect(main.locator('[data-testid="prediction"]')).to_contain_text(
        str(answer["result"]["prediction"])
    )


def test_training_job_links_to_its_registered_model(
    system: System, trained: Trained, page: Page
) -> None:
    main = open_page(page, system.base_url, f"jobs/{trained.job_ids[0]}")
    link = main.locator('a[data-testid="model-link"]')
    expect(link).to_have_text(trained.model_id)
    link.click()
    models = page.locator('main[data-page="models"]')
    expect(models).to_have_attribute("data-ready", "1")
    expect(models.locator(f'tr[data-model-id="{trained.model_id}"]')).to_be_visible()
