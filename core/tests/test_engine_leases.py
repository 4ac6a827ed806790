"""Leases: expiry and the reaper, graceful release, and many workers claiming at once."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from queue_checks import (
    assert_index_invariants,
    enqueue_simple,
    snapshot,
    wait_for,
    wait_for_lease_expiry,
    wait_past_server_time,
)

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue

SHORT_LEASE_MS = 50
LONG_LEASE_MS = 30_000


pytestmark = pytest.mark.usefixtures("index_invariant")


def test_reap_requeues_an_expired_lease_at_its_old_place_with_the_attempt_counted(
    queue: JobQueue,
) -> None:
    first = enqueue_simple(queue)
    claim = queue.claim("gone-worker", ["sklearn"], SHORT_LEASE_MS)
    assert claim is not None and claim.job_id == first
    second = enqueue_simple(queue)  # submitted later: must stay behind the reaped job
    score_before = queue.redis.zscore(queue.keys.ready("sklearn"), second)

    wait_for_lease_expiry(queue, claim)
    assert queue.reap() == [(first, "queued")]

    job = queue.get_job(first)
    assert job is not None
    assert (job["state"], job["attempt"], job["stalls"], job["attempt_id"]) == (
        "queued",
        "1",
        "1",
        "",
    )
    assert job["error_kind"] == "lost" and "gone-worker" in job["error"]
    assert queue.redis.zscore(queue.keys.leases, first) is None
    assert queue.redis.zscore(queue.keys.ready("sklearn"), first) < score_before  # type: ignore[operator]
    assert_index_invariants(queue)

    # The lost attempt is fenced off from now on.
    stale = queue.finish(first, claim.attempt_id, "succeeded")
    assert (stale.applied, stale.state) == (False, "queued")
    assert not queue.renew(first, claim.attempt_id, LONG_LEASE_MS).held

    again = queue.claim("new-worker", ["sklearn"], LONG_LEASE_MS)
    assert again is not None and again.job_id == first
    assert again.job["attempt"] == "2"
    assert queue.finish(first, again.attempt_id, "succeeded").applied
    assert not queue.finish(first, claim.attempt_id, "failed").applied


def test_reap_leaves_live_leases_alone(queue: JobQueue) -> None:
    enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None
    before = snapshot(queue, claim.job_id)
    assert queue.reap() == []
    assert snapshot(queue, claim.job_id) == before


def test_a_renewed_lease_is_not_reaped(queue: JobQueue) -> None:
    enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], SHORT_LEASE_MS)
    assert claim is not None
    assert queue.renew(claim.job_id, claim.attempt_id, LONG_LEASE_MS).held

    wait_past_server_time(queue, int(claim.job["lease_until"]))  # the first lease is over

    assert queue.reap() == []
    assert queue.get_job(claim.job_id)["state"] == "running"  # type: ignore[index]


def test_a_job_whose_lease_expires_max_attempts_times_is_dead_as_lost(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    for attempt, expected in ((1, "queued"), (2, "dead")):
        claim = queue.claim("crashy", ["sklearn"], SHORT_LEASE_MS)
        assert claim is not None and claim.job["attempt"] == str(attempt)
        wait_for_lease_expiry(queue, claim)
        assert queue.reap() == [(job_id, expected)]

    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["error_kind"], job["stalls"], job["attempt"]) == (
        "dead",
        "lost",
        "2",
        "2",
    )
    assert job["finished_at"]
    assert queue.claim("w", ["sklearn"], LONG_LEASE_MS) is None


def test_reap_of_a_running_job_with_a_cancel_request_cancels_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=5)
    claim = queue.claim("w", ["sklearn"], SHORT_LEASE_MS)
    assert claim is not None
    assert queue.cancel(job_id).state == "running"

    wait_for_lease_expiry(queue, claim)
    assert queue.reap() == [(job_id, "cancelled")]

    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["error_kind"], job["stalls"]) == ("cancelled", "cancelled", "1")
    assert job["finished_at"]
    assert queue.claim("w", ["sklearn"], LONG_LEASE_MS) is None


def test_reap_with_an_interval_scans_once_per_interval_for_all_callers(queue: JobQueue) -> None:
    lock = queue.keys.reaper_lock
    assert queue.reap(every_ms=60_000) == []  # scanned (nothing to do), took the interval
    assert 0 < queue.redis.pttl(lock) <= 60_000
    job_id = enqueue_simple(queue)
    claim = queue.claim("gone-worker", ["sklearn"], SHORT_LEASE_MS)
    assert claim is not None
    wait_for_lease_expiry(queue, claim)

    assert queue.reap(every_ms=60_000) == []  # gated: another scan ran within the interval
    assert queue.get_job(job_id)["state"] == "running"  # type: ignore[index]
    assert queue.redis.zscore(queue.keys.leases, job_id) is not None

    assert queue.reap() == [(job_id, "queued")]  # every_ms=0 (the default) always scans


def test_reap_with_an_interval_scans_again_once_the_interval_passed(queue: JobQueue) -> None:
    lock = queue.keys.reaper_lock
    assert queue.reap(every_ms=200) == []
    job_id = enqueue_simple(queue)
    claim = queue.claim("gone-worker", ["sklearn"], SHORT_LEASE_MS)
    assert claim is not None
    wait_for_lease_expiry(queue, claim)

    wait_for(lambda: not queue.redis.exists(lock), 5.0, "the reaper interval to pass")
    assert queue.reap(every_ms=200) == [(job_id, "queued")]
    assert queue.redis.exists(lock)  # that scan took the next interval


def test_reap_respects_its_limit(queue: JobQueue) -> None:
    claims = []
    for _ in range(3):
        enqueue_simple(queue)
        claim = queue.claim("w", ["sklearn"], SHORT_LEASE_MS)
        assert claim is not None
        claims.append(claim)
    wait_for_lease_expiry(queue, claims[-1])
    assert len(queue.reap(limit=2)) == 2
    assert len(queue.reap(limit=2)) == 1
    assert queue.reap() == []


def test_release_hands_the_job_back_without_counting_the_attempt(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None

    assert queue.release(job_id, claim.attempt_id, "worker shutting down")

    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["attempt"], job["attempt_id"], job["stalls"]) == (
        "queued",
        "0",
        "",
        "0",
    )
    assert queue.redis.zscore(queue.keys.leases, job_id) is None
    assert queue.events(job_id)[-1].data == {"state": "queued", "reason": "worker shutting down"}
    assert not queue.release(job_id, claim.attempt_id, "twice")
    assert not queue.finish(job_id, claim.attempt_id, "succeeded").applied

    again = queue.claim("w2", ["sklearn"], LONG_LEASE_MS)
    assert again is not None and again.job_id == job_id and again.job["attempt"] == "1"


def test_release_of_a_job_whose_cancel_was_requested_cancels_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None
    queue.cancel(job_id, "stop it")

    assert queue.release(job_id, claim.attempt_id, "worker shutting down")

    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["error_kind"], job["error"]) == ("cancelled", "cancelled", "stop it")
    assert job["attempt"] == "0" and job["finished_at"]
    assert queue.claim("w2", ["sklearn"], LONG_LEASE_MS) is None


def test_concurrent_workers_claim_every_job_exactly_once(
    queue: JobQueue, server: EmbeddedServer
) -> None:
    total, threads = 300, 8
    ids = {enqueue_simple(queue, "sklearn" if i % 3 else "tensorflow") for i in range(total)}
    start = threading.Barrier(threads)

    def work(slot: int) -> list[str]:
        claimed: list[str] = []
        client = connect(server.url)  # each worker has its own connection
        try:
            q = JobQueue(client)
            start.wait(timeout=10)
            runtimes = ["sklearn", "tensorflow"]
            while (claim := q.claim(f"w{slot}", runtimes, LONG_LEASE_MS)) is not None:
                claimed.append(claim.job_id)
                done = q.finish(claim.job_id, claim.attempt_id, "succeeded")
                assert done.applied, done
        finally:
            client.close()
        return claimed

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(work, i) for i in range(threads)]]

    counts = Counter(job_id for claimed in results for job_id in claimed)
    assert set(counts) == ids
    assert max(counts.values()) == 1
    assert queue.count_by_state()["succeeded"] == total
    assert queue.redis.zcard(queue.keys.leases) == 0


def test_reap_fails_a_job_that_no_worker_started_within_its_queue_ttl(queue: JobQueue) -> None:
    # A runtime nobody serves: no claim would ever look at this job.
    stale = enqueue_simple(queue, "tensorflow", queue_ttl_s=0.05)
    fresh = enqueue_simple(queue, "tensorflow", queue_ttl_s=3600)
    wait_past_server_time(queue, int(queue.get_job(stale)["expires_at"]))  # type: ignore[index]

    assert queue.reap() == [(stale, "failed")]
    job = queue.get_job(stale)
    assert job is not None and job["state"] == "failed" and job["error_kind"] == "expired"
    assert queue.redis.zscore(queue.keys.ready("tensorflow"), stale) is None
    assert queue.redis.zscore(queue.keys.expiring, stale) is None
    assert queue.get_job(fresh)["state"] == "queued"  # type: ignore[index]


def test_a_started_job_never_expires_from_the_queue(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, queue_ttl_s=0.2)
    claim = queue.claim("w1", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None and claim.job_id == job_id
    assert queue.redis.zscore(queue.keys.expiring, job_id) is None
    queue.finish(job_id, claim.attempt_id, "retry", error="x", error_kind="crashed")
    wait_past_server_time(queue, int(queue.get_job(job_id)["expires_at"]))  # type: ignore[index]
    assert queue.reap() == []
    again = queue.claim("w1", ["sklearn"], LONG_LEASE_MS)
    assert again is not None and again.job_id == job_id  # the retry runs, not "expired"


# Found by the model check (test_engine_model.py); kept as plain regressions.


def test_a_retry_of_a_job_whose_cancel_was_requested_cancels_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=3)
    claim = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None
    queue.cancel(job_id, "stop it")
    done = queue.finish(job_id, claim.attempt_id, "retry", error="x", error_kind="crashed")
    assert (done.applied, done.state) == (True, "cancelled")
    assert queue.claim("w", ["sklearn"], LONG_LEASE_MS) is None


def test_a_released_job_never_expires_from_the_queue(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, queue_ttl_s=0.05)
    claim = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert claim is not None
    assert queue.release(job_id, claim.attempt_id, "shutting down")
    wait_past_server_time(queue, int(queue.get_job(job_id)["expires_at"]))  # type: ignore[index]
    assert queue.reap() == []
    again = queue.claim("w", ["sklearn"], LONG_LEASE_MS)
    assert again is not None and again.job_id == job_id
