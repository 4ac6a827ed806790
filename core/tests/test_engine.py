"""The engine's transitions against a real server: enqueue, claim, renew, report, finish,
retry, cancel, queue TTL, and every script's refusals. After each test the index
invariant is checked (see ``queue_checks.assert_index_invariants``)."""

from __future__ import annotations

import json

import pytest
from queue_checks import (
    assert_index_invariants,
    enqueue_simple,
    snapshot,
    wait_past_server_time,
)

from trainyard.engine import JobQueue
from trainyard.types import JobType, Priority

LEASE_MS = 30_000


pytestmark = pytest.mark.usefixtures("index_invariant")


def _claim(queue: JobQueue, runtimes: tuple[str, ...] = ("sklearn",), lease_ms: int = LEASE_MS):
    claim = queue.claim("worker-1", list(runtimes), lease_ms)
    assert claim is not None
    return claim


# -- enqueue ---------------------------------------------------------------------------


def test_enqueue_creates_a_queued_job_in_every_index_with_a_queued_event(queue: JobQueue) -> None:
    k = queue.keys
    job_id, created = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime="tensorflow",
        request={"model_id": "m1", "input_data": "x"},
        priority=Priority.HIGH,
        max_attempts=4,
        timeout_s=12.5,
    )
    assert created
    job = queue.get_job(job_id)
    assert job is not None
    assert job["state"] == "queued"
    assert job["type"] == "inference"
    assert job["runtime"] == "tensorflow"
    assert job["priority"] == "high"
    assert job["max_attempts"] == "4"
    assert job["timeout_s"] == "12.5"
    assert job["attempt"] == "0"
    assert json.loads(job["request"]) == {"model_id": "m1", "input_data": "x"}
    r = queue.redis
    for index in (
        k.index_all,
        k.index_state("queued"),
        k.index_runtime("tensorflow"),
        k.index_type("inference"),
        k.ready("tensorflow"),
    ):
        assert r.zscore(index, job_id) is not None, index
    assert r.zscore(k.index_runtime("sklearn"), job_id) is None
    assert r.llen(k.wake("tensorflow")) == 1
    events = queue.events(job_id)
    assert [(e.kind, e.data["state"]) for e in events] == [("state", "queued")]


def test_idempotency_key_returns_the_same_job_and_creates_nothing_new(queue: JobQueue) -> None:
    first = enqueue_simple(queue, idempotency_key="nightly-42")
    keys_before = sorted(queue.redis.scan_iter(count=1000))
    seq_before = queue.redis.get(queue.keys.seq)
    before = snapshot(queue, first)

    again, created = queue.enqueue(
        job_type=JobType.TRAINING,
        runtime="sklearn",
        request={"something": "else"},
        idempotency_key="nightly-42",
    )

    assert (again, created) == (first, False)
    assert sorted(queue.redis.scan_iter(count=1000)) == keys_before
    assert queue.redis.get(queue.keys.seq) == seq_before
    assert snapshot(queue, first) == before
    other = enqueue_simple(queue, idempotency_key="nightly-43")
    assert other != first


def test_enqueue_without_idempotency_key_always_creates_a_new_job(queue: JobQueue) -> None:
    assert enqueue_simple(queue) != enqueue_simple(queue)
    assert queue.redis.zcard(queue.keys.index_all) == 2


# -- claim order -----------------------------------------------------------------------


def test_claim_on_an_empty_queue_returns_none(queue: JobQueue) -> None:
    assert queue.claim("w", ["sklearn", "tensorflow"], LEASE_MS) is None
    enqueue_simple(queue, "tensorflow")
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None


def test_claim_takes_high_before_normal_before_low_fifo_within_a_level_across_runtimes(
    queue: JobQueue,
) -> None:
    plan = [
        ("low", "sklearn"),
        ("normal", "tensorflow"),
        ("high", "sklearn"),
        ("low", "tensorflow"),
        ("normal", "sklearn"),
        ("high", "tensorflow"),
        ("high", "sklearn"),
        ("normal", "tensorflow"),
    ]
    ids = [enqueue_simple(queue, rt, priority=Priority(p)) for p, rt in plan]
    expected = [ids[i] for i in (2, 5, 6)] + [ids[i] for i in (1, 4, 7)] + [ids[i] for i in (0, 3)]

    claimed = []
    while (claim := queue.claim("w", ["sklearn", "tensorflow"], LEASE_MS)) is not None:
        claimed.append(claim.job_id)
        queue.finish(claim.job_id, claim.attempt_id, "succeeded")
    assert claimed == expected


