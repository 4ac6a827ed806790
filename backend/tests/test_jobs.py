"""Submitting, reading, cancelling and listing jobs."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from conftest import assert_error, heartbeat, model_record, register_model, run_job
from trainyard.engine import JobQueue
from trainyard.testing import wait_for
from trainyard.types import JobType
from trainyard_api.app import create_app
from trainyard_api.config import Settings
from trainyard_api.examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES

SEED_RUNTIMES = {
    "bert_quickstart": "pytorch-2.1",
    "bert": "pytorch-2.1",
    "resnet": "pytorch-2.0-gpu",
    "inception": "tensorflow",
    "random_forest": "sklearn",
}


def seed_training(name: str) -> dict[str, Any]:
    return copy.deepcopy(TRAINING_EXAMPLES[name]["value"])


def seed_inference(name: str) -> dict[str, Any]:
    return copy.deepcopy(INFERENCE_EXAMPLES[name]["value"])


@pytest.mark.parametrize("name", sorted(SEED_RUNTIMES))
def test_seed_training_bodies_are_accepted_and_routed(client: TestClient, name: str) -> None:
    resp = client.post("/jobs/training", json=seed_training(name))
    assert resp.status_code == 202, resp.text
    status = resp.json()
    runtime = SEED_RUNTIMES[name]
    assert status["status"] == "queued"
    assert status["job_type"] == "training"
    assert status["runtime"] == runtime
    assert status["attempt"] == 0 and status["max_attempts"] == 3
    assert status["waiting_reason"] == f"no live worker serves runtime {runtime}"
    assert resp.headers["location"] == f"/jobs/{status['job_id']}"

    record = client.get(f"/jobs/{status['job_id']}").json()
    assert record["request"]["model_type"] == seed_training(name)["model_type"]
    assert record["request"]["hyperparameters"] == seed_training(name)["hyperparameters"]
    assert record["timeout_s"] == 86400


def test_live_worker_clears_waiting_reason(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=seed_training("random_forest")).json()["job_id"]
    heartbeat(queue, "w-other", "tensorflow")
    assert client.get(f"/jobs/{job_id}/status").json()["waiting_reason"] is not None
    heartbeat(queue, "w1", "sklearn")
    status = client.get(f"/jobs/{job_id}/status").json()
    assert status["waiting_reason"] is None
    assert status["status"] == "queued"


@pytest.mark.parametrize("name", sorted(INFERENCE_EXAMPLES))
def test_seed_inference_unknown_model_is_404(client: TestClient, name: str) -> None:
    resp = client.post("/jobs/inference", json=seed_inference(name))
    err = assert_error(resp, 404, "not_found", "model_id")
    assert seed_inference(name)["model_id"] in err["message"]


@pytest.mark.parametrize("name", sorted(INFERENCE_EXAMPLES))
def test_seed_inference_known_model_is_queued(
    client: TestClient, queue: JobQueue, name: str
) -> None:
    body = seed_inference(name)
    register_model(queue, body["model_id"], runtime="sklearn")
    resp = client.post("/jobs/inference", json=body)
    assert resp.status_code == 202, resp.text
    status = resp.json()
    assert status["job_type"] == "inference"
    assert status["runtime"] == "sklearn"
    assert status["model_id"] == body["model_id"]
    assert status["max_attempts"] == 2
    assert (
        client.get(f"/jobs/{status['job_id']}").json()["request"]["input_data"]
        == body["input_data"]
    )


def test_inference_wait_returns_the_result(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")

    def worker() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            claim = queue.claim("w-thread", ["sklearn"], lease_ms=60_000)
            if claim is not None:
                queue.finish(
                    claim.job_id, claim.attempt_id, "succeeded", result={"predictions": ["a"]}
                )
                return
            queue.wait_for_work(["sklearn"], 1.0)  # blocks until the submission wakes it

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    started = time.monotonic()
    resp = client.post("/jobs/inference?wait=10", json={"model_id": "rf1", "input_data": "1,2"})
    thread.join(timeout=10)
    assert resp.status_code == 200, resp.text
    status = resp.json()
    assert status["status"] == "succeeded"
    assert status["result"] == {"predictions": ["a"]}
    assert time.monotonic() - started < 8


def test_inference_wait_times_out_with_202(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")
    started = time.monotonic()
    resp = client.post("/jobs/inference?wait=0.7", json={"model_id": "rf1", "input_data": "1,2"})
    elapsed = time.monotonic() - started
    assert resp.status_code == 202
    assert resp.json()["status"] == "queued"
    assert 0.6 <= elapsed < 5


def test_inference_wait_over_the_maximum_is_422(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")
    resp = client.post("/jobs/inference?wait=301", json={"model_id": "rf1", "input_data": "x"})
    assert_error(resp, 422, "invalid_request", "wait")


@pytest.fixture
def long_read_client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    """The app with the longest blocking read it allows (25 s): a ?wait= answered sooner
    was woken by the job's event, not by a read that timed out and looked again."""
    with TestClient(create_app(settings.model_copy(update={"sse_keepalive_s": 25.0}))) as c:
        yield c


