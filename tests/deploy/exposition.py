"""The metric families Trainyard really exposes, rendered by the code itself: the backend's
``GET /metrics`` (the app behind a TestClient, on an embedded Valkey that has seen a few
jobs run through the queue engine, so the labelled families have samples) and the worker's
metrics registry (rendered by the sklearn worker's python, ``TRAINYARD_WORKER_PYTHON``:
the worker's packages are not importable from the backend environment).

Used by test_grafana (every dashboard query names a metric that exists) and test_k8s (the
KEDA queries name gauges the backend emits)."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploy_helpers import REPO
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Family", "backend_families", "parse_families", "sample_names", "worker_families"]

# The sample names a family of each type exposes (and a dashboard may query).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass
class Family:
    name: str
    type: str  # gauge, counter, histogram, ...
    labels: set[str] = field(default_factory=set)  # from its samples, without `le`
    samples: int = 0


def parse_families(text: str) -> dict[str, Family]:
    families = {}
    for metric in text_string_to_metric_families(text):
        family = Family(metric.name, metric.type)
        for sample in metric.samples:
            family.samples += 1
            family.labels.update(k for k in sample.labels if k != "le")
        families[metric.name] = family
    return families


def sample_names(families: dict[str, Family]) -> dict[str, Family]:
    """Each name a query may use -> its family (``X_total`` of a counter ``X``, the
    ``_bucket``/``_sum``/``_count`` of a histogram, a gauge's own name)."""
    names = {}
    for family in families.values():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family
    return names


def _history(url: str) -> None:
    """Jobs through every ending, a waiting job and a live worker: the labelled families
    get samples (their label names are what the queries are checked against)."""
    from trainyard.connection import connect
    from trainyard.engine import JobQueue
    from trainyard.engine_types import Outcome
    from trainyard.types import JobType

    queue = JobQueue(connect(url))
    lease = 30_000

    def run(job_type: JobType, outcome: Outcome) -> None:
        claim = queue.claim("w-1", ["sklearn"], lease)
        assert claim is not None
        result = {"batch_size": 1} if job_type is JobType.INFERENCE else {}
        ok = outcome == "succeeded"
        queue.finish(claim.job_id, claim.attempt_id, outcome,
                     result=result if ok else None, error_kind="" if ok else "crashed")  # fmt: skip

    queue.heartbeat("w-1", {"runtime": "sklearn", "state": "idle"}, lease)
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={"model_type": "x"})
    run(JobType.TRAINING, "succeeded")
    queue.enqueue(job_type=JobType.INFERENCE, runtime="sklearn", request={"model_id": "m"},
                  extra_fields={"model_id": "m"})  # fmt: skip
    run(JobType.INFERENCE, "succeeded")
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={}, max_attempts=2)
    run(JobType.TRAINING, "retry")  # retried once (no backoff) ...
    run(JobType.TRAINING, "retry")  # ... then dead
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    run(JobType.TRAINING, "failed")
    cancelled, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    queue.cancel(cancelled)
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})  # still waiting


@functools.cache
def backend_families() -> dict[str, Family]:
    from fastapi.testclient import TestClient

    from trainyard.embedded import EmbeddedServer
    from trainyard_api.app import create_app
    from trainyard_api.config import Settings

    with tempfile.TemporaryDirectory(prefix="trainyard-metrics-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        with EmbeddedServer(Path(tmp) / "valkey") as server:
            _history(server.url)
            settings = Settings(redis_url=server.url, data_root=data, _env_file=None)  # type: ignore[call-arg]
            with TestClient(create_app(settings)) as client:
                reply = client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return parse_families(reply.text)


# Run by the worker's python: its registry as a GPU worker (nvidia-smi's answers from a
# table: no GPU is needed to name the families), after one job.
_RENDER_WORKER = """
from prometheus_client import generate_latest
from trainyard.routing import RUNTIMES
from trainyard_worker.gpu import Gpu, GpuSet
from trainyard_worker.worker_metrics import WorkerMetrics

def smi(args):
    return "GPU-a, 1024, 81559, 37\\n"

gpus = GpuSet([Gpu("0", "GPU-a", "GPU", 81559)], smi)
metrics = WorkerMetrics("w-1", RUNTIMES["pytorch-2.1-gpu"], gpus, busy=lambda: True,
                        loaded_models=lambda: 1)
metrics.job_finished("training", "succeeded")
print(generate_latest(metrics.registry).decode())
"""


@functools.cache
def worker_families() -> dict[str, Family] | None:
    """None when ``TRAINYARD_WORKER_PYTHON`` is not set (scripts/test.sh sets it)."""
    python = os.environ.get("TRAINYARD_WORKER_PYTHON")
    if not python:
        return None
    src = str(REPO / "ai-worker" / "src")
    path = os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([python, "-c", _RENDER_WORKER], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return parse_families(done.stdout)
