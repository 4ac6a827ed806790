"""A GPU runtime's environment (CI runs this file in the ``pytorch_2_0_gpu`` and
``pytorch_2_1_gpu`` environments): the pinned CUDA build of torch is installed, and the
worker refuses to start where it cannot use a GPU, saying why, instead of quietly training
on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import REQUIRED_RUNTIME, require_framework

from conftest import WORKER_DIR
from trainyard.routing import RUNTIMES

torch = require_framework("torch")
RUNTIME = RUNTIMES.get(REQUIRED_RUNTIME)
pytestmark = pytest.mark.skipif(
    RUNTIME is None or RUNTIME.device != "gpu",
    reason="runs in a GPU runtime's environment (TRAINYARD_REQUIRE_RUNTIME=pytorch-2.x-gpu)",
)


def _start_worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert RUNTIME is not None
    full = {**os.environ, "WORKER_TYPE": RUNTIME.name, "MODEL_FRAMEWORK": "pytorch",
            "USE_GPU": "true", "REDIS_URL": "redis://127.0.0.1:1/0",
            "DATA_ROOT": str(tmp_path), "MODEL_STORE": str(tmp_path / "m"), **env}  # fmt: skip
    return subprocess.run([sys.executable, "src/worker.py"], cwd=WORKER_DIR, env=full,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_environment_has_the_pinned_cuda_build() -> None:
    assert RUNTIME is not None
    assert torch.__version__.startswith(RUNTIME.framework_version + ".")
    assert torch.version.cuda is not None, "a -gpu runtime needs torch's CUDA build"


def test_refuses_to_start_without_an_nvidia_driver(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    done = _start_worker(tmp_path, NVIDIA_SMI=str(tmp_path / "no-such-nvidia-smi"))
    assert done.returncode == 2, done.stderr
    assert "needs a CUDA GPU" in done.stderr and "USE_GPU=false" in done.stderr


def test_refuses_when_the_framework_cannot_use_the_listed_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    # A driver tool that lists a card the framework cannot open (as with a driver too old
    # for the wheel's CUDA): torch's own probe must refuse it.
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, GPU-0000, NVIDIA H200, 143771'\n")
    smi.chmod(0o755)
    done = _start_worker(tmp_path, NVIDIA_SMI=str(smi))
    assert done.returncode == 2, done.stderr
    assert "cannot use CUDA" in done.stderr


def test_refuses_a_cpu_setting_for_a_gpu_runtime(tmp_path: Path) -> None:
    done = _start_worker(tmp_path, USE_GPU="false")
    assert done.returncode == 2 and "GPU runtime" in done.stderr, done.stderr
