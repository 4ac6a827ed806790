"""Batch calls against a real server: enqueue_many, claim_batch (from the per-model ready
index, see ``test_engine_ready_index.py``), finish_many, renew_many; a half-cancelled
batch and a batch whose worker died. After each test the index invariant is checked (see
``queue_checks.assert_index_invariants``)."""

from __future__ import annotations

import json

import pytest
from queue_checks import (
    enqueue_inference,
    enqueue_simple,
    in_model_queue,
    snapshot,
    wait_for_lease_expiry,
    wait_past_server_time,
)

from trainyard.engine import Claim, FinishItem, JobQueue, Submission
from trainyard.types import JobType, Priority

LEASE_MS = 30_000

pytestmark = pytest.mark.usefixtures("index_invariant")



def _submission(n: int, **options: object) -> Submission:
    return Submission(
        job_type=JobType.TRAINING,
        runtime="sklearn",
        request={"model_type": "random_forest", "n": n},
        **options,  # type: ignore[arg-type]
    )


# -- enqueue_many ----------------------------------------------------------------------


def test_enqueue_many_queues_every_job_in_order(queue: JobQueue) -> None:
    answers = queue.enqueue_many([_submission(n) for n in range(5)])

    assert [created for _, created in answers] == [True] * 5
    ids = [job_id for job_id, _ in answers]
    assert len(set(ids)) == 5
    seqs = [int(queue.get_job(job_id)["seq"]) for job_id in ids]  # type: ignore[index]
    assert seqs == sorted(seqs)
    claimed = []
    while (claim := queue.claim("w", ["sklearn"], LEASE_MS)) is not None:
        claimed.append(claim.job_id)
    assert claimed == ids  # FIFO follows the list
    for job_id, n in zip(ids, range(5), strict=True):
        assert json.loads(queue.get_job(job_id)["request"])["n"] == n  # type: ignore[index]


def test_wake_up_tokens_stay_bounded_however_many_jobs_are_queued(queue: JobQueue) -> None:
    queue.enqueue_many([_submission(n) for n in range(70)])
    assert queue.redis.llen(queue.keys.wake("sklearn")) == 64  # one per job, at most 64


def test_enqueue_many_of_nothing_does_nothing(queue: JobQueue) -> None:
    assert queue.enqueue_many([]) == []
    assert queue.redis.dbsize() == 0


def test_enqueue_many_honours_idempotency_keys_across_and_within_the_batch(
    queue: JobQueue,
) -> None:
    earlier = enqueue_simple(queue, idempotency_key="nightly")
    before = snapshot(queue, earlier)

    answers = queue.enqueue_many(
        [
            _submission(0, idempotency_key="nightly"),  # named by an earlier enqueue
            _submission(1, idempotency_key="batch-key"),
            _submission(2),
            _submission(3, idempotency_key="batch-key"),  # repeated inside the batch
        ]
    )

    assert answers[0] == (earlier, False)
    assert answers[1][1] is True and answers[2][1] is True
    assert answers[3] == (answers[1][0], False)
    assert snapshot(queue, earlier) == before
    assert queue.redis.zcard(queue.keys.index_all) == 3
    first = queue.get_job(answers[1][0])
    assert first is not None and json.loads(first["request"])["n"] == 1  # the first use won


def test_enqueue_many_makes_exactly_the_job_enqueue_makes(queue: JobQueue) -> None:
    options: dict[str, object] = {
        "priority": Priority.HIGH,
        "max_attempts": 5,
        "timeout_s": 12.5,
        "queue_ttl_s": 600.25,
        "idempotency_ttl_s": 60,
        "extra_fields": {"model_id": "m1", "submitted_by": "test"},
    }
    single, _ = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime="sklearn",
        request={"model_id": "m1", "input_data": "1,2"},
        idempotency_key="single",
        job_id="single-job",
        **options,  # type: ignore[arg-type]
    )
    [(batched, created)] = queue.enqueue_many(
        [
            Submission(
                job_type=JobType.INFERENCE,
                runtime="sklearn",
                request={"model_id": "m1", "input_data": "1,2"},
                idempotency_key="batched",
                job_id="batched-job",
                **options,  # type: ignore[arg-type]
            )
        ]
    )
    assert (single, batched, created) == ("single-job", "batched-job", True)

    def comparable(job_id: str) -> dict[str, str]:
        job = queue.get_job(job_id)
        assert job is not None
        job["queue_wait"] = str(int(job.pop("expires_at")) - int(job["created_at"]))
        for varying in ("id", "seq", "created_at", "ready_at", "idempotency_key"):
            job.pop(varying)
        return job

    assert comparable("batched-job") == comparable("single-job")
    assert queue.redis.ttl(queue.keys.idem("batched")) == queue.redis.ttl(queue.keys.idem("single"))
    assert in_model_queue(queue, "batched-job", "m1")
    assert [e.data for e in queue.events("batched-job")] == [{"state": "queued"}]


