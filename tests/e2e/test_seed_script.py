"""The seed's ``scripts/test_api.py`` against a whole system started by ``trainyard up``
with a worker for every CPU runtime (scikit-learn, PyTorch 2.0 and 2.1, TensorFlow): every
training example of the seed README, posted as written, runs to the end on the runtime the
routing table picks (the GPU example reports why it waits, and its CPU variant trains the
model the image example needs), then every inference example runs on those models.

Needs TRAINYARD_RUNTIME_PYTHONS (``runtime=python,...``; scripts/test.sh sets it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from trainyard.embedded import free_port
from trainyard.testing import stop_gracefully, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
_PAIRS = os.environ.get("TRAINYARD_RUNTIME_PYTHONS", "").split(",")
PYTHONS = dict(item.split("=", 1) for item in _PAIRS if item)
pytestmark = pytest.mark.skipif(
    not {"sklearn", "pytorch-2.0", "pytorch-2.1", "tensorflow"} <= set(PYTHONS),
    reason="needs every CPU runtime's environment (TRAINYARD_RUNTIME_PYTHONS)",
)


def test_every_seed_example_through_scripts_test_api(tmp_path: Path) -> None:
    backend_python = os.environ["TRAINYARD_BACKEND_PYTHON"]
    port = free_port()
    args = [backend_python, "-m", "trainyard.cli", "up", "--repo-root", str(REPO_ROOT),
            "--backend-python", backend_python, "--port", str(port),
            "--redis-port", str(free_port()), "--var-dir", str(tmp_path / "var"),
            "--data-root", str(tmp_path / "data")]  # fmt: skip
    for runtime, python in PYTHONS.items():
        args += ["--worker", f"{runtime}={python}"]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    system = subprocess.Popen(args, env=env)
    base = f"http://127.0.0.1:{port}"
    try:

        def all_workers_up() -> bool:
            if system.poll() is not None:
                raise AssertionError(f"trainyard up exited with {system.returncode}")
            try:
                workers = httpx.get(f"{base}/workers", timeout=10).json()["workers"]
            except httpx.HTTPError:
                return False
            return {w["runtime"] for w in workers} >= set(PYTHONS)

        wait_for(all_workers_up, 180, "a worker of every CPU runtime")
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "test_api.py"), "--base-url", base],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        print(done.stdout)
        assert done.returncode == 0, done.stdout + done.stderr
        table = done.stdout
        for row in ("Quick start: BERT", "PyTorch BERT (CPU)", "TensorFlow Inception",
                    "Scikit-learn Random Forest", "PyTorch ResNet (CPU variant)"):  # fmt: skip
            assert any(line.startswith(row) and "succeeded" in line for line in
                       table.splitlines()), row  # fmt: skip
        gpu = next(line for line in table.splitlines() if line.startswith("PyTorch ResNet (GPU)"))
        assert "no live worker serves runtime pytorch-2.0-gpu" in gpu
        for row in ("Quick start: text", "Text classification",
                    "Image classification (real input)", "Tabular prediction (real input)"):
            assert any(line.startswith(row + " ") and "succeeded" in line
                       for line in table.splitlines()), row  # fmt: skip
    finally:
        stop_gracefully(system)
