"""The fork server on the PyTorch runtime (its environments): a child forked after the
server imported torch, torchvision and transformers trains as a fresh process does (the
same losses, its own intra-op thread pool, its own unseeded random state), and a real
image training job runs forked through the queue. No CUDA: the server never touches it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from forkserver_probe import probe_env, read_report, training_spec, write_spec
from runtime_support import require_framework

from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.sample_images import CIFAR10_CLASSES, write_image_folder
from trainyard.types import JobType
from trainyard_worker.launcher import ForkedChild, TrainingLauncher

torch = require_framework("torch")

PROBE = "forkserver_probe"
WARM = ["torch", "torchvision", "transformers", "trainyard_worker.runtimes.torch_vision"]


def _run(launcher: TrainingLauncher, folder: Path, name: str) -> dict[str, object]:
    spec, report_path = write_spec(folder, name, watch_modules=WARM, torch=True)
    child = launcher.spawn(spec, probe_env())
    assert child.stderr is not None
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 0, stderr
    return {"forked": isinstance(child, ForkedChild), **read_report(report_path)}


def test_a_forked_child_trains_a_torch_model_as_a_fresh_one_does(tmp_path: Path) -> None:
    forking = TrainingLauncher("pytorch", probe_env(), os.getpid(), True, child_module=PROBE)
    fresh = TrainingLauncher("pytorch", probe_env(), os.getpid(), False, child_module=PROBE)
    forking.start()
    assert forking.wait_ready(180), "the fork server did not get ready"
    try:
        first, second = _run(forking, tmp_path, "job-1"), _run(forking, tmp_path, "job-2")
    finally:
        forking.close()
    baseline = _run(fresh, tmp_path, "job-3")
    assert first["forked"] and second["forked"] and not baseline["forked"]
    assert first["loaded_at_entry"] == WARM and baseline["loaded_at_entry"] == []
    for forked in (first, second):
        trained, reference = forked["torch"], baseline["torch"]
        assert isinstance(trained, dict) and isinstance(reference, dict)
        assert trained["losses"] == reference["losses"]  # bit for bit
        assert trained["losses"][-1] < trained["losses"][0] / 100
        assert trained["threads"] == 2
    # The default generator is reseeded per child, as each fresh process seeds its own.
    assert first["torch"]["unseeded"] != second["torch"]["unseeded"]  # type: ignore[index]


def test_a_real_image_training_job_runs_forked(
    server: EmbeddedServer, queue: JobQueue, tmp_path: Path
) -> None:
    write_image_folder(tmp_path / "data" / "four", CIFAR10_CLASSES[:4], per_class=4, size=32,
                       seed=4)  # fmt: skip
    hyperparameters = {"architecture": "resnet18", "epochs": 2, "batch_size": 8}
    request = {
        "model_type": "resnet",
        "data_path": "/data/four",
        "hyperparameters": hyperparameters,
    }
    queue.enqueue(job_type=JobType.TRAINING, runtime="pytorch-2.1", request=request)
    claim = queue.claim("w1", ["pytorch-2.1"], 60_000)
    assert claim is not None
    spec = training_spec(tmp_path / "work", server.url, queue.keys.namespace,
                         (claim.job_id, claim.attempt_id), "pytorch", "image",
                         tmp_path / "data", request)  # fmt: skip
    launcher = TrainingLauncher("pytorch", probe_env(), os.getpid(), True)
    launcher.start()
    try:
        child = launcher.spawn(spec, probe_env())
        assert isinstance(child, ForkedChild)
        assert child.stderr is not None
        stderr = child.stderr.read()
        assert child.wait(timeout=180) == 0, stderr
    finally:
        launcher.close()
    result = json.loads((tmp_path / "work" / "result.json").read_text())
    assert result["ok"] is True and result["label_names"] == list(CIFAR10_CLASSES[:4])
    assert (tmp_path / "work" / "out" / "model.safetensors").is_file()
    progress = [event for event in queue.events(claim.job_id) if event.kind == "progress"]
    ends = [event.data for event in progress if event.data["step"] == event.data["steps"]]
    assert [(e["epoch"], e["phase"]) for e in ends] == [(1, "train"), (2, "train")]


def test_a_server_whose_imports_touched_cuda_never_forks(tmp_path: Path) -> None:
    # The child module tells torch it is in a bad fork, as after torch.cuda.is_available().
    launcher = TrainingLauncher("pytorch", probe_env(), os.getpid(), True,
                                child_module="forkserver_poisoned")  # fmt: skip
    launcher.start()
    assert not launcher.wait_ready(180)  # it exits instead (EXIT_UNSAFE)
    spec, _ = write_spec(tmp_path, "job-1")
    child = launcher.spawn(spec, probe_env())
    assert isinstance(child, subprocess.Popen) and child.wait(timeout=120) == 0
    assert not launcher.forking and launcher.server_pid is None  # given up for good
    launcher.close()
