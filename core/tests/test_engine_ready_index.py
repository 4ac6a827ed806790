"""The per-model ready index (``ready_model``) against a real server: every script that
moves a job into or out of a ready queue keeps it in step, with ``ready_at`` written on
every entry; stale entries are dropped, not claimed; ``index_problems`` names each kind of
disagreement. After each test the index invariant is checked."""

from __future__ import annotations

import pytest
from queue_checks import (
    assert_index_invariants,
    enqueue_inference,
    enqueue_simple,
    in_model_queue,
    wait_for_lease_expiry,
    wait_past_server_time,
)

from trainyard.consistency import index_problems
from trainyard.engine import FinishItem, JobQueue
from trainyard.types import JobType, Priority

LEASE_MS = 30_000

pytestmark = pytest.mark.usefixtures("index_invariant")



def _ready_at(queue: JobQueue, job_id: str) -> int:
    return int(queue.get_job(job_id)["ready_at"])  # type: ignore[index]


def test_the_model_queue_follows_a_job_through_every_script(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    before = queue.server_time_ms()
    job_id = enqueue_inference(queue, "m1", max_attempts=3)
    training = enqueue_simple(queue)
    untagged, _ = queue.enqueue(  # an inference job that does not name its model in the hash
        job_type=JobType.INFERENCE, runtime="sklearn", request={"model_id": "m1"}
    )
    assert r.zscore(k.ready_model("sklearn", "m1"), job_id) == r.zscore(k.ready("sklearn"), job_id)
    assert r.zcard(k.ready_model("sklearn", "m1")) == 1  # not the training nor the untagged
    assert before <= _ready_at(queue, job_id) <= queue.server_time_ms()
    assert _ready_at(queue, training) and _ready_at(queue, untagged)
    assert queue.cancel(untagged).state == "cancelled"
    assert queue.cancel(training).state == "cancelled"

    claim = queue.claim("w", ["sklearn"], LEASE_MS)  # claim
    assert claim is not None and not in_model_queue(queue, job_id, "m1")
    assert_index_invariants(queue)

    queue.finish(job_id, claim.attempt_id, "retry", error_kind="crashed", retry_delay_ms=0)
    retry_at = int(queue.get_job(job_id)["retry_at"])  # type: ignore[index]
    assert not in_model_queue(queue, job_id, "m1")  # retrying: in the delayed set only
    wait_past_server_time(queue, retry_at)
    claim = queue.claim("w", ["tensorflow"], LEASE_MS)  # promotes due retries of any runtime
    assert claim is None and in_model_queue(queue, job_id, "m1")  # retry promotion
    assert _ready_at(queue, job_id) >= retry_at
    assert_index_invariants(queue)

    [claim] = queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 1)
    released_after = queue.server_time_ms()
    assert queue.release(job_id, claim.attempt_id, "shutdown")  # release
    assert in_model_queue(queue, job_id, "m1")
    assert _ready_at(queue, job_id) >= released_after
    assert_index_invariants(queue)

    [claim] = queue.claim_batch("gone", "sklearn", "m1", 50, 1)
    wait_for_lease_expiry(queue, claim)
    assert queue.reap() == [(job_id, "queued")]  # reap
    assert in_model_queue(queue, job_id, "m1")
    assert _ready_at(queue, job_id) >= int(claim.job["lease_until"])
    assert_index_invariants(queue)

    assert queue.cancel(job_id).state == "cancelled"  # cancel
    assert not in_model_queue(queue, job_id, "m1")
    assert not r.exists(k.ready_model("sklearn", "m1"))


def test_jobs_the_reaper_expires_leave_the_model_queue(queue: JobQueue) -> None:
    first = enqueue_inference(queue, "m1", queue_ttl_s=0.05)
    second = enqueue_inference(queue, "m2", queue_ttl_s=0.05)
    wait_past_server_time(queue, int(queue.get_job(second)["expires_at"]))  # type: ignore[index]

    assert sorted(queue.reap()) == sorted([(first, "failed"), (second, "failed")])
    assert not in_model_queue(queue, first, "m1")
    assert not in_model_queue(queue, second, "m2")


