"""Dead letters over HTTP: GET /dead-letters lists dead jobs with their last error and
attempts; POST /jobs/{id}/redrive runs one again as a new linked job (idempotent), and
POST /dead-letters/redrive does many; nothing but a dead job is redriven."""

from __future__ import annotations

from fastapi.testclient import TestClient

from conftest import assert_error
from trainyard.engine import JobQueue
from trainyard.types import JobType


def _dead(queue: JobQueue, runtime: str = "sklearn", error_kind: str = "crashed") -> str:
    job_id, _ = queue.enqueue(
        job_type=JobType.TRAINING,
        runtime=runtime,
        request={"model_type": "random_forest", "data_path": "/data/tabular_data.csv"},
        max_attempts=1,
    )
    claim = queue.claim("w-test", [runtime], lease_ms=60_000)
    assert claim is not None and claim.job_id == job_id
    done = queue.finish(
        job_id, claim.attempt_id, "retry", error=f"{error_kind}: boom", error_kind=error_kind
    )
    assert done.state == "dead"
    return job_id


def test_dead_letters_list_dead_jobs_with_error_and_attempts(
    client: TestClient, queue: JobQueue
) -> None:
    first = _dead(queue)
    second = _dead(queue, error_kind="killed")
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})  # not dead
    body = client.get("/dead-letters").json()
    assert [j["job_id"] for j in body["jobs"]] == [second, first]  # newest first
    job = body["jobs"][0]
    assert job["status"] == "dead" and job["attempt"] == 1 and job["max_attempts"] == 1
    assert job["error"] == "killed: boom" and job["error_kind"] == "killed"
    assert job["redriven_to"] is None and body["next_cursor"] is None

    page = client.get("/dead-letters", params={"limit": 1}).json()
    assert [j["job_id"] for j in page["jobs"]] == [second] and page["next_cursor"]
    rest = client.get("/dead-letters", params={"cursor": page["next_cursor"]}).json()
    assert [j["job_id"] for j in rest["jobs"]] == [first]
    assert_error(client.get("/dead-letters", params={"runtime": "nope"}), 422, "invalid_request",
                 "runtime")  # fmt: skip


def test_redrive_runs_a_dead_job_again_as_a_new_linked_job(
    client: TestClient, queue: JobQueue
) -> None:
    dead = _dead(queue)
    resp = client.post(f"/jobs/{dead}/redrive")
    assert resp.status_code == 202, resp.text
    new = resp.json()
    assert new["status"] == "queued" and new["attempt"] == 0 and new["redriven_from"] == dead
    assert resp.headers["location"] == f"/jobs/{new['job_id']}"
    old = client.get(f"/jobs/{dead}").json()
    assert old["status"] == "dead" and old["redriven_to"] == new["job_id"]
    full = client.get(f"/jobs/{new['job_id']}").json()
    assert full["request"] == old["request"] and full["runtime"] == "sklearn"

    again = client.post(f"/jobs/{dead}/redrive")
    assert again.status_code == 200 and again.json()["job_id"] == new["job_id"]
    listed = client.get("/dead-letters", params={"redriven": "true"}).json()["jobs"]
    assert [j["job_id"] for j in listed] == [dead]
    assert client.get("/dead-letters", params={"redriven": "false"}).json()["jobs"] == []


def test_only_dead_jobs_are_redriven(client: TestClient, queue: JobQueue) -> None:
    queued, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    err = assert_error(client.post(f"/jobs/{queued}/redrive"), 409, "conflict", "job_id")
    assert "queued, not dead" in err["message"]
    assert_error(client.post("/jobs/nosuchjob/redrive"), 404, "not_found", "job_id")
    assert_error(client.post("/jobs/bad:id/redrive"), 422, "invalid_request", "job_id")
    assert client.get("/jobs").json()["jobs"][0]["job_id"] == queued
    assert len(client.get("/jobs").json()["jobs"]) == 1


def test_bulk_redrive_takes_the_matching_dead_jobs_once(
    client: TestClient, queue: JobQueue
) -> None:
    crashed = [_dead(queue) for _ in range(3)]
    killed = _dead(queue, error_kind="killed")
    other_runtime = _dead(queue, runtime="tensorflow")

    some = client.post("/dead-letters/redrive", json={"runtime": "sklearn", "limit": 2}).json()
    assert len(some["redriven"]) == 2 and some["more"] is True
    rest = client.post(
        "/dead-letters/redrive", json={"runtime": "sklearn", "error_kind": "crashed"}
    ).json()
    assert rest["more"] is False
    done = {r["job_id"] for r in some["redriven"]} | {r["job_id"] for r in rest["redriven"]}
    assert set(crashed) <= done and other_runtime not in done
    # Nothing is redriven twice: a repeat finds only what is left (the tensorflow job).
    last = client.post("/dead-letters/redrive", json={}).json()["redriven"]
    left = {killed, other_runtime} - done
    assert {r["job_id"] for r in last} == left
    assert client.post("/dead-letters/redrive").json() == {"redriven": [], "more": False}
    assert_error(
        client.post("/dead-letters/redrive", json={"limit": 0}), 422, "invalid_request", "limit"
    )
    # A boolean is not a count (found by fuzzing: true was read as 1).
    assert_error(
        client.post("/dead-letters/redrive", json={"limit": True}), 422, "invalid_request", "limit"
    )


def test_a_misspelt_bulk_filter_is_refused_not_widened(client: TestClient, queue: JobQueue) -> None:
    dead = _dead(queue)
    resp = client.post("/dead-letters/redrive", json={"runtim": "sklearn"})
    assert_error(resp, 422, "invalid_request", "runtim")
    assert client.get(f"/jobs/{dead}").json()["redriven_to"] is None
