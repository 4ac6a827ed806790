"""A model check of the queue engine: Hypothesis drives the real Lua scripts on a real
Valkey with random sequences of enqueue (priorities, runtimes, attempts, queue TTLs,
idempotency keys, models) and enqueue_many, worker turns (claim, claim_work with model
affinity, renew, report, finish, release, crash; on a batch from claim_batch: renew_many,
finish_many with an outcome per job, stale items mixed in, killed mid-batch), the models
workers hold, late writes under stale attempts, cancel (also of one member of a running
batch), redrive, reap and the passing of time, and after every step compares Redis with a
plain-Python model of what the scripts promise (``engine_model.py``; the harness is
``engine_model_harness.py``, the batch and affinity rules ``engine_model_batches.py``).

The scripts read the server's clock, which cannot be faked: leases, retry delays, queue
TTLs, affinity waits and holder lifetimes here are a few milliseconds long, and a "time
passes" rule waits on the server clock. Around every call the test reads the server time
before and after; the script's ``now`` lies between, and the model accepts whichever
``now`` in that window explains the reply and what Redis then holds: exact, except for
the millisecond the test cannot see.

By default it runs a fixed (derandomized) set of 200 sequences of 50 steps, about
a minute here. Fixed, because Hypothesis's generation is lumpy at this size: one random
set of this size may hardly retry a job, the next never cancel a running one. The fixed
set was checked to cover every path in ``MUST_SEE``, and the test fails if it ever stops
doing so. New sequences come from random runs, which should be run long now and then:

    cd core && TRAINYARD_MODEL_RANDOM=1 TRAINYARD_MODEL_EXAMPLES=5000 \
        $CORE/bin/python -m pytest tests/test_engine_model.py -q -s

(``-s`` prints what the run exercised; ``TRAINYARD_MODEL_STEPS`` sets the longest
sequence. With more examples than the default the test has no time limit.) A failure
that depends on the clock may not replay; its message lists the example's calls. For
the same reason no example database is kept: a saved failure would seldom replay.
"""

from __future__ import annotations

import os
from dataclasses import replace
from fnmatch import fnmatch
from typing import Any

import pytest
from engine_model import TERMINAL
from engine_model_batches import TURNS, BatchCalls, Turn
from engine_model_calls import ACTIONS, JOB_SPECS, LEASES_MS, RETRY_DELAYS_MS, WORKERS, JobSpec
from engine_model_harness import NO_ATTEMPT, SEEN, Attempt, describe_difference, observe
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, multiple, rule, run_state_machine_as_test
from queue_checks import wait_past_server_time

from trainyard.connection import connect
from trainyard.consistency import index_problems
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema
from trainyard.types import Priority

DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get("TRAINYARD_MODEL_EXAMPLES", DEFAULT_EXAMPLES))
STEPS = int(os.environ.get("TRAINYARD_MODEL_STEPS", "50"))
RANDOM = os.environ.get("TRAINYARD_MODEL_RANDOM") == "1"
DATABASE = 9  # a database of the embedded server for this test alone: flushed per example
NAMESPACE = "model-check"

LONGEST_WAIT_MS = 200  # "until the next deadline" waits only for a deadline this near

# Paths the default run meets (most of them dozens of times). A run that never met one
# would prove little about it, so the test fails rather than pass vacuously; after a
# change to the rules or strategies, see what the run exercises with -s.
MUST_SEE = (
    "claim: queued -> running",
    "claim: retrying -> *",  # a due retry promoted (and perhaps claimed) by a claim
    "claim: queued -> failed",  # expired in the queue, skipped by claim
    "reap: running -> queued",
    "reap: running -> dead",
    "reap: queued -> failed",
    "finish: running -> retrying",
    "finish: running -> dead",
    "finish: running -> cancelled",  # a retry of a job whose cancel was requested
    "release: running -> queued",
    "cancel: running -> running",
    "cancel: retrying -> cancelled",
    "redrive: new -> queued",
    "redrive: dead -> dead",  # the dead job's "redriven" event; its state stays
    "refused: a stale or unknown attempt",
    # batches (engine_model_batches)
    "enqueue_many: new -> queued",
    "enqueue_many: a key repeated within the batch",
    "claim_batch: queued -> running",
    "claim_batch: queued -> failed",  # expired in the model's queue, skipped
    "claim_batch: a worker holds a batch",
    "finish_many: running -> succeeded",
    "finish_many: running -> failed",
    "finish_many: running -> retrying",
    "finish_many: running -> cancelled",
    "finish_many: stale items beside live ones",
    "finish_many: one job twice in a call",
    "finish_many: a batch half-cancelled",  # one member's cancel requested, then finished
    "renew_many: stale items beside live ones",
    "reap: a job of a batch whose worker was killed",
    # affinity
    "set_loaded_models",
    "unregister_worker",
    "claim_work: queued -> running",
    "claim_work: a loaded model's job",
    "claim_work: a later job before an earlier one",
    "claim_work: a job left to its model's holders",
    "claim_work: nothing claimable now, recheck later",
    "claim_work: a holder gone stale",
)


