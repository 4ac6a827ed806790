"""The Workers page is live: a worker that starts appears, and one stopped with SIGTERM
(graceful deregistration) disappears, without a reload."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

from dashboard import open_page
from playwright.sync_api import Page, expect

from conftest import REPO_ROOT, System


def test_a_worker_appears_and_disappears(system: System, page: Page) -> None:
    main = open_page(page, system.base_url, "workers")
    expect(main.locator("tr[data-worker-id]")).not_to_have_count(0)  # the system's own
    worker_id = f"browser-extra-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": system.redis_url,
        "DATA_ROOT": str(system.data_root),
        "MODEL_STORE": str(system.var_dir / "models"),
        "WORK_DIR": str(system.var_dir / "work-extra"),
        "WORKER_TYPE": "sklearn",
        "USE_GPU": "false",
        "WORKER_ID": worker_id,
    }
    worker = subprocess.Popen(
        [os.environ["TRAINYARD_WORKER_PYTHON"], "src/worker.py"], cwd=REPO_ROOT / "ai-worker",
        env=env,
    )  # fmt: skip
    try:
        row = main.locator(f'tr[data-worker-id="{worker_id}"]')
        expect(row).to_be_visible(timeout=90_000)
        expect(row.locator('[data-field="runtime"]')).to_have_text("sklearn")
        expect(row.locator('[data-field="device"]')).to_contain_text("cpu")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        expect(row).to_have_count(0, timeout=30_000)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
