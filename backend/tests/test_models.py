"""Models registered by training jobs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from conftest import assert_error, register_model
from trainyard.engine import JobQueue


def test_models_list_and_get(client: TestClient, queue: JobQueue) -> None:
    assert client.get("/models").json() == {"models": []}
    job_a = register_model(queue, "rf_a")
    register_model(queue, "rf_b")
    models = client.get("/models").json()["models"]
    assert {m["model_id"] for m in models} == {"rf_a", "rf_b"}

    one = client.get("/models/rf_a").json()
    assert one["job_id"] == job_a
    assert one["runtime"] == "sklearn"
    assert one["metrics"] == {"accuracy": 0.9}
    assert one["created_at"].startswith("2025-01-01T00:00:00")
    # The training job that made it names the model.
    assert client.get(f"/jobs/{job_a}/status").json()["model_id"] == "rf_a"


def test_model_errors(client: TestClient, queue: JobQueue) -> None:
    assert_error(client.get("/models/missing_model"), 404, "not_found", "model_id")
    assert_error(client.get("/models/bad id"), 422, "invalid_request", "model_id")


def test_malformed_model_record_is_skipped_in_list(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "good")
    queue.redis.set(queue.keys.model("bad"), '{"model_id": "bad"}')
    queue.redis.zadd(queue.keys.models, {"bad": 1})
    assert [m["model_id"] for m in client.get("/models").json()["models"]] == ["good"]


def test_fine_tuning_routes_to_a_runtime_that_can_load_the_base_model(
    client: TestClient, queue: JobQueue
) -> None:
    register_model(queue, "bert_base", runtime="pytorch-2.0", model_type="bert")
    body = {"model_type": "bert", "data_path": "/data/sentiment_analysis.csv",
            "base_model_id": "bert_base"}  # fmt: skip
    accepted = client.post("/jobs/training", json=body)
    assert accepted.status_code == 202, accepted.text
    # bert's default runtime is pytorch-2.1; the base model keeps it on 2.0.
    assert accepted.json()["runtime"] == "pytorch-2.0"
    gpu = client.post("/jobs/training", json={**body, "requires_gpu": True})
    assert gpu.json()["runtime"] == "pytorch-2.0-gpu"

    other = client.post("/jobs/training", json={**body, "framework_override": "pytorch-2.1"})
    err = assert_error(other, 422, "invalid_request", "base_model_id")
    assert "pytorch-2.0" in err["message"]
    wrong_type = client.post("/jobs/training", json={**body, "model_type": "transformer"})
    assert_error(wrong_type, 422, "invalid_request", "base_model_id")
    missing = client.post("/jobs/training", json={**body, "base_model_id": "nope"})
    assert_error(missing, 404, "not_found", "base_model_id")