def test_claim_counts_the_attempt_and_sets_a_lease(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    before = queue.server_time_ms()
    claim = _claim(queue, lease_ms=10_000)

    assert claim.job_id == job_id
    assert claim.job["state"] == "running"
    assert claim.job["attempt"] == "1"
    assert claim.job["worker_id"] == "worker-1"
    assert len(claim.attempt_id) == 24
    lease_until = int(claim.job["lease_until"])
    assert before + 10_000 <= lease_until <= queue.server_time_ms() + 10_000
    assert queue.redis.zscore(queue.keys.leases, job_id) == lease_until
    assert queue.redis.zscore(queue.keys.ready("sklearn"), job_id) is None
    last = queue.events(job_id)[-1]
    assert last.data == {"state": "running", "attempt": 1, "worker_id": "worker-1"}


# -- renew, report, fencing ------------------------------------------------------------


def test_renew_extends_the_lease(queue: JobQueue) -> None:
    enqueue_simple(queue)
    claim = _claim(queue, lease_ms=1_000)
    first = int(claim.job["lease_until"])

    renewal = queue.renew(claim.job_id, claim.attempt_id, 60_000)

    assert renewal.held and not renewal.cancel_requested
    lease_until = int(queue.redis.hget(queue.keys.job(claim.job_id), "lease_until") or 0)
    assert lease_until >= first + 59_000
    assert queue.redis.zscore(queue.keys.leases, claim.job_id) == lease_until


def test_renew_reports_a_cancel_request(queue: JobQueue) -> None:
    enqueue_simple(queue)
    claim = _claim(queue)
    outcome = queue.cancel(claim.job_id, "user asked")
    assert (outcome.found, outcome.state, outcome.changed) == (True, "running", True)

    renewal = queue.renew(claim.job_id, claim.attempt_id, LEASE_MS)
    assert renewal.held and renewal.cancel_requested

    done = queue.finish(claim.job_id, claim.attempt_id, "cancelled", error_kind="cancelled")
    assert (done.applied, done.state) == (True, "cancelled")
    assert [e.kind for e in queue.events(claim.job_id)][-2:] == ["cancel_requested", "state"]


def test_report_records_progress_and_logs(queue: JobQueue) -> None:
    enqueue_simple(queue)
    claim = _claim(queue)
    assert queue.report(claim.job_id, claim.attempt_id, "progress", {"epoch": 1, "of": 3})
    assert queue.report(claim.job_id, claim.attempt_id, "log", {"line": "hello"})
    job = queue.get_job(claim.job_id)
    assert job is not None and json.loads(job["progress"]) == {"epoch": 1, "of": 3}
    kinds = [(e.kind, e.data) for e in queue.events(claim.job_id)][-2:]
    assert kinds == [("progress", {"epoch": 1, "of": 3}), ("log", {"line": "hello"})]


def test_every_fenced_write_with_a_wrong_attempt_id_is_refused_and_changes_nothing(
    queue: JobQueue,
) -> None:
    enqueue_simple(queue)
    claim = _claim(queue)
    before = snapshot(queue, claim.job_id)
    wrong = "0" * 24

    renewal = queue.renew(claim.job_id, wrong, 99_000)
    assert (renewal.held, renewal.state) == (False, "running")
    assert not queue.report(claim.job_id, wrong, "progress", {"epoch": 9})
    assert not queue.report(claim.job_id, "", "log", {"line": "x"})
    for outcome in ("succeeded", "failed", "cancelled", "retry"):
        refused = queue.finish(claim.job_id, wrong, outcome, model={"model_id": "evil"})  # type: ignore[arg-type]
        assert (refused.applied, refused.state) == (False, "running")
    assert not queue.release(claim.job_id, wrong, "shutdown")

    assert snapshot(queue, claim.job_id) == before
    assert queue.get_model("evil") is None


def test_fenced_writes_on_an_unknown_job_say_missing(queue: JobQueue) -> None:
    assert queue.renew("nope", "a", 1000).state == "missing"
    assert queue.finish("nope", "a", "succeeded").state == "missing"
    assert not queue.report("nope", "a", "log", {})
    assert not queue.release("nope", "a", "x")
    assert queue.redis.dbsize() == 0


# -- finish ----------------------------------------------------------------------------


def test_finish_succeeded_stores_the_result_and_registers_the_model(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    model = {"model_id": "rf-1", "framework": "sklearn", "metrics": {"accuracy": 0.9}}

    done = queue.finish(
        job_id, claim.attempt_id, "succeeded", result={"accuracy": 0.9}, model=model
    )

    assert (done.applied, done.state) == (True, "succeeded")
    job = queue.get_job(job_id)
    assert job is not None
    assert job["state"] == "succeeded" and job["model_id"] == "rf-1"
    assert json.loads(job["result"]) == {"accuracy": 0.9}
    assert int(job["finished_at"]) >= int(job["started_at"])
    assert queue.redis.zscore(queue.keys.models, "rf-1") is not None
    assert queue.get_model("rf-1") == model
    assert queue.list_models() == [model]
    assert queue.redis.zscore(queue.keys.leases, job_id) is None


def test_finish_failed_records_the_error_and_is_not_retried(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=3)
    claim = _claim(queue)
    done = queue.finish(
        job_id, claim.attempt_id, "failed", error="bad csv", error_kind="user_error"
    )
    assert (done.applied, done.state) == (True, "failed")
    job = queue.get_job(job_id)
    assert job is not None
    assert (job["error"], job["error_kind"], job["attempt"]) == ("bad csv", "user_error", "1")
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None


def test_retry_waits_for_its_delay_then_a_claim_promotes_and_reruns_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=3)
    claim = _claim(queue)

    done = queue.finish(
        job_id, claim.attempt_id, "retry", error="boom", error_kind="crashed", retry_delay_ms=300
    )

    assert (done.applied, done.state) == (True, "retrying")
    job = queue.get_job(job_id)
    assert job is not None
    retry_at = int(job["retry_at"])
    assert queue.redis.zscore(queue.keys.delayed, job_id) == retry_at
    assert_index_invariants(queue)
    if queue.server_time_ms() < retry_at:
        assert queue.claim("w", ["sklearn"], LEASE_MS) is None  # not due yet

    wait_past_server_time(queue, retry_at)
    second = _claim(queue)
    assert second.job_id == job_id
    assert second.job["attempt"] == "2"
    assert second.attempt_id != claim.attempt_id
    assert queue.redis.zscore(queue.keys.delayed, job_id) is None
    states = [e.data.get("state") for e in queue.events(job_id) if e.kind == "state"]
    assert states == ["queued", "running", "retrying", "queued", "running"]
    # The first attempt can no longer write.
    assert not queue.finish(job_id, claim.attempt_id, "succeeded").applied


def test_retry_with_no_attempts_left_is_dead(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    first = _claim(queue)
    queue.finish(job_id, first.attempt_id, "retry", error_kind="crashed", retry_delay_ms=0)
    wait_past_server_time(queue, int(queue.get_job(job_id)["retry_at"]))  # type: ignore[index]
    second = _claim(queue)

    done = queue.finish(
        job_id, second.attempt_id, "retry", error="boom again", error_kind="crashed"
    )

    assert (done.applied, done.state) == (True, "dead")
    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["attempt"], job["error_kind"]) == ("dead", "2", "crashed")
    assert queue.redis.zscore(queue.keys.delayed, job_id) is None


# -- cancel ----------------------------------------------------------------------------


def test_cancel_a_queued_job_cancels_it_and_removes_it_from_ready(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    outcome = queue.cancel(job_id, "not needed")
    assert (outcome.found, outcome.state, outcome.changed) == (True, "cancelled", True)
    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["error_kind"], job["error"]) == (
        "cancelled",
        "cancelled",
        "not needed",
    )
    assert queue.redis.zscore(queue.keys.ready("sklearn"), job_id) is None
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None


def test_cancel_a_retrying_job_removes_it_from_delayed(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    queue.finish(job_id, claim.attempt_id, "retry", error_kind="crashed", retry_delay_ms=0)

    outcome = queue.cancel(job_id)

    assert (outcome.found, outcome.state, outcome.changed) == (True, "cancelled", True)
    assert queue.redis.zscore(queue.keys.delayed, job_id) is None
    wait_past_server_time(queue, int(queue.get_job(job_id)["retry_at"]))  # type: ignore[index]
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None
    assert queue.get_job(job_id)["state"] == "cancelled"  # type: ignore[index]


def test_cancel_a_running_job_only_flags_it(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = _claim(queue)
    outcome = queue.cancel(job_id, "stop")
    assert (outcome.found, outcome.state, outcome.changed) == (True, "running", True)
    job = queue.get_job(job_id)
    assert job is not None
    assert (job["state"], job["cancel_requested"], job["cancel_reason"]) == ("running", "1", "stop")
    assert queue.redis.zscore(queue.keys.leases, job_id) is not None
    assert queue.renew(job_id, claim.attempt_id, LEASE_MS).cancel_requested


def test_cancel_an_unknown_job_is_not_found(queue: JobQueue) -> None:
    outcome = queue.cancel("no-such-job")
    assert (outcome.found, outcome.changed) == (False, False)
    assert queue.redis.dbsize() == 0


def _make_terminal(queue: JobQueue, state: str) -> tuple[str, str]:
    """A job in ``state`` and the attempt id of its last attempt ("" if none)."""
    job_id = enqueue_simple(queue, max_attempts=1)
    if state == "cancelled":
        queue.cancel(job_id)
        return job_id, ""
    claim = _claim(queue, lease_ms=50)
    outcome = {"succeeded": "succeeded", "failed": "failed", "dead": "retry"}[state]
    done = queue.finish(job_id, claim.attempt_id, outcome, error_kind="crashed")  # type: ignore[arg-type]
    assert done.state == state
    return job_id, claim.attempt_id


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled", "dead"])
def test_a_terminal_job_never_changes_again(queue: JobQueue, state: str) -> None:
    job_id, attempt_id = _make_terminal(queue, state)
    before = snapshot(queue, job_id)
    wait_past_server_time(queue, queue.server_time_ms() + 60)  # any old lease is long past

    cancel = queue.cancel(job_id)
    assert (cancel.found, cancel.state, cancel.changed) == (True, state, False)
    for outcome in ("succeeded", "failed", "cancelled", "retry"):
        assert not queue.finish(job_id, attempt_id, outcome).applied  # type: ignore[arg-type]
    assert not queue.renew(job_id, attempt_id, LEASE_MS).held
    assert not queue.report(job_id, attempt_id, "log", {"line": "late"})
    assert not queue.release(job_id, attempt_id, "late")
    assert queue.reap() == []
    assert queue.claim("w", ["sklearn"], LEASE_MS) is None

    assert snapshot(queue, job_id) == before


# -- queue TTL -------------------------------------------------------------------------


def test_a_job_that_waited_past_its_queue_ttl_fails_as_expired_when_claimed(
    queue: JobQueue,
) -> None:
    stale = enqueue_simple(queue, queue_ttl_s=0.05, priority=Priority.HIGH)
    fresh = enqueue_simple(queue, queue_ttl_s=3600)
    expires_at = int(queue.get_job(stale)["expires_at"])  # type: ignore[index]
    wait_past_server_time(queue, expires_at)

    claim = _claim(queue)

    assert claim.job_id == fresh  # the expired one was skipped in the same call
    job = queue.get_job(stale)
    assert job is not None
    assert (job["state"], job["error_kind"], job["attempt"]) == ("failed", "expired", "0")
    assert job["finished_at"]
    assert queue.events(stale)[-1].data == {"state": "failed", "reason": "expired"}


def test_a_job_claimed_within_its_queue_ttl_runs(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, queue_ttl_s=3600)
    assert _claim(queue).job_id == job_id
