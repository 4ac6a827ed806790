"""Dead letters: a dead job is redriven as a new job linked both ways; the dead job's
state never changes, a second redrive returns the same new job, and nothing but a dead
job can be redriven (and then nothing changes)."""

from __future__ import annotations

import json

import pytest
from queue_checks import enqueue_simple, snapshot

from trainyard.engine import JobQueue
from trainyard.types import JobType, Priority

pytestmark = pytest.mark.usefixtures("index_invariant")


def _dead_job(queue: JobQueue, **options: object) -> str:
    job_id = enqueue_simple(queue, max_attempts=1, **options)  # type: ignore[arg-type]
    claim = queue.claim("worker-1", ["sklearn"], 30_000)
    assert claim is not None and claim.job_id == job_id
    assert queue.report(job_id, claim.attempt_id, "progress", {"epoch": 3})
    done = queue.finish(job_id, claim.attempt_id, "retry", error="boom", error_kind="crashed")
    assert done.applied and done.state == "dead"
    return job_id


def test_redrive_queues_the_same_submission_as_a_new_linked_job(queue: JobQueue) -> None:
    dead = _dead_job(queue, priority=Priority.HIGH, timeout_s=60.0)
    before = queue.get_job(dead)
    assert before is not None

    outcome = queue.redrive(dead, reason="after the fix")
    assert outcome.found and outcome.redriven and outcome.created
    assert outcome.new_job_id and outcome.new_job_id != dead

    new = queue.get_job(outcome.new_job_id)
    assert new is not None
    assert new["state"] == "queued" and new["attempt"] == "0" and new["stalls"] == "0"
    assert new["redriven_from"] == dead
    for field in ("type", "runtime", "rank", "priority", "max_attempts", "timeout_s", "request"):
        assert new[field] == before[field], field
    assert "error" not in new and "finished_at" not in new and new["expires_at"] == "0"
    assert "progress" not in new  # the dead attempt's progress is not the new job's

    old = queue.get_job(dead)
    assert old is not None and old["state"] == "dead" and old["redriven_to"] == new["id"]
    assert old["error"] == "boom" and old["finished_at"] == before["finished_at"]
    kinds = [(e.kind, e.data) for e in queue.events(dead)]
    assert kinds[-1] == ("redriven", {"redriven_to": new["id"], "reason": "after the fix"})
    first = queue.events(new["id"])[0]
    assert first.data == {"state": "queued", "redriven_from": dead, "reason": "after the fix"}

    # It runs like any job: claimable, with fresh attempts.
    claim = queue.claim("worker-2", ["sklearn"], 30_000)
    assert claim is not None and claim.job_id == new["id"] and claim.job["attempt"] == "1"


def test_a_second_redrive_returns_the_same_new_job_and_changes_nothing(queue: JobQueue) -> None:
    dead = _dead_job(queue)
    first = queue.redrive(dead)
    assert first.new_job_id
    before = (snapshot(queue, dead), snapshot(queue, first.new_job_id))
    again = queue.redrive(dead)
    assert again.redriven and not again.created and again.new_job_id == first.new_job_id
    assert (snapshot(queue, dead), snapshot(queue, first.new_job_id)) == before
    assert queue.redis.zcard(queue.keys.index_all) == 2


def test_redrive_of_a_job_that_is_not_dead_is_refused_and_changes_nothing(
    queue: JobQueue,
) -> None:
    running = enqueue_simple(queue)
    failed = enqueue_simple(queue)
    queued = enqueue_simple(queue)
    first = queue.claim("worker-1", ["sklearn"], 30_000)
    second = queue.claim("worker-1", ["sklearn"], 30_000)
    assert first is not None and first.job_id == running  # FIFO
    assert second is not None and second.job_id == failed
    queue.finish(failed, second.attempt_id, "failed", error="bad data", error_kind="user_error")
    for job_id, state in ((running, "running"), (failed, "failed"), (queued, "queued")):
        before = snapshot(queue, job_id)
        outcome = queue.redrive(job_id)
        assert outcome.found and not outcome.redriven and outcome.state == state
        assert outcome.new_job_id is None
        assert snapshot(queue, job_id) == before
    assert queue.redis.zcard(queue.keys.index_all) == 3


def test_redrive_of_an_unknown_job_says_missing(queue: JobQueue) -> None:
    outcome = queue.redrive("nosuchjob")
    assert not outcome.found and outcome.state == "missing"
    assert queue.redis.dbsize() == 0


def test_a_dead_inference_job_keeps_its_type_and_request(queue: JobQueue) -> None:
    job_id, _ = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime="sklearn",
        request={"model_id": "m1", "input_data": "1,2"},
        max_attempts=1,
        extra_fields={"model_type": "random_forest"},
    )
    claim = queue.claim("worker-1", ["sklearn"], 30_000)
    assert claim is not None
    queue.finish(job_id, claim.attempt_id, "retry", error="lost", error_kind="lost")
    outcome = queue.redrive(job_id)
    assert outcome.new_job_id
    new = queue.get_job(outcome.new_job_id)
    assert new is not None and new["type"] == "inference"
    assert json.loads(new["request"]) == {"model_id": "m1", "input_data": "1,2"}
    assert new["model_type"] == "random_forest"  # extra submission fields come along
