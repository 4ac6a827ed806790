"""``GET /metrics``: prometheus_client's exposition of the queue's gauges and of the
counters and histograms the Lua scripts keep in Redis, parsed back with
``prometheus_client.parser`` (not string matching: label order and number format are the
library's)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from conftest import heartbeat, run_job
from trainyard.engine import FinishItem, JobQueue
from trainyard.types import JobType
from trainyard_api.app import create_app
from trainyard_api.config import Settings

RF = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}

FAMILIES = {
    "trainyard_queue_depth": "gauge",
    "trainyard_running_jobs": "gauge",
    "trainyard_jobs": "gauge",
    "trainyard_live_workers": "gauge",
    "trainyard_oldest_wait_seconds": "gauge",
    "trainyard_jobs_finished": "counter",
    "trainyard_retries": "counter",
    "trainyard_dead_letters": "counter",
    "trainyard_queue_wait_seconds": "histogram",
    "trainyard_run_seconds": "histogram",
    "trainyard_inference_batch_size": "histogram",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics(client: TestClient, queue: JobQueue) -> None:
    client.post("/jobs/training", json=RF)
    heartbeat(queue, "w1", "tensorflow")
    resp = client.get("/metrics")
    assert resp.headers["content-type"] == CONTENT_TYPE_LATEST
    s = scrape(client)
    assert value(s, "trainyard_queue_depth", runtime="sklearn", priority="normal") == 1
    assert value(s, "trainyard_queue_depth", runtime="tensorflow", priority="high") == 0
    assert value(s, "trainyard_jobs", state="queued") == 1
    assert value(s, "trainyard_running_jobs", runtime="sklearn") == 0
    assert value(s, "trainyard_live_workers", runtime="tensorflow") == 1
    assert value(s, "trainyard_live_workers", runtime="sklearn") == 0
    # Rare events start at 0 (so that increase() sees their first one).
    assert value(s, "trainyard_dead_letters_total", runtime="tensorflow", job_type="inference") == 0
    assert value(s, "trainyard_retries_total", runtime="sklearn", job_type="training") == 0
    claim = queue.claim("w2", ["sklearn"], 30_000)
    assert claim is not None
    assert value(scrape(client), "trainyard_running_jobs", runtime="sklearn") == 1


def test_every_family_is_exposed_with_its_type_and_help(client: TestClient) -> None:
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == FAMILIES
    assert all(f.documentation for f in families.values())
    # Nothing from the process-global registry (its process and platform collectors).
    assert "process_" not in text and "python_info" not in text


def test_finished_jobs_retries_and_histograms(client: TestClient, queue: JobQueue) -> None:
    ok = client.post("/jobs/training", json=RF).json()["job_id"]
    run_job(queue, ok, "sklearn")
    bad = client.post("/jobs/training", json=RF).json()["job_id"]
    claim = queue.claim("w1", ["sklearn"], 30_000)
    assert claim is not None and claim.job_id == bad
    queue.finish(bad, claim.attempt_id, "retry", error="oom", error_kind="killed")
    queue.cancel(bad)  # retrying: cancelled in its backoff
    doomed, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request=RF,
                              max_attempts=1)  # fmt: skip
    claim = queue.claim("w1", ["sklearn"], 30_000)
    assert claim is not None and claim.job_id == doomed
    queue.finish(doomed, claim.attempt_id, "retry", error="crash", error_kind="crashed")

    s = scrape(client)
    finished = "trainyard_jobs_finished_total"
    base = {"runtime": "sklearn", "job_type": "training"}
    assert value(s, finished, **base, outcome="succeeded", error_kind="") == 1
    assert value(s, finished, **base, outcome="cancelled", error_kind="cancelled") == 1
    assert value(s, finished, **base, outcome="dead", error_kind="crashed") == 1
    assert value(s, "trainyard_retries_total", **base) == 1
    assert value(s, "trainyard_dead_letters_total", **base) == 1
    for name in ("trainyard_queue_wait_seconds", "trainyard_run_seconds"):
        labels = {**base, "outcome": "succeeded"}
        assert value(s, f"{name}_count", **labels) == 1
        assert value(s, f"{name}_bucket", **labels, le="+Inf") == 1
        total = value(s, f"{name}_sum", **labels)
        assert total is not None and 0 <= total < 5
    # Cancelled in its backoff: counted as finished, in neither histogram.
    cancelled = {**base, "outcome": "cancelled"}
    assert value(s, "trainyard_run_seconds_count", **cancelled) is None


def test_inference_batch_sizes(client: TestClient, queue: JobQueue) -> None:
    ids = []
    for _ in range(3):
        job_id, _ = queue.enqueue(job_type=JobType.INFERENCE, runtime="sklearn",
                                  request={"model_id": "m1", "input_data": "1,2"},
                                  extra_fields={"model_id": "m1"})  # fmt: skip
        ids.append(job_id)
    first = queue.claim("w1", ["sklearn"], 30_000)
    assert first is not None
    claims = [first, *queue.claim_batch("w1", "sklearn", "m1", 30_000, 4)]
    assert len(claims) == 3
    queue.finish_many([FinishItem(c.job_id, c.attempt_id, "succeeded") for c in claims])

    s = scrape(client)
    name = "trainyard_inference_batch_size"
    assert value(s, f"{name}_count", runtime="sklearn") == 1
    assert value(s, f"{name}_sum", runtime="sklearn") == 3
    assert value(s, f"{name}_bucket", runtime="sklearn", le="2.0") == 0
    assert value(s, f"{name}_bucket", runtime="sklearn", le="4.0") == 1


def test_oldest_wait(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=RF).json()["job_id"]
    queue.redis.hset(queue.keys.job(job_id), "ready_at", queue.server_time_ms() - 5000)
    s = scrape(client)
    waited = value(s, "trainyard_oldest_wait_seconds", runtime="sklearn")
    assert waited is not None and 5 <= waited < 30
    assert value(s, "trainyard_oldest_wait_seconds", runtime="tensorflow") == 0


def test_every_replica_reports_the_same_totals(
    client: TestClient, queue: JobQueue, settings: Settings
) -> None:
    job_id = client.post("/jobs/training", json=RF).json()["job_id"]
    run_job(queue, job_id, "sklearn")
    with TestClient(create_app(settings)) as replica:
        assert scrape(replica) == scrape(client)


def test_metrics_when_redis_is_down(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as c:
        resp = c.get("/metrics")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"


def test_openapi_describes_the_text_exposition(client: TestClient) -> None:
    op: dict[str, Any] = client.app.openapi()["paths"]["/metrics"]["get"]  # type: ignore[attr-defined]
    assert CONTENT_TYPE_LATEST in op["responses"]["200"]["content"]
    assert "503" in op["responses"]