def test_enqueue_many_loads_its_script_when_the_server_forgot_it(queue: JobQueue) -> None:
    queue.redis.script_flush()
    answers = queue.enqueue_many([_submission(n) for n in range(3)])
    assert [created for _, created in answers] == [True, True, True]
    assert queue.redis.zcard(queue.keys.index_all) == 3  # each queued once, none twice
    queue.redis.script_flush()
    claim = queue.claim("w", ["sklearn"], LEASE_MS)
    assert claim is not None
    queue.redis.script_flush()
    [renewal] = queue.renew_many([(claim.job_id, claim.attempt_id)], LEASE_MS)
    assert renewal.held


def _evalsha_calls(queue: JobQueue) -> int:
    stats = queue.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_enqueue_many_sends_chunks_of_200_jobs_per_script_call(queue: JobQueue) -> None:
    queue.enqueue_many([_submission(-1)])  # the script is loaded: no NOSCRIPT retry below
    queue.redis.config_resetstat()

    answers = queue.enqueue_many(
        [
            _submission(n, idempotency_key="spans-chunks" if n in (10, 300) else None)
            for n in range(450)
        ]
    )

    assert _evalsha_calls(queue) == 3  # ceil(450 / 200)
    assert [created for _, created in answers].count(True) == 449
    assert answers[300] == (answers[10][0], False)  # a key used in an earlier chunk
    ids = [job_id for job_id, created in answers if created]
    seqs = [int(queue.get_job(job_id)["seq"]) for job_id in ids]  # type: ignore[index]
    assert seqs == list(range(seqs[0], seqs[0] + 449))  # in list order, none skipped
    assert queue.redis.zcard(queue.keys.index_all) == 450
    assert all([e.data for e in queue.events(job_id)] == [{"state": "queued"}] for job_id in ids)


# -- claim_batch -----------------------------------------------------------------------


def test_claim_batch_takes_only_queued_inference_jobs_of_the_model_best_first(
    queue: JobQueue,
) -> None:
    low = enqueue_inference(queue, "m1", priority=Priority.LOW)
    first = enqueue_inference(queue, "m1")
    enqueue_inference(queue, "m2")
    enqueue_simple(queue)  # training
    enqueue_inference(queue, "m1", runtime="tensorflow")
    high = enqueue_inference(queue, "m1", priority=Priority.HIGH)
    second = enqueue_inference(queue, "m1")

    claims = queue.claim_batch("w1", "sklearn", "m1", LEASE_MS, 10)

    assert [c.job_id for c in claims] == [high, first, second, low]
    assert len({c.attempt_id for c in claims}) == 4
    now = queue.server_time_ms()
    for claim in claims:
        job = queue.get_job(claim.job_id)
        assert job == claim.job
        assert (job["state"], job["attempt"], job["worker_id"]) == ("running", "1", "w1")
        assert job["attempt_id"] == claim.attempt_id and len(claim.attempt_id) == 24
        assert now < int(job["lease_until"]) <= now + LEASE_MS
        assert queue.redis.zscore(queue.keys.leases, claim.job_id) == int(job["lease_until"])
        assert queue.events(claim.job_id)[-1].data == {
            "state": "running",
            "attempt": 1,
            "worker_id": "w1",
        }
        assert not in_model_queue(queue, claim.job_id, "m1")
    assert queue.claim_batch("w1", "sklearn", "m1", LEASE_MS, 10) == []
    assert queue.redis.zcard(queue.keys.ready("sklearn")) == 2  # m2's job and the training


