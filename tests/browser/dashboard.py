"""Helpers for the browser tests: open a dashboard page and wait for its first data, submit
jobs over HTTP, and record what a page showed over time (a MutationObserver installed
before the page's own script runs, so a state that lasts a few milliseconds is still seen).

Selectors follow the dashboard's DOM contract (docs/DASHBOARD.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from trainyard.testing import wait_for

__all__ = [
    "RECORDER",
    "SLOWER_TABULAR_HP",
    "TABULAR",
    "TRANSFORMER",
    "long_job",
    "open_page",
    "record",
    "record_rows",
    "recorded",
    "row_states",
    "states_seen",
    "submit_training",
    "wait_state",
]

# The README's scikit-learn example, smaller so that it trains in about a second.
TABULAR: dict[str, Any] = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "hyperparameters": {"n_estimators": 20, "max_depth": 5, "random_state": 42},
    "framework_override": "sklearn",
}

# Trains for a second or two, so that its running state is on screen for a while.
SLOWER_TABULAR_HP: dict[str, Any] = {"n_estimators": 400, "max_depth": 5, "random_state": 42}

# A small transformer (docs/MODELS.md): 100 steps per epoch, a train event every 10 steps.
TRANSFORMER: dict[str, Any] = {
    "model_type": "transformer",
    "data_path": "/data/sentiment_analysis.csv",
    "framework_override": "pytorch-2.1",
    "hyperparameters": {
        "epochs": 3, "batch_size": 16, "num_layers": 1, "hidden_size": 32, "num_heads": 2,
        "max_length": 48,
    },
}  # fmt: skip

# Records, in window.__seen, every distinct value a selector's text (or attribute) took.
# Installed with add_init_script, it runs before the dashboard's script on every load.
RECORDER = """
(() => {
  window.__seen = {};
  const watch = %s;
  const look = () => {
    for (const [name, [selector, attribute]] of Object.entries(watch)) {
      const el = document.querySelector(selector);
      if (!el) continue;
      const value = attribute ? el.getAttribute(attribute) : el.textContent.trim();
      if (value === null || value === '') continue;
      const seen = (window.__seen[name] = window.__seen[name] || []);
      if (seen[seen.length - 1] !== value) seen.push(value);
    }
  };
  new MutationObserver(look).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""


# Records, in window.__rows, every distinct state text each jobs-list row showed.
ROW_RECORDER = """
(() => {
  window.__rows = {};
  const look = () => {
    for (const row of document.querySelectorAll('tr[data-job-id]')) {
      const cell = row.querySelector('[data-field="state"]');
      const value = cell ? cell.textContent.trim() : '';
      if (!value) continue;
      const seen = (window.__rows[row.dataset.jobId] = window.__rows[row.dataset.jobId] || []);
      if (seen[seen.length - 1] !== value) seen.push(value);
    }
  };
  new MutationObserver(look).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""


def record_rows(page: Page) -> None:
    """Start recording, in the page now loaded, the states every job row shows."""
    page.evaluate(ROW_RECORDER)


def row_states(page: Page, job_id: str) -> list[str]:
    values: list[str] = page.evaluate(f"(window.__rows || {{}})[{json.dumps(job_id)}] || []")
    return states_seen(values)


def record(page: Page, watch: dict[str, tuple[str, str | None]]) -> None:
    """Start recording ``watch`` (name -> (selector, attribute or None for the text))
    on every document this page loads from now on."""
    page.add_init_script(RECORDER % json.dumps(watch))


def recorded(page: Page, name: str) -> list[str]:
    values: list[str] = page.evaluate(f"(window.__seen || {{}})[{json.dumps(name)}] || []")
    return values


STATES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")


def states_seen(values: list[str]) -> list[str]:
    """The job states in recorded texts of ``[data-field=state]``, repeats folded."""
    found: list[str] = []
    for text in values:
        state = next((s for s in STATES if re.search(rf"\b{s}\b", text.lower())), None)
        if state and (not found or found[-1] != state):
            found.append(state)
    return found


def page_name(route: str) -> str:
    head = route.split("?", 1)[0].split("/", 1)
    return "job" if head[0] == "jobs" and len(head) > 1 else head[0]


def open_page(page: Page, base_url: str, route: str, timeout_ms: int = 20_000) -> Locator:
    """Load ``/ui/#/<route>`` and return its ``main`` once its first data has loaded."""
    page.goto(f"{base_url}/ui/#/{route}")
    main = page.locator(f'main[data-page="{page_name(route)}"]')
    expect(main).to_have_attribute("data-ready", "1", timeout=timeout_ms)
    return main


def submit_training(http: httpx.Client, **fields: Any) -> str:
    body = {**TABULAR, **fields}
    reply = http.post("/jobs/training", json=body)
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["job_id"]
    return job_id


def wait_state(http: httpx.Client, job_id: str, states: set[str], timeout_s: float) -> str:
    def state() -> str:
        value: str = http.get(f"/jobs/{job_id}/status").json()["status"]
        return value if value in states else ""

    return wait_for(state, timeout_s, f"job {job_id} in {sorted(states)}", interval_s=0.2)


def long_job(http: httpx.Client, description: str = "browser: a long job") -> str:
    """A scikit-learn job that runs until cancelled (shallow trees keep its memory small)."""
    return submit_training(
        http,
        hyperparameters={"n_estimators": 500_000, "max_depth": 2, "random_state": 1},
        description=description,
    )