def _blocked_on_xread(redis: Redis) -> bool:
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in redis.client_list())


def test_training_wait_answers_as_soon_as_the_job_ends(
    long_read_client: TestClient, queue: JobQueue, redis_client: Redis
) -> None:
    def worker() -> float:
        """Claim the job, wait until the API blocks on its event stream, then finish it as
        a worker would (no worker process: the engine's calls); when it finished."""
        assert queue.wait_for_work(["sklearn"], 20.0), "the submission woke no one"
        claim = queue.claim("w-thread", ["sklearn"], lease_ms=60_000)
        assert claim is not None
        wait_for(lambda: _blocked_on_xread(redis_client), 20.0, "the API to block on XREAD")
        finished = time.monotonic()
        model = model_record("rf_waited", claim.job_id)
        done = queue.finish(
            claim.job_id, claim.attempt_id, "succeeded", result={"accuracy": 0.9}, model=model
        )
        assert done.applied
        return finished

    with ThreadPoolExecutor(1) as pool:
        finishing = pool.submit(worker)
        resp = long_read_client.post("/jobs/training?wait=120", json=seed_training("random_forest"))
        answered = time.monotonic()
        finished = finishing.result(timeout=30)
    assert resp.status_code == 200, resp.text
    status = resp.json()
    assert status["status"] == "succeeded" and status["job_type"] == "training"
    assert status["model_id"] == "rf_waited" and status["result"] == {"accuracy": 0.9}
    assert resp.headers["location"] == f"/jobs/{status['job_id']}"
    # Woken by the event: far sooner than the 25 s blocking read or the 120 s wait.
    assert answered - finished < 10


def test_training_without_wait_or_with_wait_0_answers_at_once(client: TestClient) -> None:
    for url in ("/jobs/training", "/jobs/training?wait=0"):
        resp = client.post(url, json=seed_training("random_forest"))
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "queued"


def test_training_wait_times_out_with_202(client: TestClient) -> None:
    resp = client.post("/jobs/training?wait=0.5", json=seed_training("random_forest"))
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"


def test_training_wait_over_the_maximum_is_422(client: TestClient) -> None:
    resp = client.post("/jobs/training?wait=301", json=seed_training("random_forest"))
    err = assert_error(resp, 422, "invalid_request", "wait")
    assert "300" in err["message"]
    assert client.get("/jobs").json()["jobs"] == []  # nothing queued