def test_claim_batch_takes_at_most_max_jobs(queue: JobQueue) -> None:
    ids = [enqueue_inference(queue, "m1") for _ in range(5)]
    assert queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 0) == []
    assert [c.job_id for c in queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 2)] == ids[:2]
    assert [c.job_id for c in queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 2)] == ids[2:4]
    assert [c.job_id for c in queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 2)] == ids[4:]


def test_claim_batch_counts_the_attempt_of_a_job_run_before(queue: JobQueue) -> None:
    job_id = enqueue_inference(queue, "m1", max_attempts=3)
    first = queue.claim("w", ["sklearn"], LEASE_MS)
    assert first is not None
    queue.finish(job_id, first.attempt_id, "retry", error_kind="crashed", retry_delay_ms=0)
    wait_past_server_time(queue, int(queue.get_job(job_id)["retry_at"]))  # type: ignore[index]
    # Only claim promotes due retries: it claims another job and brings this one back.
    other = enqueue_inference(queue, "m2", priority=Priority.HIGH)
    assert queue.claim("w", ["sklearn"], LEASE_MS).job_id == other  # type: ignore[union-attr]

    [again] = queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 4)

    assert (again.job_id, again.job["attempt"]) == (job_id, "2")
    assert again.attempt_id != first.attempt_id
    assert not queue.finish(job_id, first.attempt_id, "succeeded").applied


def test_claim_batch_fails_expired_jobs_and_takes_the_rest(queue: JobQueue) -> None:
    stale = enqueue_inference(queue, "m1", queue_ttl_s=0.05, priority=Priority.HIGH)
    fresh = enqueue_inference(queue, "m1", queue_ttl_s=3600)
    wait_past_server_time(queue, int(queue.get_job(stale)["expires_at"]))  # type: ignore[index]

    claims = queue.claim_batch("w", "sklearn", "m1", LEASE_MS, 2)

    assert [c.job_id for c in claims] == [fresh]
    job = queue.get_job(stale)
    assert job is not None
    assert (job["state"], job["error_kind"], job["attempt"]) == ("failed", "expired", "0")
    assert not in_model_queue(queue, stale, "m1")


def test_a_batch_whose_worker_died_is_reaped_back_to_the_model_queue(queue: JobQueue) -> None:
    ids = [enqueue_inference(queue, "m1") for _ in range(3)]
    claims = queue.claim_batch("gone", "sklearn", "m1", 50, 3)
    assert len(claims) == 3
    wait_for_lease_expiry(queue, claims[-1])

    assert sorted(queue.reap()) == sorted((job_id, "queued") for job_id in ids)

    assert all(in_model_queue(queue, job_id, "m1") for job_id in ids)
    again = queue.claim_batch("new", "sklearn", "m1", LEASE_MS, 3)
    assert [c.job_id for c in again] == ids  # at their old places in line
    assert [c.job["attempt"] for c in again] == ["2", "2", "2"]
    refused = queue.finish_many([FinishItem(c.job_id, c.attempt_id, "succeeded") for c in claims])
    assert [r.applied for r in refused] == [False, False, False]


# -- finish_many and renew_many ----------------------------------------------------------


def _batch(queue: JobQueue, n: int, model_id: str = "m1") -> list[Claim]:
    for _ in range(n):
        enqueue_inference(queue, model_id)
    claims = queue.claim_batch("w", "sklearn", model_id, LEASE_MS, n)
    assert len(claims) == n
    return claims


def test_finish_many_applies_each_item_on_its_own(queue: JobQueue) -> None:
    ok, bad, flaky = _batch(queue, 3)

    outcomes = queue.finish_many(
        [
            FinishItem(ok.job_id, ok.attempt_id, "succeeded", result={"prediction": [1]}),
            FinishItem(
                bad.job_id, bad.attempt_id, "failed", error="bad input", error_kind="user_error"
            ),
            FinishItem(
                flaky.job_id,
                flaky.attempt_id,
                "retry",
                error="oom",
                error_kind="crashed",
                retry_delay_ms=60_000,
            ),
        ]
    )

    assert [(o.applied, o.state) for o in outcomes] == [
        (True, "succeeded"),
        (True, "failed"),
        (True, "retrying"),
    ]
    done = queue.get_job(ok.job_id)
    assert done is not None and json.loads(done["result"]) == {"prediction": [1]}
    failed = queue.get_job(bad.job_id)
    assert failed is not None and (failed["error"], failed["error_kind"]) == (
        "bad input",
        "user_error",
    )
    retrying = queue.get_job(flaky.job_id)
    assert retrying is not None
    assert queue.redis.zscore(queue.keys.delayed, flaky.job_id) == int(retrying["retry_at"])
    assert queue.redis.zcard(queue.keys.leases) == 0


