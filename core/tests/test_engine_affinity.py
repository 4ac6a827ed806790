"""Model affinity (``claim_work`` with ``set_loaded_models``), the small busy/idle write
(``set_worker_state``) and the cancel message on the worker's channel, against a real
server. After each test the index invariant is checked."""

from __future__ import annotations

import time

import pytest
from queue_checks import enqueue_inference, enqueue_simple, wait_past_server_time

from trainyard.engine import JobQueue
from trainyard.types import JobType, Priority

LEASE_MS = 30_000
TTL_MS = 20_000
LONG_AFFINITY_MS = 60_000  # longer than any test: a skipped job stays skipped

pytestmark = pytest.mark.usefixtures("index_invariant")


def _claim_id(
    queue: JobQueue, worker_id: str, loaded: tuple[str, ...] = (), affinity_ms: int = 0
) -> str | None:
    result = queue.claim_work(
        worker_id, ["sklearn"], LEASE_MS, loaded_models=loaded, affinity_ms=affinity_ms
    )
    return result.claim.job_id if result.claim else None


# -- which job a worker takes --------------------------------------------------------------


def test_a_worker_takes_its_loaded_models_job_before_older_jobs_held_elsewhere(
    queue: JobQueue,
) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    queue.set_loaded_models("a", "sklearn", ["m2"], TTL_MS)
    m1_first = enqueue_inference(queue, "m1")
    m1_second = enqueue_inference(queue, "m1")
    m2_job = enqueue_inference(queue, "m2")

    assert _claim_id(queue, "a", ("m2",), LONG_AFFINITY_MS) == m2_job
    assert _claim_id(queue, "b", ("m1",), LONG_AFFINITY_MS) == m1_first
    assert _claim_id(queue, "b", ("m1",), LONG_AFFINITY_MS) == m1_second


def test_a_loaded_models_job_is_found_behind_more_than_the_scan_of_other_jobs(
    queue: JobQueue,
) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    for _ in range(80):  # more than claim.lua's AFFINITY_SCAN
        enqueue_inference(queue, "m1")
    mine = enqueue_inference(queue, "m2")
    assert _claim_id(queue, "a", ("m2",), LONG_AFFINITY_MS) == mine


