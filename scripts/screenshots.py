"""Regenerate the dashboard's screenshots (docs/screenshots/<page>.png, 1280x800) from a
real run: starts the system (``trainyard up``: embedded Valkey, backend, a scikit-learn
and a PyTorch 2.1 worker) on free ports in a temporary folder, creates a little history
(scikit-learn trainings, two small PyTorch trainings with loss curves, an inference, a
failed job), then photographs each page in Debian's headless chromium.

    python3 scripts/screenshots.py            # re-runs itself in the backend environment

It finds the environments with scripts/lib/envs.sh (as run_local.sh and test.sh do), or
takes TRAINYARD_BACKEND_PYTHON, TRAINYARD_WORKER_PYTHON and TRAINYARD_RUNTIME_PYTHONS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "docs" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

RF = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "framework_override": "sklearn",
    "description": "Train Random Forest for classification",
}
TRANSFORMER = {
    "model_type": "transformer",
    "data_path": "/data/sentiment_analysis.csv",
    "framework_override": "pytorch-2.1",
}
TRANSFORMER_HP = {"epochs": 4, "batch_size": 16, "num_layers": 1, "hidden_size": 64,
                  "num_heads": 4, "max_length": 64}  # fmt: skip

# Scroll an element's section to the top of the window, below the header.
SCROLL_TO_SECTION = """el => {
  (el.closest("section") || el).scrollIntoView({block: "start"});
  window.scrollBy(0, -72);  // below the sticky header
}"""


NEXT_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def sync_env(*args: str) -> str:
    """The path of one of the project's environments (built if needed), from envs.sh."""
    script = (
        f'source "{REPO_ROOT}/scripts/lib/envs.sh" && ensure_uv >&2 && sync_env {" ".join(args)}'
    )
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def environments() -> tuple[str, str, str]:
    backend = os.environ.get("TRAINYARD_BACKEND_PYTHON") or sync_env("backend") + "/bin/python"
    worker = os.environ.get("TRAINYARD_WORKER_PYTHON") or (
        sync_env("ai-worker", "sklearn") + "/bin/python"
    )
    pairs = os.environ.get("TRAINYARD_RUNTIME_PYTHONS", "")
    torch = dict(p.split("=", 1) for p in pairs.split(",") if "=" in p).get("pytorch-2.1") or (
        sync_env("ai-worker", "pytorch_2_1") + "/bin/python"
    )
    return backend, worker, torch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_history(http: Any) -> dict[str, Any]:
    """Real jobs for the pages to show; returns the ids the screenshots open."""
    from trainyard.testing import wait_for

    def train(body: dict[str, Any]) -> dict[str, Any]:
        reply = http.post("/jobs/training", json=body)
        assert reply.status_code == 202, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def done(job_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any]:
            status: dict[str, Any] = http.get(f"/jobs/{job_id}/status").json()
            return status if status["status"] in ("succeeded", "failed", "dead") else {}

        result: dict[str, Any] = wait_for(final, 600, f"job {job_id}", interval_s=0.5)
        return result

    def succeeded(job_id: str) -> None:
        status = done(job_id)
        if status["status"] != "succeeded":
            raise SystemExit(f"job {job_id} {status['status']}: {status.get('error')}")

    curves = []
    for lr, name in ((0.0005, "sentiment_small"), (0.002, "sentiment_fast")):
        hyperparameters = {**TRANSFORMER_HP, "learning_rate": lr}
        description = f"sentiment transformer, learning rate {lr}"
        curves.append(train({**TRANSFORMER, "hyperparameters": hyperparameters,
                             "description": description, "model_name": name}))  # fmt: skip
    tabular = []
    for n, depth in ((100, 10), (50, 5), (200, 8)):
        body = {**RF, "hyperparameters": {"n_estimators": n, "max_depth": depth}}
        if n == 100:
            body["model_name"] = "random_forest_model_789"
        tabular.append(train(body))
    failed = train({**RF, "label_column": "species", "description": "a wrong label column"})
    # No tensorflow worker here: this one waits, and the Queues page says why.
    train({"model_type": "mobilenet", "data_path": "/data/cifar10", "framework_override":
           "tensorflow", "description": "waits for a tensorflow worker"})  # fmt: skip
    for job in tabular:
        succeeded(job["job_id"])
    done(failed["job_id"])
    answer = http.post(
        "/jobs/inference",
        params={"wait": 60},
        json={"model_id": "random_forest_model_789", "input_data": "5.1,3.5,1.4,0.2",
              "parameters": {"probability": True}},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    for job in curves:
        succeeded(job["job_id"])
    return {"curves": [c["job_id"] for c in curves], "inference": answer.json()["job_id"]}


def photograph(base: str, ids: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    first, second = ids["curves"]
    shots = {
        "jobs": "jobs",
        "job": f"jobs/{first}",
        "compare": f"compare?ids={first},{second}",
        "workers": "workers",
        "queues": "queues",
        "models": "models",
        "submit": "submit",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = shutil.which("chromium")
        if chromium is None:
            raise SystemExit("needs Debian's chromium: sudo apt-get install chromium")
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox"])  # fmt: skip
        page = browser.new_page(viewport=VIEWPORT)
        for name, route in shots.items():
            page.goto(f"{base}/ui/#/{route}")
            page.reload()  # each page from a fresh load, as a user opening its link
            main = page.locator(f'main[data-page="{name}"]')
            expect(main).to_have_attribute("data-ready", "1", timeout=30_000)
            if name in ("job", "compare"):
                # The curves are what these pages are for: bring them into the picture.
                chart = page.locator('div[data-chart="loss"]').first
                expect(chart).not_to_have_attribute("data-points", "0", timeout=30_000)
                chart.evaluate(SCROLL_TO_SECTION)
            if name == "models":
                form = page.locator('form[data-form="try"]')
                form.locator('select[name="model_id"]').select_option("random_forest_model_789")
                form.locator('textarea[name="input_data"]').fill('"5.1,3.5,1.4,0.2"')
                form.locator('[type="submit"]').click()
                answer = form.locator('[data-testid="prediction"]')
                expect(answer).to_contain_text("prediction", timeout=60_000)
                form.evaluate(SCROLL_TO_SECTION)
            # The charts draw on the next animation frames after their data: let them land.
            page.evaluate(NEXT_FRAMES)
            page.screenshot(path=str(OUT / f"{name}.png"))
            print(f"wrote {OUT / f'{name}.png'}")
        browser.close()


def main() -> int:
    backend, worker, torch = environments()
    if Path(sys.prefix).resolve() != Path(backend).parent.parent.resolve():
        # Playwright and httpx live in the backend environment.
        env = {**os.environ, "TRAINYARD_BACKEND_PYTHON": backend,
               "TRAINYARD_WORKER_PYTHON": worker,
               "TRAINYARD_RUNTIME_PYTHONS": f"sklearn={worker},pytorch-2.1={torch}"}  # fmt: skip
        return subprocess.call([backend, __file__, *sys.argv[1:]], env=env)

    import httpx

    from trainyard.testing import wait_for

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="trainyard-screens-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
        proc = subprocess.Popen(
            [backend, "-m", "trainyard.cli", "up", "--repo-root", str(REPO_ROOT),
             "--backend-python", backend, "--worker", f"sklearn={worker}",
             "--worker", f"pytorch-2.1={torch}", "--port", str(port),
             "--redis-port", str(free_port()), "--var-dir", f"{tmp}/var",
             "--data-root", f"{tmp}/data"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=90) as http:

                def up() -> bool:
                    if proc.poll() is not None:
                        raise SystemExit(f"trainyard up exited with {proc.returncode}")
                    try:
                        workers = http.get("/workers").json()["workers"]
                    except httpx.HTTPError:
                        return False
                    return {"sklearn", "pytorch-2.1"} <= {w["runtime"] for w in workers}

                wait_for(up, 240, "the backend and its workers", interval_s=0.5)
                ids = make_history(http)
            photograph(base, ids)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