def test_finish_many_refuses_a_stale_item_and_applies_the_rest(queue: JobQueue) -> None:
    first, stale, last = _batch(queue, 3)
    queue.cancel(stale.job_id)
    assert queue.finish(stale.job_id, stale.attempt_id, "cancelled").applied
    before = snapshot(queue, stale.job_id)

    outcomes = queue.finish_many(
        [
            FinishItem(first.job_id, first.attempt_id, "succeeded"),
            FinishItem(stale.job_id, stale.attempt_id, "succeeded"),
            FinishItem(last.job_id, "0" * 24, "succeeded"),  # not its attempt
            FinishItem("no-such-job", "x", "succeeded"),
            FinishItem(last.job_id, last.attempt_id, "succeeded", model={"model_id": "m9"}),
        ]
    )

    assert [(o.applied, o.state) for o in outcomes] == [
        (True, "succeeded"),
        (False, "cancelled"),
        (False, "running"),
        (False, "missing"),
        (True, "succeeded"),
    ]
    after = snapshot(queue, stale.job_id)
    assert (after.pop("models"), before.pop("models")) == (1, 0)  # m9, below
    assert after == before
    assert queue.get_model("m9") == {"model_id": "m9"}  # as finish registers one


def test_finish_many_of_one_job_twice_applies_only_the_first(queue: JobQueue) -> None:
    [claim] = _batch(queue, 1)
    outcomes = queue.finish_many(
        [
            FinishItem(claim.job_id, claim.attempt_id, "succeeded"),
            FinishItem(claim.job_id, claim.attempt_id, "failed"),
        ]
    )
    assert [(o.applied, o.state) for o in outcomes] == [(True, "succeeded"), (False, "succeeded")]
    assert queue.finish_many([]) == []


def test_a_half_cancelled_batch_cancels_one_and_finishes_the_rest(queue: JobQueue) -> None:
    claims = _batch(queue, 3)
    victim = claims[1]
    assert queue.cancel(victim.job_id, "user asked").state == "running"

    renewals = queue.renew_many([(c.job_id, c.attempt_id) for c in claims], LEASE_MS)
    assert [(r.held, r.cancel_requested) for r in renewals] == [
        (True, False),
        (True, True),
        (True, False),
    ]

    outcomes = queue.finish_many(
        [
            FinishItem(
                c.job_id, c.attempt_id, "cancelled", error="cancelled", error_kind="cancelled"
            )
            if c is victim
            else FinishItem(c.job_id, c.attempt_id, "succeeded", result={"i": i})
            for i, c in enumerate(claims)
        ]
    )
    assert [(o.applied, o.state) for o in outcomes] == [
        (True, "succeeded"),
        (True, "cancelled"),
        (True, "succeeded"),
    ]
    job = queue.get_job(victim.job_id)
    assert job is not None and job["error_kind"] == "cancelled"


def test_renew_many_extends_each_lease_and_reports_a_lost_one(queue: JobQueue) -> None:
    held, lost = _batch(queue, 2)
    queue.release(lost.job_id, lost.attempt_id, "shutdown")
    before = int(held.job["lease_until"])

    renewals = queue.renew_many(
        [(held.job_id, held.attempt_id), (lost.job_id, lost.attempt_id), ("nope", "x")], 90_000
    )

    assert [(r.held, r.state) for r in renewals] == [
        (True, None),
        (False, "queued"),
        (False, "missing"),
    ]
    lease_until = int(queue.get_job(held.job_id)["lease_until"])  # type: ignore[index]
    assert lease_until >= before + 60_000
    assert queue.redis.zscore(queue.keys.leases, held.job_id) == lease_until
    assert queue.renew_many([], LEASE_MS) == []
