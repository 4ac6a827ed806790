"""Bad input gets one error shape naming the field; the OpenAPI schema is complete."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import assert_error, register_model
from trainyard.engine import JobQueue
from trainyard.schema import InferenceJobRequest, TrainingJobRequest

RF: dict[str, Any] = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "hyperparameters": {"n_estimators": 10},
}

BAD_TRAINING: list[tuple[str, dict[str, Any], str]] = [
    ("missing field", {"model_type": "bert"}, "data_path"),
    ("wrong type", {**RF, "requires_gpu": "very"}, "requires_gpu"),
    ("hyperparameters not an object", {**RF, "hyperparameters": [1, 2]}, "hyperparameters"),
    ("nested hyperparameters", {**RF, "hyperparameters": {"opt": {"lr": 1}}}, "hyperparameters"),
    ("unknown model_type", {**RF, "model_type": "gpt5"}, "model_type"),
    ("unknown framework_override", {**RF, "framework_override": "jax"}, "framework_override"),
    (
        "gpu on a cpu runtime",
        {**RF, "model_type": "resnet", "requires_gpu": True, "framework_override": "pytorch-2.0"},
        "requires_gpu",
    ),
    ("gpu with no gpu runtime", {**RF, "requires_gpu": True}, "requires_gpu"),
    (
        "framework mismatch",
        {**RF, "model_type": "bert", "framework_override": "tensorflow"},
        "framework_override",
    ),
    ("dot-dot", {**RF, "data_path": "/data/../etc/passwd"}, "data_path"),
    ("absolute outside /data", {**RF, "data_path": "/etc/passwd"}, "data_path"),
    ("missing file", {**RF, "data_path": "/data/nope.csv"}, "data_path"),
    ("empty data_path", {**RF, "data_path": ""}, "data_path"),
    ("extra field", {**RF, "learning_rate": 0.1}, "learning_rate"),
    ("bad priority", {**RF, "priority": "urgent"}, "priority"),
    ("max_attempts too big", {**RF, "max_attempts": 1000}, "max_attempts"),
    ("bad idempotency key", {**RF, "idempotency_key": "a b"}, "idempotency_key"),
    ("bad model_name", {**RF, "model_name": "../x"}, "model_name"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_TRAINING, ids=[c[0] for c in BAD_TRAINING])
def test_bad_training_bodies(
    client: TestClient, case: str, body: dict[str, Any], field: str
) -> None:
    assert_error(client.post("/jobs/training", json=body), 422, "invalid_request", field)
    assert client.get("/jobs").json()["jobs"] == []  # nothing was queued


def test_symlink_out_of_the_root(client: TestClient, data_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a,b\n")
    os.symlink(outside, data_root / "link.csv")
    resp = client.post("/jobs/training", json={**RF, "data_path": "/data/link.csv"})
    err = assert_error(resp, 422, "invalid_request", "data_path")
    assert "outside" in err["message"]


def test_relative_data_path_inside_root_is_fine(client: TestClient) -> None:
    resp = client.post("/jobs/training", json={**RF, "data_path": "tabular_data.csv"})
    assert resp.status_code == 202


def test_no_local_data_root_checks_shape_only(client: TestClient, settings: Any) -> None:
    from trainyard_api.app import create_app

    elsewhere = settings.model_copy(update={"data_root": settings.data_root / "absent"})
    with TestClient(create_app(elsewhere)) as c:
        assert c.post("/jobs/training", json={**RF, "data_path": "/data/x.csv"}).status_code == 202
        resp = c.post("/jobs/training", json={**RF, "data_path": "/data/../x.csv"})
        assert_error(resp, 422, "invalid_request", "data_path")


BAD_INFERENCE: list[tuple[str, dict[str, Any], str]] = [
    ("missing input_data", {"model_id": "rf1"}, "input_data"),
    ("input_data a number", {"model_id": "rf1", "input_data": 5}, "input_data"),
    ("batch of numbers", {"model_id": "rf1", "input_data": ["ok", 3]}, "input_data.1"),
    ("empty batch", {"model_id": "rf1", "input_data": []}, "input_data"),
    ("bad model id", {"model_id": "../etc", "input_data": "x"}, "model_id"),
    (
        "nested parameters",
        {"model_id": "rf1", "input_data": "x", "parameters": {"a": {}}},
        "parameters",
    ),
    ("extra field", {"model_id": "rf1", "input_data": "x", "temperature": 1}, "temperature"),
]


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_INFERENCE, ids=[c[0] for c in BAD_INFERENCE]
)
def test_bad_inference_bodies(
    client: TestClient, queue: JobQueue, case: str, body: dict[str, Any], field: str
) -> None:
    register_model(queue, "rf1")
    assert_error(client.post("/jobs/inference", json=body), 422, "invalid_request", field)


def test_not_json(client: TestClient) -> None:
    resp = client.post(
        "/jobs/training", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(resp, 422, "invalid_request", "body")
    assert_error(client.post("/jobs/training"), 422, "invalid_request", "body")


def test_oversized_body_is_413(client: TestClient) -> None:
    big = {**RF, "description": "x" * 70_000}  # the test limit is 64 KiB
    assert_error(client.post("/jobs/training", json=big), 413, "payload_too_large", "body")


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 8192

    resp = client.post(
        "/jobs/training", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(resp, 413, "payload_too_large", "body")


def test_bad_and_unknown_job_ids(client: TestClient) -> None:
    assert_error(client.get("/jobs/no%20such/status"), 422, "invalid_request", "job_id")
    assert_error(client.get("/jobs/-leading-dash"), 422, "invalid_request", "job_id")
    assert_error(client.get("/jobs/" + "a" * 200 + "/status"), 422, "invalid_request", "job_id")
    assert_error(client.get("/jobs/abc123/status"), 404, "not_found", "job_id")
    assert_error(client.get("/jobs/abc123"), 404, "not_found", "job_id")


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/nothing-here"), 404, "not_found")
    assert_error(client.delete("/jobs"), 405, "method_not_allowed")


ROUTES = {
    ("post", "/jobs/training"),
    ("post", "/jobs/inference"),
    ("get", "/jobs"),
    ("get", "/jobs/{job_id}"),
    ("get", "/jobs/{job_id}/status"),
    ("post", "/jobs/{job_id}/cancel"),
    ("get", "/jobs/{job_id}/events"),
    ("get", "/jobs/{job_id}/logs"),
    ("get", "/models"),
    ("get", "/models/{model_id}"),
    ("get", "/workers"),
    ("get", "/queues"),
    ("get", "/routing"),
    ("get", "/health"),
    ("get", "/metrics"),
}


def test_openapi_is_complete(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    schema = resp.json()
    assert schema["info"]["title"] == "Trainyard"
    found = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert found >= ROUTES
    comps = schema["components"]["schemas"]
    assert "ErrorResponse" in comps and "HTTPValidationError" not in comps
    for method, path in ROUTES:
        op = schema["paths"][path][method]
        assert op["tags"], (method, path)
        for status, resp_doc in op["responses"].items():
            if status.startswith(("4", "5")):
                ref = resp_doc["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, status)

    # Every documented example validates against its model, and the seed's are all there.
    examples = {
        "/jobs/training": (TrainingJobRequest, 5),
        "/jobs/inference": (InferenceJobRequest, 4),
    }
    for path, (model, count) in examples.items():
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert len(body["examples"]) == count
        for example in body["examples"].values():
            model.model_validate(example["value"])


def test_docs_page(client: TestClient) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert "swagger" in resp.text.lower()


def test_a_full_redis_is_503_not_500(client: TestClient, queue: JobQueue) -> None:
    # noeviction: a server at its memory limit refuses writes; that is an outage to report.
    queue.redis.config_set("maxmemory", "1")
    try:
        resp = client.post(
            "/jobs/training",
            json={
                "model_type": "random_forest",
                "data_path": "/data/tabular_data.csv",
                "framework_override": "sklearn",
            },
        )
    finally:
        queue.redis.config_set("maxmemory", "0")
    assert_error(resp, 503, "unavailable", "redis")
    assert "maxmemory" in resp.json()["error"]["message"]
