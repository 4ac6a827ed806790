"""Browser tests: the dashboard (``/ui/``) driven by Playwright in Debian's headless
``chromium``, against the real system started as the README starts it (``trainyard up``:
embedded Valkey, backend, a scikit-learn worker and a PyTorch 2.1 worker for the charts).

Needs TRAINYARD_BACKEND_PYTHON, TRAINYARD_WORKER_PYTHON and TRAINYARD_RUNTIME_PYTHONS
(``runtime=python`` pairs with ``pytorch-2.1``; scripts/test.sh sets them) and a
``chromium`` on the PATH (scripts/test.sh installs Debian's where it is missing).
Playwright's own browser download is not used: the system browser is driven through
``executable_path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dashboard import TABULAR, TRANSFORMER, wait_state
from playwright.sync_api import (
    Browser,
    Dialog,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from trainyard.embedded import free_port
from trainyard.testing import stop_gracefully, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every expect() waits up to this long by default (Playwright's own 5 s is short for a
# system sharing two cores with its workers); tests that wait on training say more.
expect.set_options(timeout=15_000)
# A key for the system with API keys on; the test checks it never reaches the DOM.
API_KEY = "browser-test-key-7f3a9c1e5b"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class System:
    base_url: str
    redis_url: str
    var_dir: Path
    data_root: Path
    process: subprocess.Popen[bytes]
    http: httpx.Client

    def ui(self, route: str = "jobs") -> str:
        return f"{self.base_url}/ui/#/{route}"


def runtime_pythons() -> dict[str, str]:
    pairs = os.environ.get("TRAINYARD_RUNTIME_PYTHONS", "")
    return dict(item.split("=", 1) for item in pairs.split(",") if "=" in item)


@contextmanager
def running_system(
    tmp: Path, workers: list[tuple[str, str]], extra_env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[System]:  # fmt: skip
    """``trainyard up`` on free ports, given once the backend answers and every requested
    runtime has a live worker; stopped as Ctrl-C stops it afterwards."""
    backend_python = os.environ["TRAINYARD_BACKEND_PYTHON"]
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
    env.update(extra_env or {})
    args = [backend_python, "-m", "trainyard.cli", "up", "--repo-root", str(REPO_ROOT),
            "--backend-python", backend_python, "--port", str(port),
            "--redis-port", str(redis_port), "--var-dir", str(tmp / "var"),
            "--data-root", str(tmp / "data")]  # fmt: skip
    for runtime, python in workers:
        args += ["--worker", f"{runtime}={python}"]
    proc = subprocess.Popen(args, env=env)
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=60, headers=headers or {})
    wanted = {runtime for runtime, _ in workers}

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"trainyard up exited with {proc.returncode}")
        try:
            reply = http.get("/workers")
        except httpx.HTTPError:
            return False
        if reply.status_code != 200:
            return False
        return wanted <= {w["runtime"] for w in reply.json()["workers"]}

    try:
        wait_for(ready, 240, f"the backend and workers for {sorted(wanted)}", interval_s=0.5)
        yield System(base, f"redis://127.0.0.1:{redis_port}/0", tmp / "var", tmp / "data",
                     proc, http)  # fmt: skip
    finally:
        stop_gracefully(proc)
        http.close()


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The shared system: a scikit-learn worker and a PyTorch 2.1 worker."""
    torch_python = runtime_pythons().get("pytorch-2.1")
    if not torch_python:
        raise AssertionError(
            "TRAINYARD_RUNTIME_PYTHONS names no pytorch-2.1 python (scripts/test.sh sets it)"
        )
    workers = [("sklearn", os.environ["TRAINYARD_WORKER_PYTHON"]), ("pytorch-2.1", torch_python)]
    with running_system(tmp_path_factory.mktemp("system"), workers) as sys_:
        yield sys_


@pytest.fixture(scope="session")
def keyed_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A second system with API keys on (workers need no key: they talk to Redis)."""
    workers = [("sklearn", os.environ["TRAINYARD_WORKER_PYTHON"])]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with running_system(
        tmp_path_factory.mktemp("keyed"), workers, {"API_KEYS": API_KEY}, headers
    ) as sys_:
        yield sys_


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise AssertionError("no chromium on the PATH (scripts/test.sh installs Debian's)")
    browser = playwright.chromium.launch(
        executable_path=chromium, headless=True, args=["--no-sandbox"]
    )
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Watched:
    """What a page did that a test may assert on: dialogs it opened (accepted, so a
    confirm() before cancel or redrive goes through) and uncaught script errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture
def page(browser: Browser, watched: Watched) -> Iterator[Page]:
    """A fresh context per test (its own sessionStorage), 1280x800."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()

    def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    # An uncaught exception in the dashboard's script is a bug even if the test passed.
    assert not watched.errors, f"uncaught script errors: {watched.errors}"


@dataclass
class Trained:
    """Two finished scikit-learn trainings with different hyperparameters; the first
    registered its model under ``model_id``."""

    job_ids: tuple[str, str]
    model_id: str


@pytest.fixture(scope="session")
def trained(system: System) -> Trained:
    model_id = "browser_rf"
    bodies = [
        {**TABULAR, "model_name": model_id, "hyperparameters": {"n_estimators": 7}},
        {**TABULAR, "hyperparameters": {"n_estimators": 13, "max_depth": 3}},
    ]
    ids = []
    for body in bodies:
        reply = system.http.post("/jobs/training", params={"wait": 120}, json=body)
        assert reply.status_code == 200 and reply.json()["status"] == "succeeded", reply.text
        ids.append(reply.json()["job_id"])
    return Trained((ids[0], ids[1]), model_id)


@pytest.fixture(scope="session")
def curves(system: System) -> tuple[str, str]:
    """Two finished PyTorch trainings with loss curves (learning rates differ)."""
    ids = []
    for lr in (0.0005, 0.002):
        hyperparameters = {**TRANSFORMER["hyperparameters"], "epochs": 2, "learning_rate": lr}
        body = {**TRANSFORMER, "hyperparameters": hyperparameters, "description": f"lr {lr}"}
        reply = system.http.post("/jobs/training", json=body)
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["job_id"])
    for job_id in ids:
        wait_state(system.http, job_id, {"succeeded", "failed", "dead"}, 240)
        status = system.http.get(f"/jobs/{job_id}/status").json()
        assert status["status"] == "succeeded", status
    return ids[0], ids[1]
