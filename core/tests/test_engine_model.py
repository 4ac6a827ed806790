"""A model check of the queue engine: Hypothesis drives the real Lua scripts on a real
Valkey with random sequences of enqueue (priorities, runtimes, attempts, queue TTLs,
idempotency keys), worker turns (claim, renew, report, finish, release, crash), late
writes under stale attempts, cancel, redrive, reap and the passing of time, and after every step
compares Redis with a plain-Python model of what the scripts promise (``engine_model.py``).

The scripts read the server's clock, which cannot be faked: leases, retry delays and
queue TTLs here are a few milliseconds long, and a "time passes" rule waits on the server
clock. Around every call the test reads the server time before and after; the script's
``now`` lies between, and the model accepts whichever ``now`` in that window explains the
reply and what Redis then holds: exact, except for the millisecond the test cannot see.

By default it runs a fixed (derandomized) set of 200 sequences of up to 40 steps, under
a minute here. Fixed, because Hypothesis's generation is lumpy at this size: one random
set of this size may hardly retry a job, the next never cancel a running one. The fixed set was
checked to cover every path in ``MUST_SEE``, and the test fails if it ever stops doing
so. New sequences come from random runs, which should be run long now and then:

    cd core && TRAINYARD_MODEL_RANDOM=1 TRAINYARD_MODEL_EXAMPLES=5000 \
        $CORE/bin/python -m pytest tests/test_engine_model.py -q -s

(``-s`` prints what the run exercised; ``TRAINYARD_MODEL_STEPS`` sets the longest
sequence. With more examples than the default the test has no time limit.) A failure
that depends on the clock may not replay; its message lists the example's calls. For
the same reason no example database is kept: a saved failure would seldom replay.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import pytest
from engine_model import (
    NO_ATTEMPT,
    SEEN,
    TERMINAL,
    Attempt,
    Harness,
    Model,
    describe_difference,
    observe,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from queue_checks import snapshot, wait_past_server_time

from trainyard.connection import connect
from trainyard.consistency import index_problems
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue, new_job_id
from trainyard.keys import KeySchema
from trainyard.types import JobType, Priority

DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get("TRAINYARD_MODEL_EXAMPLES", DEFAULT_EXAMPLES))
STEPS = int(os.environ.get("TRAINYARD_MODEL_STEPS", "40"))
RANDOM = os.environ.get("TRAINYARD_MODEL_RANDOM") == "1"
DATABASE = 9  # a database of the embedded server for this test alone: flushed per example
NAMESPACE = "model-check"

RUNTIMES = ("sklearn", "tensorflow", "pytorch-2.1")
# Hypothesis draws the first value of a sampled_from more often than the others (and
# shrinks towards it), so each tuple starts with the choice that keeps work flowing.
RUNTIME_SETS = (
    ("sklearn", "tensorflow", "pytorch-2.1"),
    ("sklearn",),
    ("tensorflow",),
    ("pytorch-2.1", "sklearn"),
)
WORKERS = ("w0", "w1", "w2")
LEASES_MS = (60_000, 5, 30, 1)  # from "never, here" to "over by the next step"
QUEUE_TTLS_MS = (0, 0, 0, 0, 0, 3, 30, 60_000)
RETRY_DELAYS_MS = (5, 60_000, 0, 1, 60_000, 20)
LONGEST_WAIT_MS = 200  # "until the next deadline" waits only for a deadline this near
# What a worker does with an attempt; outcomes repeat to weigh them (one rule, so that
# Hypothesis's swarm testing, which turns whole rules off per example, keeps them together).
ACTIONS = (
    *("retry", "renew", "retry", "report", "release", "crash", "retry", "renew"),
    *("succeeded", "release", "failed", "cancelled", "retry"),
)
ERROR_KINDS = {
    "succeeded": "",
    "failed": "user_error",
    "cancelled": "cancelled",
    "retry": "crashed",
}

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
)


@dataclass(frozen=True)
class JobSpec:
    runtime: str
    job_type: JobType
    priority: Priority
    max_attempts: int
    queue_ttl_ms: int
    key: str  # idempotency key; "" for none


JOB_SPECS = st.builds(
    JobSpec,
    runtime=st.sampled_from(RUNTIMES),
    job_type=st.sampled_from(list(JobType)),
    priority=st.sampled_from(list(Priority)),
    max_attempts=st.sampled_from((3, 1, 2)),
    queue_ttl_ms=st.sampled_from(QUEUE_TTLS_MS),
    key=st.sampled_from(("", "", "", "", "", "k0", "k1")),
)


class QueueMachine(Harness):
    jobs = Bundle("jobs")
    attempts = Bundle("attempts")

    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue)
        self.holding: dict[str, Attempt] = {}  # worker id -> the attempt it works on

    # -- submitting and cancelling ----------------------------------------------------

    @initialize(target=attempts)
    def no_attempt_yet(self) -> Attempt:
        """Start the bundle non-empty, so that late writes compete with the other rules
        from the first step."""
        return NO_ATTEMPT

    @initialize(target=jobs, specs=st.lists(JOB_SPECS, min_size=1, max_size=6))
    def first_jobs(self, specs: list[JobSpec]) -> Any:
        """Every example starts with some jobs, so its workers have work even when
        Hypothesis's swarm testing turns the enqueue rule off for the whole example."""
        return multiple(*[self.submit(spec) for spec in specs])

    @rule(target=jobs, spec=JOB_SPECS)
    def enqueue(self, spec: JobSpec) -> str:
        return self.submit(spec)

    def submit(self, spec: JobSpec) -> str:
        job_id = new_job_id()
        ttl_s = spec.queue_ttl_ms / 1000 if spec.queue_ttl_ms else None
        earlier = self.model.idem.get(spec.key) if spec.key else None
        before = snapshot(self.queue, earlier) if earlier else None

        submission = {
            "priority": spec.priority.value,
            "max_attempts": str(spec.max_attempts),
            "runtime": spec.runtime,
            "type": spec.job_type.value,
            "idempotency_key": spec.key,
        }
        ttl_ms = int((ttl_s or 0) * 1000)  # as JobQueue.enqueue converts it

        def predict(m: Model, now: int, reply: tuple[str, bool]) -> Any:
            return m.enqueue(now, job_id, submission, ttl_ms), reply

        got, created = self.step(
            "enqueue",
            lambda: self.queue.enqueue(
                job_type=spec.job_type,
                runtime=spec.runtime,
                request={"n": 1},
                priority=spec.priority,
                max_attempts=spec.max_attempts,
                queue_ttl_s=ttl_s,
                idempotency_key=spec.key or None,
                job_id=job_id,
            ),
            predict,
        )
        if earlier is not None:  # the same key names the same job, and leaves it alone
            assert (got, created) == (earlier, False)
            assert snapshot(self.queue, earlier) == before
        else:
            assert (got, created) == (job_id, True)
        return got

    @rule(job_id=jobs, which=st.sampled_from(("drawn", "running", "drawn", "retrying", "none")))
    def cancel(self, job_id: str, which: str) -> None:
        """Cancel the job drawn (in whatever state it is now), or no job, or, if there is
        one, the running job whose lease ends first or the oldest retrying job: states a
        drawn job is seldom in."""
        deadline = {"running": "lease_until", "retrying": "seq"}.get(which)
        if which == "none":
            job_id = "no-such-job"
        elif deadline:
            jobs = [(j.num(deadline), i) for i, j in self.model.jobs.items() if j.state == which]
            job_id = min(jobs, default=(0, job_id))[1]
        self.log.append(f"cancel {job_id}")
        out = self.step(
            "cancel",
            lambda: self.queue.cancel(job_id, "stop"),
            lambda m, now, out: (
                m.cancel(now, job_id, "stop"),
                (out.found, out.state, out.changed),
            ),
        )
        assert out.found == (job_id in self.model.jobs)

    @rule(target=jobs, job_id=jobs, which=st.sampled_from(("dead", "drawn")))
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
        target=attempts,
        worker_id=st.sampled_from(WORKERS),
        runtimes=st.sampled_from(RUNTIME_SETS),
        lease_ms=st.sampled_from(LEASES_MS),
        action=st.sampled_from(ACTIONS),
        retry_delay_ms=st.sampled_from(RETRY_DELAYS_MS),
        with_model=st.booleans(),
    )
    def worker(
        self,
        worker_id: str,
        runtimes: tuple[str, ...],
        lease_ms: int,
        action: str,
        retry_delay_ms: int,
        with_model: bool,
    ) -> Attempt:
        """One turn of a worker's loop. Holding nothing, it claims a job of ``runtimes``.
        Holding an attempt, it renews the lease, reports, hands the job back, finishes it
        with an outcome, or crashes: it forgets the attempt without a word, the lease runs
        out and reap recovers the job. It lets go of the attempt when it is done with it or
        when a call is refused (the job was reaped, cancelled or finished meanwhile)."""
        attempt = self.holding.pop(worker_id, None)
        if attempt is None:
            attempt = self.claim(worker_id, runtimes, lease_ms)
            if attempt is not NO_ATTEMPT:
                self.holding[worker_id] = attempt
            return attempt
        self.log.append(f"{worker_id}: {action} as {attempt}")
        held = self.act(attempt, action, lease_ms, retry_delay_ms, with_model)
        if held and action in ("renew", "report"):
            self.holding[worker_id] = attempt
        return attempt

    @rule(
        attempt=attempts,
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

    def act(
        self, attempt: Attempt, action: str, lease_ms: int, retry_delay_ms: int, with_model: bool
    ) -> bool:
        """Do ``action`` under ``attempt``; returns whether the attempt held the job."""
        if action == "crash":
            return True
        if action == "renew":
            return self.renew(attempt, lease_ms)
        if action == "report":
            return self.report(attempt, progress=with_model, n=lease_ms)
        if action == "release":
            return self.release(attempt)
        return self.finish(attempt, action, retry_delay_ms, with_model)

    def claim(self, worker_id: str, runtimes: tuple[str, ...], lease_ms: int) -> Attempt:
        def predict(m: Model, now: int, got: Any) -> Any:
            attempt_id = got.attempt_id if got else "<none>"
            expected = m.claim(now, worker_id, attempt_id, lease_ms, runtimes)
            return expected, (got.job_id if got else None)

        got = self.step("claim", lambda: self.queue.claim(worker_id, runtimes, lease_ms), predict)
        # Priority, then FIFO, over the runtimes asked for, straight from Redis: no job of
        # those runtimes is still queued ahead of the one claimed (or at all, if none was).
        waiting = [
            (int(j["rank"]), int(j["seq"]))
            for j in self.redis_jobs().values()
            if j["state"] == "queued" and j["runtime"] in runtimes
        ]
        if got is None:
            assert not waiting, "claim found nothing while jobs were queued"
            return NO_ATTEMPT
        assert min(waiting, default=(9, 0)) > (int(got.job["rank"]), int(got.job["seq"]))
        assert (got.job["state"], got.job["worker_id"]) == ("running", worker_id)
        attempt = Attempt(got.job_id, got.attempt_id, worker_id)
        self.issued.setdefault(got.job_id, []).append(attempt)
        return attempt

    def renew(self, a: Attempt, lease_ms: int) -> bool:
        out, held = self.fenced(
            "renew",
            a,
            lambda: self.queue.renew(a.job_id, a.attempt_id, lease_ms),
            lambda m, now, out: (
                m.renew(now, a.job_id, a.attempt_id, lease_ms),
                (out.held, str(int(out.cancel_requested)) if out.held else out.state),
            ),
        )
        assert out.held == held
        return held

    def report(self, a: Attempt, *, progress: bool, n: int) -> bool:
        kind, data = "progress" if progress else "log", {"step": n}
        raw = json.dumps(data, separators=(",", ":"))
        ok, held = self.fenced(
            "report",
            a,
            lambda: self.queue.report(a.job_id, a.attempt_id, kind, data),
            lambda m, now, ok: (m.report(a.job_id, a.attempt_id, kind, raw), ok),
        )
        assert ok == held
        return held

    def release(self, a: Attempt) -> bool:
        ok, held = self.fenced(
            "release",
            a,
            lambda: self.queue.release(a.job_id, a.attempt_id, "shutting down"),
            lambda m, now, ok: (m.release(now, a.job_id, a.attempt_id), ok),
        )
        assert ok == held
        return held

    def finish(self, a: Attempt, outcome: Any, retry_delay_ms: int, with_model: bool) -> bool:
        model_id = f"m-{a.job_id}" if with_model and outcome == "succeeded" else ""
        kind = ERROR_KINDS[outcome]
        out, held = self.fenced(
            "finish",
            a,
            lambda: self.queue.finish(
                a.job_id,
                a.attempt_id,
                outcome,
                error="" if outcome == "succeeded" else "boom",
                error_kind=kind,
                retry_delay_ms=retry_delay_ms,
                model={"model_id": model_id} if model_id else None,
            ),
            lambda m, now, out: (
                m.finish(now, a.job_id, a.attempt_id, outcome, kind, retry_delay_ms, model_id),
                (out.applied, out.state),
            ),
        )
        assert out.applied == held
        return held

    @rule(limit=st.sampled_from((1, 2, 100)))
    def reap(self, limit: int) -> None:
        self.step(
            "reap",
            lambda: self.queue.reap(limit=limit),
            lambda m, now, out: (m.reap(now, limit), [tuple(pair) for pair in out]),
        )

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