def test_priority_still_comes_first_among_the_jobs_a_worker_may_take(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    enqueue_inference(queue, "m1", priority=Priority.HIGH)  # b's
    normal = enqueue_inference(queue, "m2")
    high = enqueue_inference(queue, "m2", priority=Priority.HIGH)
    assert _claim_id(queue, "a", ("m2",), LONG_AFFINITY_MS) == high
    assert _claim_id(queue, "a", ("m2",), LONG_AFFINITY_MS) == normal


def test_a_job_held_elsewhere_is_skipped_with_a_recheck_time(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    job_id = enqueue_inference(queue, "m1")
    ready_at = int(queue.get_job(job_id)["ready_at"])  # type: ignore[index]

    earliest = queue.server_time_ms()
    result = queue.claim_work("a", ["sklearn"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS)
    latest = queue.server_time_ms()

    assert result.claim is None
    assert result.recheck_ms is not None
    # It becomes eligible once it has been ready for the affinity, and recheck says when.
    assert ready_at + LONG_AFFINITY_MS - latest <= result.recheck_ms
    assert result.recheck_ms <= ready_at + LONG_AFFINITY_MS - earliest
    assert queue.get_job(job_id)["state"] == "queued"  # type: ignore[index]
    assert _claim_id(queue, "b", ("m1",), LONG_AFFINITY_MS) == job_id


def test_a_skipped_job_wakes_its_holders_not_the_skipping_worker(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    queue.set_loaded_models("c", "sklearn", ["m1"], TTL_MS)
    queue.set_loaded_models("a", "sklearn", ["m2"], TTL_MS)
    enqueue_inference(queue, "m1")
    assert queue.wait_for_work(["sklearn"], 1.0, worker_id="a")  # a got the enqueue's token

    for _ in range(3):  # skipped again and again: still one token waiting per holder
        result = queue.claim_work(
            "a", ["sklearn"], LEASE_MS, loaded_models=["m2"], affinity_ms=LONG_AFFINITY_MS
        )
        assert result.claim is None

    assert (r.llen(k.wake_worker("b")), r.llen(k.wake_worker("c"))) == (1, 1)
    assert not r.exists(k.wake_worker("a"))
    assert 0 < r.pttl(k.wake_worker("b")) <= 20_000
    # b blocks on its own list beside the runtimes' (none of which has a token now).
    assert queue.wait_for_work(["sklearn", "tensorflow"], 1.0, worker_id="b")
    assert _claim_id(queue, "b", ("m1",), LONG_AFFINITY_MS) is not None
    assert not queue.wait_for_work(["sklearn"], 0.05, worker_id="a")  # nothing for a
    queue.unregister_worker("c")
    assert not r.exists(k.wake_worker("c"))


def test_a_job_held_elsewhere_goes_to_any_worker_once_it_waited_the_affinity(
    queue: JobQueue,
) -> None:
    affinity_ms = 150
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    job_id = enqueue_inference(queue, "m1")
    ready_at = int(queue.get_job(job_id)["ready_at"])  # type: ignore[index]
    if queue.server_time_ms() < ready_at + affinity_ms - 50:  # a slow machine may be past it
        result = queue.claim_work("a", ["sklearn"], LEASE_MS, affinity_ms=affinity_ms)
        assert result.claim is None and result.recheck_ms is not None

    wait_past_server_time(queue, ready_at + affinity_ms)

    assert _claim_id(queue, "a", (), affinity_ms) == job_id


def test_a_model_nobody_holds_is_claimed_at_once(queue: JobQueue) -> None:
    nobody = enqueue_inference(queue, "m1")
    assert _claim_id(queue, "a", ("m2",), LONG_AFFINITY_MS) == nobody

    # A worker's own stale entry (it unloaded the model but has not said so yet) does not
    # hold a job back from it.
    queue.set_loaded_models("a", "sklearn", ["m3"], TTL_MS)
    own = enqueue_inference(queue, "m3")
    assert _claim_id(queue, "a", (), LONG_AFFINITY_MS) == own


def test_a_holder_that_stopped_refreshing_holds_nothing(queue: JobQueue) -> None:
    queue.set_loaded_models("gone", "sklearn", ["m1"], TTL_MS)
    seen = int(queue.redis.zscore(queue.keys.model_holders("sklearn", "m1"), "gone") or 0)
    job_id = enqueue_inference(queue, "m1")
    wait_past_server_time(queue, seen + 100)

    live = queue.claim_work("a", ["sklearn"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS)
    assert live.claim is None  # within the default liveness window: still held
    result = queue.claim_work(
        "a", ["sklearn"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS, holder_ttl_ms=100
    )
    assert result.claim is not None and result.claim.job_id == job_id
    assert not queue.redis.exists(queue.keys.model_holders("sklearn", "m1"))  # pruned


def test_a_model_held_on_another_runtime_does_not_count(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "tensorflow", ["m1"], TTL_MS)
    job_id = enqueue_inference(queue, "m1")
    assert _claim_id(queue, "a", (), LONG_AFFINITY_MS) == job_id


def test_training_and_untagged_jobs_are_not_held_back(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    enqueue_inference(queue, "m1")
    training = enqueue_simple(queue)
    untagged, _ = queue.enqueue(
        job_type=JobType.INFERENCE, runtime="sklearn", request={"model_id": "m1"}
    )
    assert _claim_id(queue, "a", (), LONG_AFFINITY_MS) == training
    assert _claim_id(queue, "a", (), LONG_AFFINITY_MS) == untagged
    result = queue.claim_work("a", ["sklearn"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS)
    assert result.claim is None and result.recheck_ms is not None


def test_without_affinity_the_order_is_plain_priority_and_fifo(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    first = enqueue_inference(queue, "m1")
    second = enqueue_inference(queue, "m2")
    third = enqueue_inference(queue, "m1")
    result = queue.claim_work("a", ["sklearn"], LEASE_MS, loaded_models=["m2"], affinity_ms=0)
    assert result.claim is not None and result.claim.job_id == first
    assert result.recheck_ms is None
    assert _claim_id(queue, "a", ("m2",)) == second
    claim = queue.claim("a", ["sklearn"], LEASE_MS)  # the old call: no affinity either
    assert claim is not None and claim.job_id == third
    empty = queue.claim_work("a", ["sklearn"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS)
    assert (empty.claim, empty.recheck_ms) == (None, None)  # nothing skipped: no recheck


def test_affinity_spans_the_runtimes_a_worker_serves(queue: JobQueue) -> None:
    queue.set_loaded_models("b", "sklearn", ["m1"], TTL_MS)
    enqueue_inference(queue, "m1", priority=Priority.HIGH)
    other = enqueue_inference(queue, "m1", runtime="tensorflow")
    result = queue.claim_work(
        "a", ["sklearn", "tensorflow"], LEASE_MS, affinity_ms=LONG_AFFINITY_MS
    )
    assert result.claim is not None and result.claim.job_id == other


# -- what workers record -------------------------------------------------------------------


def test_set_loaded_models_records_holders_and_forgets_unloaded_models(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    before = queue.server_time_ms()
    queue.set_loaded_models("a", "sklearn", ["m1", "m2"], TTL_MS)
    queue.set_loaded_models("a", "tensorflow", ["t1"], TTL_MS)
    seen = r.zscore(k.model_holders("sklearn", "m1"), "a")
    assert seen is not None and before <= seen <= queue.server_time_ms()
    assert r.smembers(k.worker_models("a")) == {"sklearn:m1", "sklearn:m2", "tensorflow:t1"}
    assert 0 < r.pttl(k.worker_models("a")) <= TTL_MS

    queue.set_loaded_models("b", "sklearn", ["m2"], TTL_MS)
    queue.set_loaded_models("a", "sklearn", ["m3"], TTL_MS)

    assert r.zscore(k.model_holders("sklearn", "m1"), "a") is None
    assert r.zrange(k.model_holders("sklearn", "m2"), 0, -1) == ["b"]
    assert r.zrange(k.model_holders("sklearn", "m3"), 0, -1) == ["a"]
    assert r.zrange(k.model_holders("tensorflow", "t1"), 0, -1) == ["a"]  # other runtime kept
    assert r.smembers(k.worker_models("a")) == {"sklearn:m3", "tensorflow:t1"}

    queue.unregister_worker("a")
    assert not r.exists(k.worker_models("a"))
    assert not r.exists(k.model_holders("sklearn", "m3"), k.model_holders("tensorflow", "t1"))
    assert r.zrange(k.model_holders("sklearn", "m2"), 0, -1) == ["b"]


def test_worker_state_writes_two_fields_of_a_registered_worker_only(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    assert queue.set_worker_state("w1", "busy", "job-1") is False
    assert not r.exists(k.worker("w1"))  # no partial hash without a registration

    queue.heartbeat("w1", {"runtime": "sklearn", "state": "idle", "current_job": ""}, TTL_MS)
    registered = r.hgetall(k.worker("w1"))
    ttl = r.pttl(k.worker("w1"))

    assert queue.set_worker_state("w1", "busy", "job-1") is True
    assert r.hgetall(k.worker("w1")) == {**registered, "state": "busy", "current_job": "job-1"}
    assert 0 < r.pttl(k.worker("w1")) <= ttl  # the registration's lifetime is untouched
    assert queue.set_worker_state("w1", "idle", None) is True
    assert r.hget(k.worker("w1"), "current_job") == ""


def test_a_claim_marks_its_registered_worker_busy_with_the_job(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    queue.heartbeat("w1", {"runtime": "sklearn", "state": "idle", "current_job": ""}, TTL_MS)
    registered = r.hgetall(k.worker("w1"))
    ttl = r.pttl(k.worker("w1"))
    job_id = enqueue_simple(queue)

    claim = queue.claim_work("w1", ["sklearn"], LEASE_MS).claim

    assert claim is not None and claim.job_id == job_id
    assert r.hgetall(k.worker("w1")) == {**registered, "state": "busy", "current_job": job_id}
    assert 0 < r.pttl(k.worker("w1")) <= ttl  # the registration's lifetime is untouched


def test_a_claim_by_an_unregistered_worker_writes_no_worker_hash(queue: JobQueue) -> None:
    enqueue_simple(queue)
    assert queue.claim_work("w1", ["sklearn"], LEASE_MS).claim is not None
    assert not queue.redis.exists(queue.keys.worker("w1"))


def test_nothing_to_claim_leaves_the_worker_hash_as_it_was(queue: JobQueue) -> None:
    k, r = queue.keys, queue.redis
    queue.heartbeat("w1", {"runtime": "sklearn", "state": "idle", "current_job": ""}, TTL_MS)
    registered = r.hgetall(k.worker("w1"))
    assert queue.claim_work("w1", ["sklearn"], LEASE_MS).claim is None
    assert queue.claim_batch("w1", "sklearn", "m1", LEASE_MS, 4) == []
    assert r.hgetall(k.worker("w1")) == registered


def test_a_claimed_batch_marks_its_registered_worker_busy_with_the_first_job(
    queue: JobQueue,
) -> None:
    k, r = queue.keys, queue.redis
    queue.heartbeat("w1", {"runtime": "sklearn", "state": "idle", "current_job": ""}, TTL_MS)
    first = enqueue_inference(queue, "m1")
    enqueue_inference(queue, "m1")

    claims = queue.claim_batch("w1", "sklearn", "m1", LEASE_MS, 4)

    assert len(claims) == 2 and claims[0].job_id == first
    assert r.hget(k.worker("w1"), "state") == "busy"
    assert r.hget(k.worker("w1"), "current_job") == first
    enqueue_inference(queue, "m1")
    assert len(queue.claim_batch("w2", "sklearn", "m1", LEASE_MS, 4)) == 1
    assert not r.exists(k.worker("w2"))  # not registered: no partial hash


# -- cancel reaches the worker -------------------------------------------------------------


def test_cancel_of_a_running_job_is_published_on_its_workers_channel(queue: JobQueue) -> None:
    waiting = enqueue_simple(queue)
    running = enqueue_simple(queue, priority=Priority.HIGH)
    claim = queue.claim("w1", ["sklearn"], LEASE_MS)
    assert claim is not None and claim.job_id == running
    assert queue.cancel_channel("w1") == queue.keys.cancels("w1")
    pubsub = queue.redis.pubsub(ignore_subscribe_messages=True)
    other = queue.redis.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(queue.cancel_channel("w1"))
        other.subscribe(queue.cancel_channel("w2"))
        assert pubsub.get_message(timeout=5.0) is None  # consume the subscribe reply

        assert queue.cancel(waiting).state == "cancelled"  # queued: nothing to tell
        assert queue.cancel(running, "stop").state == "running"

        message = None
        deadline = time.monotonic() + 5.0
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=deadline - time.monotonic())
        assert message is not None, "no cancel message within 5 s"
        # The first message on the channel is the running job's: none for the queued one.
        assert (message["channel"], message["data"]) == (queue.cancel_channel("w1"), running)
        assert other.get_message(timeout=0.2) is None  # another worker hears nothing
    finally:
        pubsub.close()
        other.close()
    assert queue.renew(running, claim.attempt_id, LEASE_MS).cancel_requested  # still flagged
