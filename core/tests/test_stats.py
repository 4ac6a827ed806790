"""The statistics and the activity stream the Lua scripts keep, against a real server:
jobs run through the engine to every end (success, failure with an error kind, retry,
dead, cancelled queued and running, lost worker, expired, an inference batch), then
``trainyard.stats`` reads the counters and histograms; the global activity stream gets
each state change, the small part of progress, and workers up/down/lost."""

from __future__ import annotations

import json
from typing import Any

import pytest
from queue_checks import (
    enqueue_inference,
    enqueue_simple,
    wait_for_lease_expiry,
    wait_past_server_time,
)

from trainyard.engine import Claim, FinishItem, JobQueue, Submission
from trainyard.engine_batch import run_pipelined
from trainyard.engine_types import ScriptCall
from trainyard.stats import (
    BATCH_SIZE_BOUNDS,
    QUEUE_WAIT_BOUNDS_S,
    RUN_TIME_BOUNDS_S,
    Histogram,
    read_oldest_waits,
    read_stats,
    stats_lua_table,
)
from trainyard.types import JobType

LEASE_MS = 30_000

pytestmark = pytest.mark.usefixtures("index_invariant")


def _claim(queue: JobQueue, runtime: str = "sklearn", lease_ms: int = LEASE_MS) -> Claim:
    claim = queue.claim("w1", [runtime], lease_ms)
    assert claim is not None
    return claim


def _activity(queue: JobQueue, kind: str | None = None) -> list[dict[str, Any]]:
    entries = queue.redis.xrange(queue.keys.activity)
    return [
        {"kind": fields["kind"], **json.loads(fields["data"])}
        for _, fields in entries
        if kind is None or fields["kind"] == kind
    ]


def _assert_well_formed(h: Histogram, bounds: tuple[float, ...]) -> None:
    assert [b for b, _ in h.buckets] == [*map(float, bounds), float("inf")]
    counts = [n for _, n in h.buckets]
    assert counts == sorted(counts), "cumulative buckets never decrease"
    assert counts[-1] == h.count and h.sum >= 0