class QueueMachine(BatchCalls):
    # -- submitting and cancelling ----------------------------------------------------

    @initialize(target=BatchCalls.attempts)
    def no_attempt_yet(self) -> Attempt:
        """Start the bundle non-empty, so that late writes compete with the other rules
        from the first step."""
        return NO_ATTEMPT

    @initialize(target=BatchCalls.jobs, specs=st.lists(JOB_SPECS, min_size=2, max_size=8))
    def first_jobs(self, specs: list[JobSpec]) -> Any:
        """Every example starts with some jobs, so its workers have work even when
        Hypothesis's swarm testing turns the enqueue rule off for the whole example."""
        return multiple(*[self.submit(spec) for spec in specs])

    @rule(
        target=BatchCalls.jobs,
        spec=JOB_SPECS,
        priorities=st.lists(st.sampled_from(list(Priority)), min_size=1, max_size=4),
    )
    def enqueue(self, spec: JobSpec, priorities: list[Priority]) -> Any:
        """One job, or a burst of them (``enqueue_many``), with these priorities."""
        if len(priorities) == 1:
            return self.submit(spec)
        return multiple(*self.enqueue_many(spec, priorities))

    @rule(
        job_id=BatchCalls.jobs,
        which=st.sampled_from(("drawn", "running", "drawn", "retrying", "none", "batch")),
    )
    def cancel(self, job_id: str, which: str) -> None:
        """Cancel the job drawn (in whatever state it is now), or no job, or, if there is
        one, the running job whose lease ends first, the oldest retrying job, or the last
        member of a batch a worker holds (the batch is then half-cancelled): states a
        drawn job is seldom in."""
        deadline = {"running": "lease_until", "retrying": "seq"}.get(which)
        if which == "none":
            job_id = "no-such-job"
        elif which == "batch":
            batches = [held for w, held in sorted(self.holding.items()) if len(held) > 1]
            job_id = batches[0][-1].job_id if batches else job_id
        elif deadline:
            jobs = [(j.num(deadline), i) for i, j in self.model.jobs.items() if j.state == which]
            job_id = min(jobs, default=(0, job_id))[1]
        self.cancel_job(job_id)

    @rule(target=BatchCalls.jobs, job_id=BatchCalls.jobs, which=st.sampled_from(("dead", "drawn")))
    def redrive(self, job_id: str, which: str) -> str:
        """Redrive the oldest dead job if there is one (else the job drawn, whatever its
        state): a new linked job; the dead one stays dead; twice gives the same job."""
        if which == "dead":
            job_id = next((i for i, j in self.model.jobs.items() if j.state == "dead"), job_id)
        self.log.append(f"redrive {job_id}")
        out = self.step(
            "redrive",
            lambda: self.queue.redrive(job_id, "again"),
            lambda m, now, out: (
                m.redrive(now, job_id, out.new_job_id or "<none>"),
                (out.found, out.redriven, out.state, out.new_job_id, out.created),
            ),
        )
        return out.new_job_id or job_id

    # -- the worker's side ------------------------------------------------------------

    @rule(
        target=BatchCalls.attempts,
        worker_id=st.sampled_from(WORKERS),
        turn=TURNS,
        other=BatchCalls.attempts,
    )
    def worker(self, worker_id: str, turn: Turn, other: Attempt) -> Any:
        """One turn of a worker's loop (``take_turn``)."""
        return self.take_turn(worker_id, turn, other)

    @rule(target=BatchCalls.attempts, turn=TURNS, other=BatchCalls.attempts)
    def batch_worker(self, turn: Turn, other: Attempt) -> Any:
        """A turn of the worker holding a batch if there is one, else of an idle worker,
        claiming up to 3 jobs at least: the batch paths, which need a worker's turn to
        come twice, would be rare otherwise."""
        batches = [w for w in WORKERS if len(self.holding.get(w, [])) > 1]
        idle = [w for w in WORKERS if not self.holding.get(w)]
        worker_id = (batches or idle or [WORKERS[-1]])[0]
        return self.take_turn(worker_id, replace(turn, batch=max(turn.batch, 3)), other)

    @rule(
        attempt=BatchCalls.attempts,
        action=st.sampled_from(ACTIONS),
        lease_ms=st.sampled_from(LEASES_MS),
        retry_delay_ms=st.sampled_from(RETRY_DELAYS_MS),
        with_model=st.booleans(),
    )
    def late_write(
        self, attempt: Attempt, action: str, lease_ms: int, retry_delay_ms: int, with_model: bool
    ) -> None:
        """A write under any attempt ever made (or ``NO_ATTEMPT``): mostly stale, so it
        must be refused and change nothing; sometimes still current, as from a worker
        thought dead that comes back before its lease is reaped (then it is accepted)."""
        self.log.append(f"late {action} as {attempt}")
        self.act(attempt, action, lease_ms, retry_delay_ms, with_model)

    @rule(limit=st.sampled_from((1, 2, 100)))
    def reap(self, limit: int) -> None:
        running = {
            i: j.fields["attempt_id"] for i, j in self.model.jobs.items() if j.state == "running"
        }
        self.step(
            "reap",
            lambda: self.queue.reap(limit=limit),
            lambda m, now, out: (m.reap(now, limit), [tuple(pair) for pair in out]),
        )
        self.reaped_from_killed_batches(running)

    # -- time -------------------------------------------------------------------------

    @rule(ms=st.sampled_from(("next deadline", 1, 2, 5, 20)))
    def time_passes(self, ms: int | str) -> None:
        """Wait on the server clock: some milliseconds, or until the next lease end,
        retry time or queue expiry has passed (when one is near), so that reap and claim
        often meet due work. (Nothing here depends on the clock to decide what to draw.)"""
        self.generation += 1
        now = self.queue.server_time_ms()
        upcoming = [d for d in self.model.deadlines() if d >= now]
        if isinstance(ms, int):
            until = now + ms
        elif upcoming and min(upcoming) <= now + LONGEST_WAIT_MS:
            until = min(upcoming)
        else:
            return
        wait_past_server_time(self.queue, until)
        self.log.append(f"time passes: {now} -> past {until}")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def redis_matches_the_model(self) -> None:
        """Also after time passed: the clock alone changes nothing until a script runs."""
        if self.verified != self.generation:
            observed = observe(self.queue, self.model.routes())
            assert self.model.view() == observed, describe_difference(self.model.view(), observed)
            self.verified = self.generation

    @invariant()
    def terminal_states_never_change_and_attempts_stay_within_the_limit(self) -> None:
        for job_id, job in self.redis_jobs().items():
            state = job["state"]
            if job_id in self.terminal:
                assert state == self.terminal[job_id], f"terminal job {job_id} became {state}"
            elif state in TERMINAL:
                self.terminal[job_id] = state
            assert int(job["attempt"]) <= int(job["max_attempts"]), f"job {job_id}: {job}"

    @invariant()
    def only_the_newest_attempt_can_hold_a_running_job(self) -> None:
        for job_id, job in self.redis_jobs().items():
            issued = self.issued.get(job_id, [])
            if job["state"] == "running":
                newest = issued[-1]
                assert (job["attempt_id"], job["worker_id"]) == (
                    newest.attempt_id,
                    newest.worker_id,
                ), f"job {job_id} is held by an older attempt"
            assert len({a.attempt_id for a in issued}) == len(issued), "an attempt id repeated"

    @invariant()
    def indexes_agree_with_the_job_hashes(self) -> None:
        """The full scan, whenever a script changed something. (A step that changed
        nothing is covered by the model match: ``observe`` reads every job's index
        scores, so Redis equal to an unchanged model is still consistent.)"""
        if self.indexes_checked != self.changed:
            problems = index_problems(self.queue)
            assert not problems, "\n".join(problems)
            self.indexes_checked = self.changed


# Passing takes about a minute; a failure may spend minutes shrinking to a short
# sequence, which is worth the wait (the default 120 s timeout would cut it off).
@pytest.mark.timeout(600 if EXAMPLES <= DEFAULT_EXAMPLES else 0)
def test_the_engine_behaves_like_its_model(server: EmbeddedServer) -> None:
    client = connect(server.url.rsplit("/", 1)[0] + f"/{DATABASE}")
    try:
        queue = JobQueue(client, KeySchema(NAMESPACE))
        run_state_machine_as_test(
            lambda: QueueMachine(queue),  # type: ignore[arg-type]  # any factory will do
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,  # steps wait on the server clock; their length is no bug
                derandomize=not RANDOM,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        client.flushdb()
        client.close()
    print("\nmodel check: what the examples exercised")
    for what, count in sorted(SEEN.items()):
        print(f"  {count:7d}  {what}")
    missing = [what for what in MUST_SEE if not any(fnmatch(seen, what) for seen in SEEN)]
    assert not missing, f"the examples never exercised {missing}"
