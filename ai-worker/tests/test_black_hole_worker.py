"""No black-hole workers, with real processes: one healthy worker and one misconfigured
one (its DATA_ROOT an existing but empty folder) on one Valkey. The misconfigured worker
fails a few attempts as its own fault (retried, never the user's error), then takes itself
out of service and says why in its record; every job succeeds on the healthy worker."""

from __future__ import annotations

from pathlib import Path

from conftest import WorkerFarm, submit, training_request, wait_terminal
from trainyard.engine import JobQueue
from trainyard.stats import read_stats
from trainyard.testing import wait_for
from trainyard_worker.data_guard import OUT_OF_SERVICE

BAD, GOOD = "w-empty-data-root", "w-healthy"
LIMIT = 3  # DATA_UNAVAILABLE_LIMIT
N_JOBS = 6


def _worker(queue: JobQueue, worker_id: str) -> dict[str, str] | None:
    return next((w for w in queue.live_workers(20_000) if w.get("id") == worker_id), None)


def _out_of_service(queue: JobQueue, worker_id: str, seen_after: int = 0) -> dict[str, str]:
    """Its record once it says out_of_service (with a heartbeat after ``seen_after``)."""
    w = _worker(queue, worker_id)
    if w and w.get("state") == OUT_OF_SERVICE and int(w["last_seen"]) > seen_after:
        return w
    return {}


def test_a_worker_that_cannot_see_the_data_does_not_eat_the_queue(
    queue: JobQueue, farm: WorkerFarm, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-data-root"
    empty.mkdir()
    bad = farm.start(WORKER_ID=BAD, DATA_ROOT=str(empty), DATA_UNAVAILABLE_LIMIT=str(LIMIT))
    wait_for(lambda: _worker(queue, BAD), 60, "the misconfigured worker to register")
    # One attempt more than the misconfigured worker can spend: a job it failed again
    # after it went out of service would end dead.
    jobs = [
        submit(queue, training_request(hyperparameters={"n_estimators": 5, "random_state": i}),
               max_attempts=LIMIT + 1, timeout_s=120)
        for i in range(N_JOBS)
    ]  # fmt: skip
    record = wait_for(lambda: _out_of_service(queue, BAD), 60,
                      "the misconfigured worker to take itself out of service")  # fmt: skip
    reason = record["state_reason"]
    assert f"{LIMIT} training jobs in a row could not see their data" in reason, reason
    assert f"DATA_ROOT={empty.resolve()}" in reason, reason

    farm.start(WORKER_ID=GOOD)
    for job_id in jobs:
        done = wait_terminal(queue, job_id, 120)
        assert done["state"] == "succeeded", done
        assert done["worker_id"] == GOOD

    # The misconfigured worker ran exactly LIMIT attempts, each retried as its own fault.
    retries = [
        e.data
        for job_id in jobs
        for e in queue.events(job_id)
        if e.kind == "state" and e.data.get("state") == "retrying"
    ]
    assert len(retries) == LIMIT, retries
    where = f"is not visible on worker {BAD} (DATA_ROOT={empty.resolve()}, an empty folder)"
    for data in retries:
        assert data["error_kind"] == "data_unavailable" and where in data["error"], data
    stats = read_stats(queue.redis, queue.keys)
    assert stats.retries.get(runtime="sklearn", job_type="training") == LIMIT
    assert stats.finished.get(outcome="succeeded") == N_JOBS

    # Out of service, yet alive and heart-beating: still listed, its last_seen moving on.
    seen = int(record["last_seen"])
    later = wait_for(lambda: _out_of_service(queue, BAD, seen), 10,
                     "a heartbeat of the worker out of service")  # fmt: skip
    assert later["state_reason"] == reason
    assert bad.poll() is None

    # A job submitted now goes straight to the healthy worker.
    late = submit(queue, training_request(hyperparameters={"n_estimators": 5}), max_attempts=1)
    done = wait_terminal(queue, late, 120)
    assert (done["state"], done["attempt"], done["worker_id"]) == ("succeeded", "1", GOOD)
