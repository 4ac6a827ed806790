"""Trainyard's side of ``bench_peers.py`` (see ``_peer_systems.py`` for the interface):
the submitter, the consumer loop shaped like the real worker, and two what-if loops with
fewer round trips a job that size the engine changes proposed from these figures.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from _benchlib import worker_heartbeat_fields
from _peer_systems import (
    AFFINITY_MS,
    BLOCK_S,
    HEARTBEAT_S,
    LEASE_MS,
    REQUEST,
    RESULT,
    RUNTIME,
    WORKER_ID,
    WORKER_TTL_MS,
    JobCounter,
    Options,
)

from trainyard.connection import connect
from trainyard.engine import Claim, FinishItem, JobQueue, Submission
from trainyard.keys import KeySchema
from trainyard.types import TERMINAL_STATES, JobType

__all__ = ["TrainyardSubmitter", "consume_trainyard"]


def consume_trainyard(system: str, opts: Options, n: int, counter: JobCounter) -> None:
    loops = {
        "trainyard": _trainyard_consume,
        "trainyard-lean": _trainyard_lean_consume,
        "trainyard-fused": _trainyard_fused_consume,
    }
    loops[system](opts, n, counter)


def _trainyard_consume(opts: Options, n: int, counter: JobCounter) -> None:
    """The supervisor's loop (ai-worker: supervisor._next_job, registration.set_state):
    claim_work with the worker's default affinity (the claim marks the worker busy);
    nothing claimable -> state idle (a write only when it changes) and BLPOP; a job ->
    run it, finish."""
    keys = KeySchema(opts.tag)
    q = JobQueue(connect(opts.url, socket_timeout=BLOCK_S + 10), keys)
    beat = JobQueue(connect(opts.url), keys)  # the supervisor's second connection
    beat.heartbeat(WORKER_ID, worker_heartbeat_fields("idle", None), WORKER_TTL_MS)

    def heartbeats() -> None:  # registration._loop: heartbeat, loaded models, reap
        while not counter.finished.wait(HEARTBEAT_S):
            beat.heartbeat(WORKER_ID, worker_heartbeat_fields("busy", None), WORKER_TTL_MS)
            beat.set_loaded_models(WORKER_ID, RUNTIME, [], WORKER_TTL_MS)
            beat.reap(every_ms=int(HEARTBEAT_S * 900))

    threading.Thread(target=heartbeats, daemon=True).start()
    state: tuple[str, str | None] = ("idle", None)
    while counter.done < n:
        result = q.claim_work(
            WORKER_ID, [RUNTIME], LEASE_MS, loaded_models=(), affinity_ms=AFFINITY_MS,
            holder_ttl_ms=WORKER_TTL_MS,
        )  # fmt: skip
        claim = result.claim
        if claim is None:
            if state != ("idle", None):
                state = ("idle", None)
                q.set_worker_state(WORKER_ID, "idle", None)
            wait_s = BLOCK_S if result.recheck_ms is None else result.recheck_ms / 1000
            q.wait_for_work([RUNTIME], max(min(BLOCK_S, wait_s), 0.001), worker_id=WORKER_ID)
            continue
        counter.started()
        state = ("busy", claim.job_id)  # written by the claim script
        # A no-op job: far shorter than renew_every_s, so the real worker never renews it.
        outcome = q.finish(claim.job_id, claim.attempt_id, "succeeded", result=RESULT)
        assert outcome.applied, outcome
        counter.finished_one()


def _trainyard_lean_consume(opts: Options, n: int, counter: JobCounter) -> None:
    """What-if: claim_work + finish only, as if claim wrote the worker's busy state
    itself (two round trips a job instead of three)."""
    q = JobQueue(connect(opts.url, socket_timeout=BLOCK_S + 10), KeySchema(opts.tag))
    q.heartbeat(WORKER_ID, worker_heartbeat_fields("idle", None), WORKER_TTL_MS)
    while counter.done < n:
        claim = q.claim_work(
            WORKER_ID, [RUNTIME], LEASE_MS, affinity_ms=AFFINITY_MS, holder_ttl_ms=WORKER_TTL_MS
        ).claim
        if claim is None:
            q.wait_for_work([RUNTIME], BLOCK_S)
            continue
        counter.started()
        assert q.finish(claim.job_id, claim.attempt_id, "succeeded", result=RESULT).applied
        counter.finished_one()


def _trainyard_fused_consume(opts: Options, n: int, counter: JobCounter) -> None:
    """What-if: one round trip a job, as a script that finishes the current job and
    claims the next would give: today's finish.lua and claim.lua sent together in one
    pipeline (the server's work unchanged, no busy/idle writes). Uses the engine's script
    objects and claim.lua's argument layout: a bench-only experiment, not an API."""
    q = JobQueue(connect(opts.url, socket_timeout=BLOCK_S + 10), KeySchema(opts.tag))
    q.heartbeat(WORKER_ID, worker_heartbeat_fields("idle", None), WORKER_TTL_MS)
    scripts: Any = q._scripts  # the what-if needs the raw script calls

    def claim_args() -> list[Any]:
        attempt = uuid.uuid4().hex[:24]
        return [WORKER_ID, attempt, LEASE_MS, AFFINITY_MS, WORKER_TTL_MS, 0, RUNTIME]

    claim: Claim | None = None
    while counter.done < n:
        if claim is None:
            claim = q.claim_work(
                WORKER_ID, [RUNTIME], LEASE_MS, affinity_ms=AFFINITY_MS,
                holder_ttl_ms=WORKER_TTL_MS,
            ).claim  # fmt: skip
            if claim is None:
                q.wait_for_work([RUNTIME], BLOCK_S)
                continue
        counter.started()
        item = FinishItem(claim.job_id, claim.attempt_id, "succeeded", result=RESULT)
        if counter.done == 0:  # through the API once: the server loads finish.lua
            q.finish(claim.job_id, claim.attempt_id, "succeeded", result=RESULT)
            claim = None
            counter.finished_one()
            continue
        pipe = q.redis.pipeline(transaction=False)
        pipe.evalsha(scripts.finish.sha, 1, q.keys.job(claim.job_id), *item.script_args())
        pipe.evalsha(scripts.claim.sha, 1, q.keys.leases, *claim_args())
        finished, claimed = pipe.execute()
        assert int(finished[0]) == 1, finished
        claim = Claim.from_flat(claimed) if isinstance(claimed, list) and claimed else None
        counter.finished_one()


class TrainyardSubmitter:
    def __init__(self, opts: Options) -> None:
        self.q = JobQueue(connect(opts.url, socket_timeout=60), KeySchema(opts.tag))

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)

    def batch(self, n: int, chunk: int) -> bool:
        sub = Submission(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)
        for start in range(0, n, chunk):
            self.q.enqueue_many([sub] * min(chunk, n - start))
        return True

    def prefill(self, n: int) -> None:
        self.batch(n, 1000)

    def round_trip_variants(self) -> dict[str, Any]:
        return {"": self.round_trip, ", terminal-event wait": self.round_trip_terminal}

    def round_trip_terminal(self) -> None:
        """A leaner wait: block on the event stream and read the job once, at the
        terminal state event (fewer round trips than the backend's way)."""
        job_id, _ = self.q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)
        last = "0"
        while True:
            events = self.q.events(job_id, after=last, block_ms=10_000)
            if not events:
                raise RuntimeError("no event within 10 s")
            last = events[-1].id
            if any(e.kind == "state" and e.data.get("state") in TERMINAL_STATES for e in events):
                break
        job = self.q.get_job(job_id) or {}
        assert job.get("result"), job

    def round_trip(self) -> None:
        """Submit one job and wait for its result the way the backend's ``?wait=`` does
        (``AsyncQueue.wait_for_terminal``, here with the sync client): read the job, then
        block on its event stream from the start, re-reading the job at each state event."""
        job_id, _ = self.q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)
        job = self.q.get_job(job_id) or {}
        last = "0"
        while job.get("state") not in TERMINAL_STATES:
            events = self.q.events(job_id, after=last, block_ms=10_000)
            if not events:
                raise RuntimeError("no event within 10 s")
            last = events[-1].id
            if any(e.kind == "state" for e in events):
                job = self.q.get_job(job_id) or job
        assert job.get("result"), job

    def close(self) -> None:
        self.q.redis.close()
