"""Prometheus metrics through ``prometheus_client``, from a registry of this route's own
(never the process-global one, which would add the client's process metrics and keep
state between requests).

Everything is read from Redis at scrape time: the gauges from the queue's indexes, the
counters and histograms from the hashes the Lua scripts keep (``trainyard.stats``). The
totals are the queue's, so every backend replica reports the same numbers: aggregate
across replicas with ``max()``, not ``sum()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from trainyard.engine import JobQueue
from trainyard.routing import RUNTIMES
from trainyard.stats import (
    CounterFamily,
    HistogramFamily,
    QueueStats,
    read_oldest_waits,
    read_stats,
)
from trainyard.types import JobType

from ..deps import QueueDep, SettingsDep
from ..errors import ApiError, error_responses

__all__ = ["CONTENT_TYPE", "MetricsSnapshot", "QueueCollector", "read_snapshot", "router"]

router = APIRouter(tags=["metrics"])

CONTENT_TYPE = CONTENT_TYPE_LATEST
PRIORITIES = ("high", "normal", "low")


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything one scrape reports, read before any of it is rendered (so a Redis
    error becomes a 503, not a half-written exposition)."""

    depths: dict[str, dict[str, int]]
    running: dict[str, int]
    states: dict[str, int]
    live_workers: dict[str, int]
    oldest_wait_s: dict[str, float]
    stats: QueueStats


def read_snapshot(queue: JobQueue, worker_ttl_ms: int) -> MetricsSnapshot:
    live = Counter(w.get("runtime", "") for w in queue.live_workers(worker_ttl_ms))
    return MetricsSnapshot(
        depths=queue.queue_depths(),
        running=queue.running_by_runtime(),
        states=queue.count_by_state(),
        live_workers={rt: live.get(rt, 0) for rt in RUNTIMES},
        oldest_wait_s=read_oldest_waits(queue.redis, queue.keys, list(RUNTIMES)),
        stats=read_stats(queue.redis, queue.keys),
    )


def _counter(
    name: str, help_text: str, family: CounterFamily, zeros: tuple[tuple[str, ...], ...] = ()
) -> CounterMetricFamily:
    """``zeros``: label sets reported as 0 until counted, so that the first increment of a
    rare event (a dead letter) shows in ``increase()``, which needs a series before it."""
    metric = CounterMetricFamily(name, help_text, labels=family.label_names)
    values = {labels: 0 for labels in zeros}
    values.update((sample.labels, sample.value) for sample in family.samples)
    for labels, value in sorted(values.items()):
        metric.add_metric(labels, value)
    return metric


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _histogram(name: str, help_text: str, family: HistogramFamily) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(name, help_text, labels=family.label_names)
    for h in family.series:
        buckets = [(_le(bound), float(count)) for bound, count in h.buckets]
        metric.add_metric(h.labels, buckets, h.sum)
    return metric


class QueueCollector(Collector):
    """Yields one snapshot's metric families (a collector per scrape)."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        depth = GaugeMetricFamily(
            "trainyard_queue_depth",
            "Jobs waiting in a runtime's ready queue.",
            labels=("runtime", "priority"),
        )
        for runtime, counts in snap.depths.items():
            for priority in PRIORITIES:
                depth.add_metric((runtime, priority), counts[priority])
        yield depth
        running = GaugeMetricFamily(
            "trainyard_running_jobs",
            "Jobs a worker of the runtime is running now (scale-in must not drop these).",
            labels=("runtime",),
        )
        for runtime, n in snap.running.items():
            running.add_metric((runtime,), n)
        yield running
        jobs = GaugeMetricFamily(
            "trainyard_jobs", "Jobs by state (all jobs Redis still holds).", labels=("state",)
        )
        for state, n in snap.states.items():
            jobs.add_metric((state,), n)
        yield jobs
        live = GaugeMetricFamily(
            "trainyard_live_workers",
            "Workers with a recent heartbeat, by runtime.",
            labels=("runtime",),
        )
        for runtime, n in snap.live_workers.items():
            live.add_metric((runtime,), n)
        yield live
        oldest = GaugeMetricFamily(
            "trainyard_oldest_wait_seconds",
            "How long the longest-waiting job first in line in a priority band of the "
            "runtime's ready queue has waited (0: none waits).",
            labels=("runtime",),
        )
        for runtime, seconds in snap.oldest_wait_s.items():
            oldest.add_metric((runtime,), seconds)
        yield oldest
        stats = snap.stats
        per_type = tuple((rt, jt.value) for rt in RUNTIMES for jt in JobType)
        yield _counter(
            "trainyard_jobs_finished",
            "Jobs that reached a terminal state, by outcome and error kind (counted in Redis).",
            stats.finished,
        )
        yield _counter(
            "trainyard_retries",
            "Failed attempts that were retried (a lost worker's job requeued included).",
            stats.retries,
            per_type,
        )
        yield _counter(
            "trainyard_dead_letters",
            "Jobs that ended dead: out of attempts (redrive them from /dead-letters).",
            stats.dead_letters,
            per_type,
        )
        yield _histogram(
            "trainyard_queue_wait_seconds",
            "Wait in the ready queue before the attempt that ended the job (to its end, "
            "for a job that never started), by outcome.",
            stats.queue_wait,
        )
        yield _histogram(
            "trainyard_run_seconds",
            "Run time of the attempt that ended the job, by outcome.",
            stats.run_time,
        )
        yield _histogram(
            "trainyard_inference_batch_size",
            "Inference jobs ended together by one finish call of a worker (one batch).",
            stats.batch_size,
        )


@router.get(
    "/metrics",
    # No response_class: it would give the error responses its media type in OpenAPI.
    response_model=None,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        **error_responses(503),
    },
    summary="Prometheus metrics",
)
def metrics(queue: QueueDep, settings: SettingsDep) -> Response:
    try:
        snapshot = read_snapshot(queue, int(settings.worker_ttl_s * 1000))
    except RedisError as exc:
        raise ApiError(503, f"redis: {exc}", field="redis") from exc
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(snapshot))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
