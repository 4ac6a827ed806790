"""End-to-end: the system started exactly as the README's first command starts it
(``trainyard up``: embedded Valkey, backend, a scikit-learn worker), driven over HTTP.

Needs TRAINYARD_BACKEND_PYTHON and TRAINYARD_WORKER_PYTHON (scripts/test.sh sets them).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from trainyard.embedded import free_port
from trainyard.testing import stop_gracefully, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class System:
    base_url: str
    process: subprocess.Popen[bytes]
    http: httpx.Client


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    backend_python = os.environ["TRAINYARD_BACKEND_PYTHON"]
    worker_python = os.environ["TRAINYARD_WORKER_PYTHON"]
    tmp = tmp_path_factory.mktemp("system")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [backend_python, "-m", "trainyard.cli", "up", "--repo-root", str(REPO_ROOT),
         "--backend-python", backend_python, "--worker", f"sklearn={worker_python}",
         "--port", str(port), "--redis-port", str(free_port()),
         "--var-dir", str(tmp / "var"), "--data-root", str(tmp / "data")],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=60)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"trainyard up exited with {proc.returncode}")
        try:
            workers = http.get("/workers").json()["workers"]
        except httpx.HTTPError:
            return False
        return any(w["runtime"] == "sklearn" for w in workers)

    try:
        wait_for(ready, 120, "the backend and a sklearn worker")
        yield System(base, proc, http)
    finally:
        stop_gracefully(proc)
        http.close()