def test_an_expired_job_found_by_claim_leaves_the_model_queue(queue: JobQueue) -> None:
    stale = enqueue_inference(queue, "m1", queue_ttl_s=0.05)
    wait_past_server_time(queue, int(queue.get_job(stale)["expires_at"]))  # type: ignore[index]
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None
    assert queue.get_job(stale)["error_kind"] == "expired"  # type: ignore[index]
    assert not in_model_queue(queue, stale, "m1")


def test_a_redriven_inference_job_keeps_its_model_and_joins_its_model_queue(
    queue: JobQueue,
) -> None:
    dead = enqueue_inference(queue, "m1", max_attempts=1)
    claim = queue.claim("w", ["sklearn"], LEASE_MS)
    assert claim is not None
    assert queue.finish(dead, claim.attempt_id, "retry", error_kind="crashed").state == "dead"

    outcome = queue.redrive(dead)

    assert outcome.redriven and outcome.new_job_id
    new = queue.get_job(outcome.new_job_id)
    assert new is not None and new["model_id"] == "m1"
    assert in_model_queue(queue, outcome.new_job_id, "m1")


def test_index_problems_names_model_queue_disagreements(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    missing = enqueue_inference(queue, "m1")
    rescored = enqueue_inference(queue, "m1")
    running = enqueue_inference(queue, "m2", priority=Priority.HIGH)
    assert queue.claim("w", ["sklearn"], LEASE_MS).job_id == running  # type: ignore[union-attr]
    assert index_problems(queue) == []

    r.zrem(k.ready_model("sklearn", "m1"), missing)  # a queued job missing from it
    r.zadd(k.ready_model("sklearn", "m1"), {rescored: 1})  # out of step with ready:
    r.zadd(k.ready_model("sklearn", "m2"), {running: 1})  # a running job left in it
    r.zadd(k.ready_model("sklearn", "m3"), {"ghost": 1})  # a job that does not exist
    problems = "\n".join(index_problems(queue))

    assert (
        f"job {missing} (queued) is in model ready queues [], expected ['sklearn:m1']" in problems
    )
    assert f"job {rescored} (queued): its model ready queue score is not" in problems
    assert (
        f"job {running} (running) is in model ready queues ['sklearn:m2'], expected []" in problems
    )
    assert "ready_model:sklearn:m3 names job ghost, which does not exist" in problems
    # Put it right, for the invariant check after the test.
    r.zadd(
        k.ready_model("sklearn", "m1"),
        {
            missing: r.zscore(k.ready("sklearn"), missing),  # type: ignore[dict-item]
            rescored: r.zscore(k.ready("sklearn"), rescored),  # type: ignore[dict-item]
        },
    )
    r.delete(k.ready_model("sklearn", "m2"), k.ready_model("sklearn", "m3"))
    assert index_problems(queue) == []


def test_stale_ready_entries_are_dropped_not_claimed(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    training = enqueue_simple(queue)
    done = enqueue_inference(queue, "m1")
    claim = queue.claim("w", ["sklearn"], LEASE_MS)
    assert claim is not None and claim.job_id == training
    [finished] = queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 1)
    queue.finish_many([FinishItem(done, finished.attempt_id, "succeeded")])
    # Entries their hashes disown: a running training job, a finished inference job.
    r.zadd(k.ready_model("sklearn", "m1"), {training: 1, done: 2})
    r.zadd(k.ready("sklearn"), {done: 2})

    assert queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 5) == []
    assert (
        queue.claim_work("w", ["sklearn"], LEASE_MS, loaded_models=["m1"], affinity_ms=1000).claim
        is None
    )
    assert not r.exists(k.ready_model("sklearn", "m1"), k.ready("sklearn"))
    assert queue.get_job(training)["state"] == "running"  # type: ignore[index]