def test_a_success_is_counted_with_its_queue_wait_and_run_time(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    assert queue.finish(job_id, claim.attempt_id, "succeeded", error_kind="ignored").applied

    stats = read_stats(queue.redis, queue.keys)
    # A success has no error kind, whatever the caller passed.
    assert [(s.labels, s.value) for s in stats.finished.samples] == [
        (("sklearn", "training", "succeeded", ""), 1)
    ]
    for family, bounds in ((stats.queue_wait, QUEUE_WAIT_BOUNDS_S),
                           (stats.run_time, RUN_TIME_BOUNDS_S)):  # fmt: skip
        h = family.get(runtime="sklearn", job_type="training", outcome="succeeded")
        assert h is not None and h.count == 1
        _assert_well_formed(h, bounds)
        assert h.sum < 5  # seconds, not milliseconds
    assert stats.retries.samples == () and stats.dead_letters.samples == ()
    assert stats.batch_size.series == ()


def test_run_time_lands_in_the_bucket_of_its_bound(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    # The attempt started 3 s ago: at or under the 5 s bound, above 2.5 s.
    started = queue.server_time_ms() - 3000
    queue.redis.hset(queue.keys.job(job_id), "started_at", started)
    queue.redis.hset(queue.keys.job(job_id), "ready_at", started - 700)
    queue.finish(job_id, claim.attempt_id, "succeeded")

    stats = read_stats(queue.redis, queue.keys)
    run = stats.run_time.get(runtime="sklearn", job_type="training", outcome="succeeded")
    assert run is not None
    buckets = dict(run.buckets)
    assert buckets[2.5] == 0 and buckets[5.0] == 1
    assert 3.0 <= run.sum < 4.0
    wait = stats.queue_wait.get(runtime="sklearn", job_type="training", outcome="succeeded")
    assert wait is not None and wait.sum == 0.7
    assert dict(wait.buckets)[0.5] == 0 and dict(wait.buckets)[1.0] == 1


def test_failures_by_error_kind_and_unknown_kinds_as_other(queue: JobQueue) -> None:
    for kind in ("user_error", "timeout", "something_new"):
        job_id = enqueue_simple(queue)
        claim = _claim(queue)
        queue.finish(job_id, claim.attempt_id, "failed", error="boom", error_kind=kind)

    finished = read_stats(queue.redis, queue.keys).finished
    assert finished.get(outcome="failed") == 3
    assert finished.get(outcome="failed", error_kind="user_error") == 1
    assert finished.get(outcome="failed", error_kind="timeout") == 1
    assert finished.get(outcome="failed", error_kind="other") == 1
    assert finished.get(error_kind="something_new") == 0


def test_a_retry_then_dead_counts_retries_and_a_dead_letter(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    first = _claim(queue)
    assert queue.finish(job_id, first.attempt_id, "retry", error="x", error_kind="crashed",
                        retry_delay_ms=0).state == "retrying"  # fmt: skip
    second = _claim(queue)  # the claim promotes the due retry
    assert queue.finish(job_id, second.attempt_id, "retry", error="x", error_kind="crashed",
                        retry_delay_ms=0).state == "dead"  # fmt: skip

    stats = read_stats(queue.redis, queue.keys)
    assert stats.retries.get(runtime="sklearn", job_type="training") == 1
    assert stats.finished.get(outcome="dead", error_kind="crashed") == 1
    assert [(s.labels, s.value) for s in stats.dead_letters.samples] == [
        (("sklearn", "training"), 1)
    ]
    assert stats.run_time.get(runtime="sklearn", job_type="training", outcome="dead") is not None

    # A redrive is a new job: nothing more is counted until it ends.
    assert queue.redrive(job_id).redriven
    assert read_stats(queue.redis, queue.keys) == stats


def test_cancel_while_queued_counts_the_wait_but_no_run_time(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    assert queue.cancel(job_id).state == "cancelled"
    stats = read_stats(queue.redis, queue.keys)
    assert stats.finished.get(outcome="cancelled", error_kind="cancelled") == 1
    labels = {"runtime": "sklearn", "job_type": "training", "outcome": "cancelled"}
    wait = stats.queue_wait.get(**labels)
    assert wait is not None and wait.count == 1
    assert stats.run_time.get(**labels) is None


def test_cancel_while_running_is_counted_once_when_the_worker_ends_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    assert queue.cancel(job_id).state == "running"
    assert read_stats(queue.redis, queue.keys).finished.samples == ()
    # The worker's retry is turned into the cancellation (finish.lua).
    queue.finish(job_id, claim.attempt_id, "retry", error="stopped", error_kind="killed")
    stats = read_stats(queue.redis, queue.keys)
    assert stats.finished.get() == 1
    assert stats.finished.get(outcome="cancelled", error_kind="cancelled") == 1
    assert stats.retries.get() == 0


def test_a_lost_worker_is_a_retry_then_dead_and_expired_jobs_fail(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    for _ in range(2):
        claim = _claim(queue, lease_ms=30)
        wait_for_lease_expiry(queue, claim)
        queue.reap()
    assert queue.get_job(job_id)["state"] == "dead"  # type: ignore[index]

    never = enqueue_simple(queue, "tensorflow", queue_ttl_s=0.03)
    wait_past_server_time(queue, int(queue.get_job(never)["expires_at"]))  # type: ignore[index]
    assert (never, "failed") in queue.reap()

    stats = read_stats(queue.redis, queue.keys)
    assert stats.retries.get(runtime="sklearn") == 1
    assert stats.finished.get(runtime="sklearn", outcome="dead", error_kind="lost") == 1
    assert stats.finished.get(runtime="tensorflow", outcome="failed", error_kind="expired") == 1
    expired_wait = stats.queue_wait.get(runtime="tensorflow", job_type="training",
                                        outcome="failed")  # fmt: skip
    assert expired_wait is not None and expired_wait.sum >= 0.03


def test_an_inference_batch_is_one_batch_size_observation(queue: JobQueue) -> None:
    ids = [enqueue_inference(queue, "m1") for _ in range(3)]
    first = _claim(queue)
    more = queue.claim_batch("w1", "sklearn", "m1", LEASE_MS, 5)
    claims = [first, *more]
    assert sorted(c.job_id for c in claims) == sorted(ids)
    items = [FinishItem(c.job_id, c.attempt_id, "succeeded", {"prediction": 1}) for c in claims]
    assert all(o.applied for o in queue.finish_many(items))
    # A lone inference job finished on its own: a batch of one.
    lone = enqueue_inference(queue, "m1")
    claim = _claim(queue)
    queue.finish(lone, claim.attempt_id, "failed", error="bad input", error_kind="user_error")

    stats = read_stats(queue.redis, queue.keys)
    h = stats.batch_size.get(runtime="sklearn")
    assert h is not None
    _assert_well_formed(h, BATCH_SIZE_BOUNDS)
    assert (h.count, h.sum) == (2, 4.0)
    assert dict(h.buckets)[1.0] == 1 and dict(h.buckets)[2.0] == 1 and dict(h.buckets)[4.0] == 2
    assert stats.finished.get(job_type="inference", outcome="succeeded") == 3
    assert stats.finished.get(job_type="inference", outcome="failed", error_kind="user_error") == 1
    # Training jobs finished together are no batch.
    jobs = [enqueue_simple(queue) for _ in range(2)]
    claims = [_claim(queue) for _ in jobs]
    queue.finish_many([FinishItem(c.job_id, c.attempt_id, "succeeded") for c in claims])
    assert read_stats(queue.redis, queue.keys).batch_size == stats.batch_size


def test_the_lua_table_shares_the_python_bounds() -> None:
    table = stats_lua_table()
    assert "wait_ms = {5, 10, 25, 50, 100," in table
    assert "86400000}" in table
    assert "batch = {1, 2, 4, 8, 16, 32, 64, 128, 256}" in table
    assert "user_error = true" in table and "expired = true" in table


def test_every_state_change_goes_to_the_activity_stream(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    claim = _claim(queue)
    queue.report(job_id, claim.attempt_id, "progress", {
        "epoch": 1, "epochs": 3, "step": 5, "steps": 10, "fraction": 0.16, "elapsed_s": 2.0,
        "phase": "train", "metrics": {"loss": 0.5}, "loss": 0.5,
    })  # fmt: skip
    queue.report(job_id, claim.attempt_id, "log", {"stream": "stdout", "line": "hi"})
    queue.finish(job_id, claim.attempt_id, "retry", error="x", error_kind="crashed")
    queue.cancel(job_id)
    inference = enqueue_inference(queue, "m1", "tensorflow")

    states = [(e["job_id"], e["state"]) for e in _activity(queue, "state")]
    assert states == [
        (job_id, "queued"), (job_id, "running"), (job_id, "retrying"), (job_id, "cancelled"),
        (inference, "queued"),
    ]  # fmt: skip
    for entry in _activity(queue, "state"):
        assert set(entry) == {"kind", "job_id", "state", "runtime", "job_type"}
    assert _activity(queue, "state")[-1]["runtime"] == "tensorflow"
    assert _activity(queue, "state")[-1]["job_type"] == "inference"
    # Progress: only the small fields; logs are not in the activity stream.
    assert _activity(queue, "progress") == [{
        "kind": "progress", "job_id": job_id, "epoch": 1, "epochs": 3, "step": 5,
        "steps": 10, "fraction": 0.16,
    }]  # fmt: skip
    assert {e["kind"] for e in _activity(queue)} == {"state", "progress"}


def test_enqueue_many_writes_one_activity_entry_per_created_job(queue: JobQueue) -> None:
    subs = [
        Submission(job_type=JobType.TRAINING, runtime="sklearn", request={"n": n},
                   idempotency_key="same" if n < 2 else None)
        for n in range(5)
    ]  # fmt: skip
    created = [job_id for job_id, new in queue.enqueue_many(subs) if new]
    assert len(created) == 4
    assert [e["job_id"] for e in _activity(queue, "state")] == created


def test_workers_up_down_and_lost_in_the_activity_stream(queue: JobQueue) -> None:
    queue.heartbeat("w-a", {"runtime": "sklearn"}, 60_000)
    queue.heartbeat("w-a", {"runtime": "sklearn"}, 60_000)  # a refresh: no entry
    queue.heartbeat("w-b", {"runtime": "tensorflow"}, 30)
    queue.unregister_worker("w-a")
    queue.unregister_worker("w-a")  # gone already: no second "down"
    wait_past_server_time(queue, queue.server_time_ms() + 40)
    queue.heartbeat("w-c", {"runtime": "sklearn"}, 30)  # w-b's registration is older

    events = [(e["worker_id"], e["runtime"], e["event"]) for e in _activity(queue, "worker")]
    assert events == [
        ("w-a", "sklearn", "up"), ("w-b", "tensorflow", "up"), ("w-a", "sklearn", "down"),
        ("w-b", "tensorflow", "lost"), ("w-c", "sklearn", "up"),
    ]  # fmt: skip
    assert queue.redis.hgetall(queue.keys.worker_runtimes) == {"w-c": "sklearn"}
    assert queue.redis.zrange(queue.keys.workers, 0, -1) == ["w-c"]


def test_a_worker_silent_too_long_comes_back_lost_then_up(queue: JobQueue) -> None:
    queue.heartbeat("w-a", {"runtime": "sklearn"}, 30)
    wait_past_server_time(queue, queue.server_time_ms() + 40)
    queue.heartbeat("w-a", {"runtime": "sklearn"}, 30)
    events = [e["event"] for e in _activity(queue, "worker")]
    assert events == ["up", "lost", "up"]


def test_the_activity_stream_is_capped(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    calls: list[ScriptCall] = [
        ([queue.keys.job(job_id)], [job_id, claim.attempt_id, "progress", f'{{"step":{n}}}'])
        for n in range(10_500)
    ]
    run_pipelined(queue.redis, queue._scripts.report, calls)
    # MAXLEN ~ 10000: trimmed by whole nodes, so a little over is allowed.
    assert 10_000 <= queue.redis.xlen(queue.keys.activity) < 10_500


def test_oldest_wait_per_runtime(queue: JobQueue) -> None:
    assert read_oldest_waits(queue.redis, queue.keys, ["sklearn", "tensorflow"]) == {
        "sklearn": 0.0, "tensorflow": 0.0,
    }  # fmt: skip
    job_id = enqueue_simple(queue)
    queue.redis.hset(queue.keys.job(job_id), "ready_at", queue.server_time_ms() - 4000)
    enqueue_simple(queue)
    waits = read_oldest_waits(queue.redis, queue.keys, ["sklearn", "tensorflow"])
    assert 4.0 <= waits["sklearn"] < 10.0 and waits["tensorflow"] == 0.0
