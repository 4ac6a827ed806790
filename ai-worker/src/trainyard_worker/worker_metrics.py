"""The worker's own Prometheus metrics, on a port of its own (``METRICS_PORT``; 0, the
default, serves nothing).

The backend's ``/metrics`` reports the queue as Redis sees it (one answer from every
replica); this port reports what only the worker process knows:

- ``trainyard_worker_info{worker_id,runtime,device}``: always 1, to join on;
- ``trainyard_worker_jobs_total{runtime,job_type,outcome}``: attempts this worker ended,
  by how: ``succeeded``, ``failed``, ``cancelled``, ``retry`` (it failed and was given
  back to be retried or to go dead), ``lost`` (its lease was gone: another attempt owns
  the job) or ``released`` (handed back at shutdown, not counted as an attempt);
- ``trainyard_worker_busy``: 1 while it holds a job, else 0;
- ``trainyard_worker_loaded_models``: models its inference process holds;
- on a GPU runtime, per GPU it owns (``gpu`` = nvidia-smi's index):
  ``trainyard_worker_gpu_memory_used_bytes``, ``..._memory_total_bytes`` and
  ``..._utilization_ratio`` (0..1), read through nvidia-smi when Prometheus scrapes.

Everything is read at scrape time or counted in memory: serving costs the supervisor
nothing between scrapes. The registry is this module's own, not prometheus_client's
global one, so nothing another import registers leaks into the exposition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trainyard.routing import Runtime
from trainyard.types import JobType

from .gpu import GpuSet, GpuUnavailable

__all__ = ["JOB_OUTCOMES", "WorkerMetrics"]

log = logging.getLogger("trainyard.worker")

# The values of the outcome label (see the module's docstring).
JOB_OUTCOMES = ("succeeded", "failed", "cancelled", "retry", "lost", "released")

_MIB = 1024 * 1024


class WorkerMetrics:
    """The metrics of one worker process, and the HTTP server that exposes them."""

    def __init__(
        self,
        worker_id: str,
        runtime: Runtime,
        gpus: GpuSet | None,
        *,
        busy: Callable[[], bool],  # whether a job is held now (called at scrape time)
        loaded_models: Callable[[], int],  # models loaded now (called at scrape time)
    ) -> None:
        self.runtime = runtime.name
        self.registry = CollectorRegistry()
        info = Gauge("trainyard_worker_info", "This worker: always 1, labelled with what it is",
                     ["worker_id", "runtime", "device"], registry=self.registry)  # fmt: skip
        info.labels(worker_id, runtime.name, runtime.device).set(1)
        self._jobs = Counter(
            "trainyard_worker_jobs", "Job attempts this worker ended, by how",
            ["runtime", "job_type", "outcome"], registry=self.registry,
        )  # fmt: skip
        for job_type in JobType:  # every series from 0, so that the first job shows in rate()
            for outcome in JOB_OUTCOMES:
                self._jobs.labels(runtime.name, job_type.value, outcome)
        Gauge("trainyard_worker_busy", "1 while this worker holds a job, else 0",
              registry=self.registry).set_function(lambda: float(busy()))  # fmt: skip
        Gauge("trainyard_worker_loaded_models", "Models this worker's inference process holds",
              registry=self.registry).set_function(lambda: float(loaded_models()))  # fmt: skip
        if gpus is not None:
            self.registry.register(_GpuCollector(gpus))
        self._server: WSGIServer | None = None

    def job_finished(self, job_type: str, outcome: str) -> None:
        """Count one attempt this worker ended (``outcome``: one of ``JOB_OUTCOMES``)."""
        self._jobs.labels(self.runtime, job_type, outcome).inc()

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` (any path, in fact) from a daemon thread; returns the port.
        Raises ``OSError`` when the address cannot be bound."""
        self._server, _ = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _GpuCollector(Collector):
    """GPU memory and utilisation, read through nvidia-smi when Prometheus scrapes."""

    def __init__(self, gpus: GpuSet) -> None:
        self._gpus = gpus
        self._failing = False  # log a failing nvidia-smi once, not on every scrape

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("trainyard_worker_gpu_memory_used_bytes",
                              "GPU memory in use (every process on the GPU)", labels=["gpu"]),
            GaugeMetricFamily("trainyard_worker_gpu_memory_total_bytes", "GPU memory size",
                              labels=["gpu"]),
            GaugeMetricFamily("trainyard_worker_gpu_utilization_ratio",
                              "Share of the last sample period a kernel ran on the GPU (0..1)",
                              labels=["gpu"]),
        )  # fmt: skip

    def describe(self) -> Iterable[Metric]:
        # The names without a read: registering must not run nvidia-smi.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        used, total, utilization = self._families()
        try:
            usage = self._gpus.usage()
        except GpuUnavailable as exc:
            if not self._failing:
                log.warning("metrics: GPU read failed: %s", exc)
            self._failing = True
            return []  # no GPU samples this scrape, rather than stale ones
        self._failing = False
        for gpu in usage:
            used.add_metric([gpu.index], gpu.memory_used_mb * _MIB)
            total.add_metric([gpu.index], gpu.memory_total_mb * _MIB)
            if gpu.utilization is not None:
                utilization.add_metric([gpu.index], gpu.utilization)
        return [used, total, utilization]
