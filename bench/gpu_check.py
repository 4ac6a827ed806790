"""GPU checks for a machine with an NVIDIA GPU: what docs/GPU_MEMORY_MANAGEMENT.md claims,
measured on real hardware. CI has no GPU; run this where one is.

    python bench/gpu_check.py [--out DIR]

It uses the worker's own code (``trainyard_worker.gpu`` and the PyTorch runtimes) with
whatever torch the machine has, and prints one JSON report (also written to
``DIR/gpu_check.json``):

1. discovery: the GPUs ``nvidia-smi`` lists, as the worker sees them;
2. training on the GPU, each in its own process group with ``CUDA_VISIBLE_DEVICES`` set to
   one GPU's UUID, as the supervisor does it: ResNet-18 and BERT (small) under mixed
   precision, with time, training accuracy and peak GPU memory;
3. a child killed mid-training (SIGKILL to its group): the after-job check must find the
   GPU clean, and how long the driver took to free the memory;
4. a process that escapes the job's group and keeps GPU memory: the check must take the
   GPU out of service with the reason.

Needs the core and worker packages on the path (``PYTHONPATH=core/src:ai-worker/src``) and
their small dependencies (redis, pydantic); see bench/README.md for carrying them as wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "core" / "src"), str(REPO / "ai-worker" / "src")]

from trainyard_worker.gpu import GpuSet, nvidia_smi_query  # noqa: E402

# A training run in a child process: prints one JSON line with the result.
TRAIN_CHILD = r"""
import json, sys, time
from pathlib import Path
from trainyard.sample_data import write_text
from trainyard.sample_images import write_cifar10
from trainyard_worker.runtimes import torch_runtime
from trainyard_worker.runtimes.base import TrainRequest

class Ctx:
    def __init__(self): self.events = []
    def progress(self, **f): self.events.append(f)
    def log(self, line): print(line, file=sys.stderr)

model_type, root = sys.argv[1], Path(sys.argv[2])
if model_type == "resnet":
    data = write_cifar10(root / "cifar10")
    hp = {"architecture": "resnet18", "epochs": 10, "batch_size": 64, "num_classes": 10}
else:
    data = write_text(root / "sentiment_analysis.csv")
    hp = {"epochs": 5, "learning_rate": 0.001, "batch_size": 16, "max_length": 128,
          "hidden_size": 256, "num_layers": 4, "num_heads": 4}
out = root / ("out-" + model_type); out.mkdir()
ctx = Ctx(); started = time.monotonic()
result = torch_runtime.train(TrainRequest(model_type=model_type, data_file=data,
    hyperparameters=hp, out_dir=out, device="cuda", data_root=root), ctx)
epochs = len([e for e in ctx.events if "metrics" in e])
print(json.dumps({"model_type": model_type, "seconds": round(time.monotonic() - started, 1),
                  "metrics": result.metrics, "epochs": epochs}))
"""

# Holds GPU memory until killed; announces itself once it holds it.
HOLD_CHILD = r"""
import sys, time, torch
x = torch.empty(int(sys.argv[1]) * 2**20, dtype=torch.uint8, device="cuda")
x.fill_(1); torch.cuda.synchronize()
print("holding", flush=True)
time.sleep(600)
"""


def _env(gpu_uuid: str) -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_uuid, "TRAINYARD_DEVICE": "cuda",
            "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}  # fmt: skip


def train_on_gpu(gpus: GpuSet, model_type: str, root: Path) -> dict[str, Any]:
    uuid = gpus.in_service[0].uuid
    before = gpus.snapshot()
    proc = subprocess.run([sys.executable, "-c", TRAIN_CHILD, model_type, str(root)],
                          env=_env(uuid), capture_output=True, text=True, timeout=400,
                          start_new_session=True)  # fmt: skip
    if proc.returncode != 0:
        return {"model_type": model_type, "error": proc.stderr[-2000:]}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["clean_after"] = not gpus.check_clean(before, tolerance_mb=256, timeout_s=15)
    return report


def _hold(uuid: str, mb: int, new_session: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_CHILD, str(mb)], env=_env(uuid),
                            stdout=subprocess.PIPE, text=True,
                            start_new_session=new_session)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "holding" not in line:
        raise RuntimeError("the memory-holding child did not start")
    return proc


def killed_mid_job(gpus: GpuSet) -> dict[str, Any]:
    uuid = gpus.in_service[0].uuid
    before = gpus.snapshot()
    proc = _hold(uuid, 4096, new_session=True)
    held = gpus.memory_used()[uuid] - before[0][uuid]
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    dirty = gpus.check_clean(before, tolerance_mb=256, timeout_s=15, poll_s=0.1)
    return {"held_mb": held, "clean": not dirty,
            "freed_within_s": round(time.monotonic() - started, 2)}  # fmt: skip


def escaped_process(gpus: GpuSet) -> dict[str, Any]:
    gpu = gpus.in_service[0]
    before = gpus.snapshot()
    stray = _hold(gpu.uuid, 2048, new_session=True)  # outside any job's group: survives
    try:
        dirty = gpus.check_clean(before, tolerance_mb=256, timeout_s=3, poll_s=0.5)
        return {"taken_out_of_service": [g.uuid for g in dirty] == [gpu.uuid],
                "problem": gpu.problem, "visible_after": gpus.visible_devices()}  # fmt: skip
    finally:
        stray.kill()
        stray.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    gpus = GpuSet.discover(nvidia_smi_query())
    report: dict[str, Any] = {"gpus": gpus.describe()}
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in ("resnet", "bert"):
            report[f"train_{model_type}"] = train_on_gpu(gpus, model_type, Path(tmp))
    report["killed_mid_job"] = killed_mid_job(gpus)
    report["escaped_process"] = escaped_process(gpus)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
