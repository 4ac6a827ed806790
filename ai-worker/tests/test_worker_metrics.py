"""The worker's own metrics port (``METRICS_PORT``): a real worker process runs real jobs
against the embedded Valkey and a scrape of its port says so; without the setting no port
is opened. The GPU families are read through the same nvidia-smi queries the worker makes,
answered here from a table (no GPU on this machine; see test_gpu.py)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import WorkerFarm, submit, training_request, wait_for, wait_terminal
from trainyard.embedded import free_port
from trainyard.engine import JobQueue
from trainyard.routing import RUNTIMES
from trainyard.types import JobType
from trainyard_worker.gpu import GpuSet, GpuUnavailable
from trainyard_worker.worker_metrics import WorkerMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return _parse(reply.read().decode())


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _jobs(samples: Samples, job_type: str, outcome: str) -> float | None:
    return _value(samples, "trainyard_worker_jobs_total", runtime="sklearn",
                  job_type=job_type, outcome=outcome)  # fmt: skip


def test_the_metrics_port_counts_the_jobs_the_worker_runs(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    port = free_port()
    worker = farm.start(METRICS_PORT=str(port), WORKER_ID="metrics-worker")
    first = wait_for(lambda: _try_scrape(port), 60, "the metrics port to answer")
    # Every series from 0 (so that rate() sees the first job), nothing loaded, idle.
    assert _jobs(first, "training", "succeeded") == 0
    assert _value(first, "trainyard_worker_info", worker_id="metrics-worker",
                  runtime="sklearn", device="cpu") == 1  # fmt: skip
    assert _value(first, "trainyard_worker_loaded_models") == 0

    job_id = submit(queue, training_request(model_name="rf_metrics"), timeout_s=120)
    assert wait_terminal(queue, job_id)["state"] == "succeeded"
    # The count follows the finish write, a moment after the state the test reads.
    wait_for(lambda: _jobs(_scrape(port), "training", "succeeded") == 1, 10, "the count")

    infer = submit(queue, {"model_id": "rf_metrics", "input_data": ["1,2,3,4"]},
                   JobType.INFERENCE)  # fmt: skip
    assert wait_terminal(queue, infer)["state"] == "succeeded"
    wait_for(lambda: _jobs(_scrape(port), "inference", "succeeded") == 1, 10, "the count")
    samples = wait_for(
        lambda: (s := _scrape(port))[("trainyard_worker_busy", frozenset())] == 0 and s,
        10,
        "the worker to be idle",
    )
    assert _value(samples, "trainyard_worker_loaded_models") == 1
    assert _jobs(samples, "training", "failed") == 0
    # A CPU worker reports no GPU families.
    assert not [name for name, _ in samples if "gpu" in name]
    assert worker.poll() is None


def _try_scrape(port: int) -> Samples | None:
    try:
        return _scrape(port)
    except OSError:
        return None


def test_no_port_is_opened_by_default(queue: JobQueue, farm: WorkerFarm) -> None:
    worker = farm.start()
    wait_for(lambda: queue.live_workers(60_000), 60, "the worker to register")
    assert _listening_sockets(worker.pid) == set()


def test_a_taken_metrics_port_stops_the_worker_at_start(farm: WorkerFarm) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        worker = farm.start(METRICS_PORT=str(taken.getsockname()[1]))
        assert worker.wait(timeout=60) == 2


def _listening_sockets(pid: int) -> set[int]:
    """Inodes of the TCP sockets this process (not its children) listens on."""
    owned = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            owned.add(int(target[8:-1]))
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cells = line.split()
            if cells[3] == "0A":  # TCP_LISTEN
                listening.add(int(cells[9]))
    return owned & listening


class Board:
    """One card; its utilisation a test sets (None: the board says "[N/A]")."""

    def __init__(self) -> None:
        self.utilization: int | None = 37
        self.broken = False

    def query(self, args: Sequence[str]) -> str:
        if self.broken:
            raise GpuUnavailable("nvidia-smi failed (exit 15): GPU is lost")
        if args[0].startswith("--query-gpu=index"):
            return "0, GPU-a, NVIDIA H200, 143771\n"
        if args[0] == "--query-gpu=uuid,memory.used,memory.total,utilization.gpu":
            util = "[N/A]" if self.utilization is None else str(self.utilization)
            return f"GPU-a, 1024, 143771, {util}\n"
        raise AssertionError(f"unexpected query {args}")


def test_gpu_memory_and_utilisation_are_read_at_scrape_time() -> None:
    board = Board()
    metrics = WorkerMetrics("w", RUNTIMES["pytorch-2.1-gpu"], GpuSet.discover(board.query),
                            busy=lambda: True, loaded_models=lambda: 2)  # fmt: skip
    samples = _parse(generate_latest(metrics.registry).decode())
    mib = 1024 * 1024
    assert _value(samples, "trainyard_worker_gpu_memory_used_bytes", gpu="0") == 1024 * mib
    assert _value(samples, "trainyard_worker_gpu_memory_total_bytes", gpu="0") == 143771 * mib
    assert _value(samples, "trainyard_worker_gpu_utilization_ratio", gpu="0") == 0.37
    assert _value(samples, "trainyard_worker_busy") == 1
    assert _value(samples, "trainyard_worker_info", worker_id="w",
                  runtime="pytorch-2.1-gpu", device="gpu") == 1  # fmt: skip

    board.utilization = None  # no number: no sample, rather than a made-up 0
    samples = _parse(generate_latest(metrics.registry).decode())
    assert _value(samples, "trainyard_worker_gpu_utilization_ratio", gpu="0") is None
    assert _value(samples, "trainyard_worker_gpu_memory_used_bytes", gpu="0") == 1024 * mib

    board.broken = True  # a failing nvidia-smi costs the GPU samples, not the scrape
    samples = _parse(generate_latest(metrics.registry).decode())
    assert not [name for name, _ in samples if "gpu" in name]
    assert _value(samples, "trainyard_worker_loaded_models") == 2
