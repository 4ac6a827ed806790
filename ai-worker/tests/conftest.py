"""Worker tests run real worker processes against a real embedded Valkey server (the
``server`` and ``queue`` fixtures and ``wait_for`` come from ``trainyard.testing``)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.sample_data import ensure_samples
from trainyard.testing import wait_for
from trainyard.types import TERMINAL_STATES, JobType

pytest_plugins = ["trainyard.testing"]

WORKER_DIR = Path(__file__).resolve().parent.parent

os.environ.setdefault("OMP_NUM_THREADS", "1")


_SAMPLES: list[Path] = []


def _shared_samples() -> Path:
    """One sample data folder for the whole run (5,000 image files take seconds to write);
    the workers only read it."""
    if not _SAMPLES:
        root = Path(tempfile.mkdtemp(prefix="trainyard-samples-"))
        atexit.register(shutil.rmtree, root, True)
        ensure_samples(root)
        _SAMPLES.append(root)
    return _SAMPLES[0]


class WorkerFarm:
    """Starts worker processes (``python src/worker.py``) and stops them at the end."""

    def __init__(self, server: EmbeddedServer, root: Path) -> None:
        self.server = server
        self.root = root
        self.data_root = _shared_samples()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "WORKER_TYPE": "sklearn",
            "MODEL_FRAMEWORK": "sklearn",
            "REDIS_URL": self.server.url,
            "DATA_ROOT": str(self.data_root),
            "MODEL_STORE": str(self.root / "models"),
            "WORK_DIR": str(self.root / "work"),
            "LEASE_S": "3",
            "RENEW_EVERY_S": "0.5",
            "HEARTBEAT_S": "0.5",
            "REAP_EVERY_S": "0.5",
            "BLOCK_S": "1",
            "KILL_GRACE_S": "2",
            "BACKOFF_BASE_S": "0.2",
            "LOG_FORMAT": "text",
            **env,
        }
        proc = subprocess.Popen([sys.executable, "src/worker.py"], cwd=WORKER_DIR, env=full_env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)  # second signal: hand back at once
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def farm(server: EmbeddedServer, tmp_path: Path, queue: JobQueue) -> Iterator[WorkerFarm]:
    f = WorkerFarm(server, tmp_path)
    yield f
    f.stop_all()


def training_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 20, "random_state": 42},
        "description": "test",
        "requires_gpu": False,
        "framework_override": "sklearn",
    }
    request.update(overrides)
    return request


def submit(
    queue: JobQueue, request: dict[str, Any], job_type: JobType = JobType.TRAINING, **options: Any
) -> str:
    job_id, _ = queue.enqueue(job_type=job_type, runtime="sklearn", request=request,
                              **model_field(request, job_type), **options)  # fmt: skip
    return job_id


def model_field(request: dict[str, Any], job_type: JobType) -> dict[str, Any]:
    """An inference job's ``model_id`` field, as the API writes it (batches and affinity
    find a model's jobs by it)."""
    if job_type is JobType.INFERENCE and isinstance(request.get("model_id"), str):
        return {"extra_fields": {"model_id": request["model_id"]}}
    return {}


def wait_terminal(queue: JobQueue, job_id: str, timeout_s: float = 60) -> dict[str, str]:
    return wait_for(
        lambda: (j := queue.get_job(job_id)) and j["state"] in TERMINAL_STATES and j,
        timeout_s,
        f"job {job_id} to finish",
    )


def pids_matching(*needles: str) -> list[int]:
    """Processes whose command line contains every needle."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            pids.append(int(entry.name))
    return pids


def child_pids(job_id: str) -> list[int]:
    """Processes of this job's training child (found by its command line)."""
    return pids_matching("trainyard_worker.child", job_id)


def inference_host(worker_pid: int, timeout_s: float = 30) -> int:
    """The pid of a worker's live inference process (``inference_host FRAMEWORK N PID``)."""

    def find() -> int:
        for pid in pids_matching("trainyard_worker.inference_host", str(worker_pid)):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(worker_pid).encode() in argv and pid_alive(pid):
                return pid
        return 0

    return wait_for(find, timeout_s, "the inference process")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