def test_training_wait_on_a_replay_of_an_ended_job_is_200_at_once(
    client: TestClient, queue: JobQueue
) -> None:
    body = {**seed_training("random_forest"), "idempotency_key": "trained-once"}
    job_id = client.post("/jobs/training", json=body).json()["job_id"]
    run_job(queue, job_id, "sklearn", result={"accuracy": 1.0})
    resp = client.post("/jobs/training?wait=120", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["job_id"] == job_id and resp.json()["status"] == "succeeded"


def test_idempotency_key_in_body(client: TestClient) -> None:
    body = {**seed_training("random_forest"), "idempotency_key": "nightly-2025-01-01"}
    first = client.post("/jobs/training", json=body)
    second = client.post("/jobs/training", json=body)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"]
    assert client.get("/jobs").json()["jobs"].__len__() == 1


def test_idempotency_key_header(client: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/jobs/training", json=seed_training("bert"), headers=headers)
    second = client.post("/jobs/training", json=seed_training("bert"), headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["job_id"] == second.json()["job_id"]
    other = client.post("/jobs/training", json=seed_training("bert"))
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]


def test_bad_idempotency_header_is_422(client: TestClient) -> None:
    resp = client.post(
        "/jobs/training", json=seed_training("bert"), headers={"Idempotency-Key": "no spaces!"}
    )
    assert_error(resp, 422, "invalid_request", "Idempotency-Key")


def test_options_override_defaults(client: TestClient) -> None:
    body = {
        **seed_training("random_forest"),
        "priority": "high",
        "max_attempts": 5,
        "timeout_s": 60,
    }
    job_id = client.post("/jobs/training", json=body).json()["job_id"]
    record = client.get(f"/jobs/{job_id}").json()
    assert record["priority"] == "high"
    assert record["max_attempts"] == 5
    assert record["timeout_s"] == 60


def test_cancel_queued_job(client: TestClient) -> None:
    job_id = client.post("/jobs/training", json=seed_training("random_forest")).json()["job_id"]
    resp = client.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 200
    status = resp.json()
    assert status["status"] == "cancelled"
    assert status["waiting_reason"] is None
    assert_error(client.post(f"/jobs/{job_id}/cancel"), 409, "conflict", "job_id")


def test_cancel_running_job_requests_cancellation(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=seed_training("random_forest")).json()["job_id"]
    assert queue.claim("w1", ["sklearn"], lease_ms=60_000) is not None
    status = client.post(f"/jobs/{job_id}/cancel").json()
    assert status["status"] == "running"
    assert status["cancel_requested"] is True


def test_cancel_finished_job_is_409(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=seed_training("random_forest")).json()["job_id"]
    run_job(queue, job_id, "sklearn", result={"accuracy": 1.0})
    err = assert_error(client.post(f"/jobs/{job_id}/cancel"), 409, "conflict", "job_id")
    assert "succeeded" in err["message"]


def test_cancel_unknown_job_is_404(client: TestClient) -> None:
    assert_error(client.post("/jobs/nope123/cancel"), 404, "not_found", "job_id")


def test_finished_job_status_has_result_and_times(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=seed_training("random_forest")).json()["job_id"]
    run_job(queue, job_id, "sklearn", result={"accuracy": 0.9}, model=None)
    status = client.get(f"/jobs/{job_id}/status").json()
    assert status["status"] == "succeeded"
    assert status["result"] == {"accuracy": 0.9}
    assert status["progress"] == {"epoch": 1, "loss": 0.5}
    assert status["started_at"] and status["finished_at"] and status["created_at"]
    record = client.get(f"/jobs/{job_id}").json()
    assert record["worker_id"] == "w-test"


def test_list_filters(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")  # a training job that succeeded
    for name in ("bert", "inception", "random_forest", "random_forest"):
        assert client.post("/jobs/training", json=seed_training(name)).status_code == 202
    client.post("/jobs/inference", json={"model_id": "rf1", "input_data": "1"})

    def ids(**params: str) -> list[dict[str, Any]]:
        resp = client.get("/jobs", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()["jobs"]

    assert len(ids()) == 6
    assert {j["runtime"] for j in ids(runtime="sklearn")} == {"sklearn"}
    assert len(ids(runtime="sklearn")) == 4
    assert len(ids(job_type="inference")) == 1
    assert len(ids(state="succeeded")) == 1
    assert len(ids(state="queued", runtime="sklearn", job_type="training")) == 2
    assert ids(runtime="tensorflow")[0]["waiting_reason"] == (
        "no live worker serves runtime tensorflow"
    )
    assert_error(client.get("/jobs?runtime=jax"), 422, "invalid_request", "runtime")
    assert_error(client.get("/jobs?state=sleeping"), 422, "invalid_request", "state")
    assert_error(client.get("/jobs?job_type=eval"), 422, "invalid_request", "job_type")
    assert_error(client.get("/jobs?limit=0"), 422, "invalid_request", "limit")
    assert_error(client.get("/jobs?limit=201"), 422, "invalid_request", "limit")
    assert_error(client.get("/jobs?cursor=abc"), 422, "invalid_request", "cursor")


def _page_through(client: TestClient, **params: Any) -> list[str]:
    """The job ids of ``GET /jobs`` with ``params``, following ``next_cursor`` (20 pages at
    most)."""
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        page = client.get("/jobs", params={**params, "cursor": cursor} if cursor else params)
        body = page.json()
        seen.extend(j["job_id"] for j in body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return seen


def test_list_pagination_over_120_jobs(client: TestClient, queue: JobQueue) -> None:
    created = []
    for i in range(120):
        job_id, _ = queue.enqueue(
            job_type=JobType.TRAINING if i % 3 else JobType.INFERENCE,
            runtime="sklearn",
            request={"n": i},
        )
        created.append(job_id)
    seen = _page_through(client, limit=25)
    assert seen == list(reversed(created))  # newest first, no duplicates, no gaps

    # Filtered pages too: the 40 inference jobs, 7 at a time.
    seen = _page_through(client, limit=7, job_type="inference")
    assert seen == [j for i, j in reversed(list(enumerate(created))) if i % 3 == 0]
