"""The seed's own commands, run as written from ``backend/`` and ``ai-worker/`` (the
README's Development section: ``python -m uvicorn src.main:app`` and ``python
src/worker.py`` with ``WORKER_TYPE=sklearn MODEL_FRAMEWORK=sklearn``), with no
``DATA_ROOT`` or ``MODEL_STORE``: both resolve the same default folders, the first start
writes the sample data there, and the README's random forest example, posted verbatim,
succeeds. ``TRAINYARD_HOME`` points the defaults at a temporary folder, so the test
writes nothing into the checkout (without it they are data/ and var/ in the checkout).

Needs TRAINYARD_BACKEND_PYTHON and TRAINYARD_WORKER_PYTHON (scripts/test.sh sets them)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REPO_ROOT
from trainyard.embedded import EmbeddedServer, free_port
from trainyard.paths import HOME_ENV
from trainyard.sample_data import TABULAR_FILE
from trainyard.seed_examples import TRAINING_BODIES
from trainyard.testing import stop_gracefully, wait_for

# Whatever the calling shell has set must not decide what this test checks.
UNSET = ("DATA_ROOT", "MODEL_STORE", "WORK_DIR", "REDIS_URL", "API_KEYS", "API_KEYS_FILE",
         "REQUIRE_API_KEYS", "TRAINYARD_NAMESPACE", HOME_ENV)  # fmt: skip
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path / "valkey") as server:
        yield server


def _start(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_the_seed_commands_as_written_run_the_readme_random_forest(
    tmp_path: Path, valkey: EmbeddedServer
) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update({"REDIS_URL": valkey.url, HOME_ENV: str(home), "OMP_NUM_THREADS": "1"})
    backend_log, worker_log = tmp_path / "backend.log", tmp_path / "worker.log"
    backend = _start(
        [os.environ["TRAINYARD_BACKEND_PYTHON"], "-m", "uvicorn", "src.main:app",
         "--port", str(port)],
        REPO_ROOT / "backend", env, backend_log,
    )  # fmt: skip
    worker = _start(
        [os.environ["TRAINYARD_WORKER_PYTHON"], "src/worker.py"], REPO_ROOT / "ai-worker",
        {**env, "WORKER_TYPE": "sklearn", "MODEL_FRAMEWORK": "sklearn", "LOG_FORMAT": "text"},
        worker_log,
    )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def logs() -> str:
        return f"backend:\n{backend_log.read_text()}\nworker:\n{worker_log.read_text()}"

    def sklearn_worker_up() -> bool:
        for name, proc in (("backend", backend), ("worker", worker)):
            assert proc.poll() is None, f"the {name} exited with {proc.returncode}\n{logs()}"
        try:
            workers = http.get("/workers").json()["workers"]
        except httpx.HTTPError:
            return False
        return any(w["runtime"] == "sklearn" for w in workers)

    try:
        wait_for(sklearn_worker_up, 120, "the backend and the sklearn worker")
        # Both found the same default data root, and the first start filled it.
        assert (home / "data" / TABULAR_FILE).is_file(), logs()
        said = backend_log.read_text() + worker_log.read_text()
        assert f"its default {home / 'data'} did not exist: wrote the sample data" in said
        reply = http.post("/jobs/training", json=TRAINING_BODIES["random_forest"])
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["job_id"]

        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = http.get(f"/jobs/{job_id}/status").json()
            return status if status["status"] in TERMINAL else None

        final = wait_for(finished, 120, "the random forest job")
        assert final["status"] == "succeeded", f"{final}\n{logs()}"
        assert final["result"]["metrics"]["accuracy"] >= 0.9
        # The model went to the default store beside the data, not into ai-worker/.
        assert any((home / "var" / "models").iterdir()), logs()
        assert not (REPO_ROOT / "ai-worker" / "data").exists()
        # A path the API can see is missing is refused at once, not handed to the worker.
        nope = {**TRAINING_BODIES["random_forest"], "data_path": "/data/nope.csv"}
        missing = http.post("/jobs/training", json=nope)
        assert missing.status_code == 422, missing.text
        assert missing.json()["error"]["details"][0]["field"] == "data_path"
    finally:
        http.close()
        stop_gracefully(worker)
        stop_gracefully(backend)
