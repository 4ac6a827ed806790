"""Workers, queues, routing and health (metrics: test_metrics.py)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from conftest import heartbeat
from trainyard.engine import JobQueue
from trainyard.routing import MODEL_TYPES, RUNTIMES

RF = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}


def test_workers(client: TestClient, queue: JobQueue) -> None:
    assert client.get("/workers").json() == {"workers": []}
    heartbeat(queue, "w1", "sklearn", loaded_models='["rf1"]', state="busy", current_job="j1")
    workers = client.get("/workers").json()["workers"]
    assert len(workers) == 1
    w = workers[0]
    assert w["worker_id"] == "w1" and w["runtime"] == "sklearn" and w["pid"] == 1234
    assert w["loaded_models"] == ["rf1"] and w["state"] == "busy" and w["current_job"] == "j1"
    assert w["last_seen"] and w["started_at"].startswith("2023-11-14")
    assert w["gpus"] == [] and w["packages"] == {}


def test_a_gpu_workers_cards_and_their_service_state(client: TestClient, queue: JobQueue) -> None:
    # The shape GpuSet.describe() publishes in the heartbeat.
    cards = [
        {"index": "0", "uuid": "GPU-a", "name": "NVIDIA H200", "memory_total_mb": 143771,
         "in_service": True, "problem": None},
        {"index": "1", "uuid": "GPU-b", "name": "NVIDIA H200", "memory_total_mb": 143771,
         "in_service": False, "problem": "processes still on the GPU after the job: [4242]"},
    ]  # fmt: skip
    packages = {"torch": "2.1.2+cu121", "torchvision": "0.16.2+cu121"}
    heartbeat(queue, "g1", "pytorch-2.1-gpu", gpus=json.dumps(cards), state="idle",
              packages=json.dumps(packages))  # fmt: skip
    worker = client.get("/workers").json()["workers"][0]
    assert worker["gpus"] == cards and worker["packages"] == packages


def test_stale_worker_is_not_live(client: TestClient, queue: JobQueue) -> None:
    heartbeat(queue, "old", "sklearn")
    now = queue.server_time_ms()
    queue.redis.zadd(queue.keys.workers, {"old": now - 60_000})  # silent for a minute
    assert client.get("/workers").json() == {"workers": []}


def test_queues(client: TestClient, queue: JobQueue) -> None:
    client.post("/jobs/training", json={**RF, "priority": "high"})
    client.post("/jobs/training", json=RF)
    client.post("/jobs/training", json=RF)
    client.post("/jobs/training", json={"model_type": "bert", "data_path": "/data/"})
    heartbeat(queue, "w1", "sklearn")
    body = client.get("/queues").json()
    assert set(body["queues"]) == set(RUNTIMES)
    assert body["queues"]["sklearn"] == {
        "high": 1,
        "normal": 2,
        "low": 0,
        "total": 3,
        "live_workers": 1,
    }
    assert body["queues"]["pytorch-2.1"]["total"] == 1
    assert body["queues"]["pytorch-2.1"]["live_workers"] == 0
    assert body["jobs_by_state"]["queued"] == 4
    assert body["jobs_by_state"]["succeeded"] == 0


def test_routing(client: TestClient) -> None:
    table = client.get("/routing").json()
    assert {r["name"] for r in table["runtimes"]} == set(RUNTIMES)
    assert {m["model_type"] for m in table["model_types"]} == set(MODEL_TYPES)


def test_health(client: TestClient, queue: JobQueue) -> None:
    assert client.get("/health").json() == {"status": "ok", "redis": "ok", "workers": 0}
    heartbeat(queue, "w1", "sklearn")
    assert client.get("/health").json()["workers"] == 1


def test_health_when_redis_is_down(settings: object) -> None:
    from trainyard_api.app import create_app
    from trainyard_api.config import Settings

    assert isinstance(settings, Settings)
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as c:
        resp = c.get("/health")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
        resp = c.get("/jobs")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
