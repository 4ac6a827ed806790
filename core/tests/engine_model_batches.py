"""The model check's batch and affinity calls (a base of ``test_engine_model``'s state
machine, on top of the single-job calls of ``engine_model_calls``): ``enqueue_many``,
``claim_batch`` (after a claim, more jobs of its model), ``finish_many`` and
``renew_many`` over a worker's batch (live items mixed with stale ones, the same job
twice, a member whose cancel was requested), a worker killed mid-batch,
``set_loaded_models`` / ``unregister_worker`` and ``claim_work`` with model affinity; and
``take_turn``, one turn of a worker's loop, which uses them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine_model import Model
from engine_model_calls import (
    ACTIONS,
    ERROR_KINDS,
    LEASES_MS,
    RETRY_DELAYS_MS,
    RUNTIMES,
    WORKERS,
    JobSpec,
    SingleCalls,
)
from engine_model_harness import NO_ATTEMPT, SEEN, Attempt, ItemPrediction
from hypothesis import strategies as st
from hypothesis.stateful import initialize, multiple

from trainyard.engine import ClaimResult, FinishItem, JobQueue, Submission
from trainyard.types import Priority

__all__ = ["TURNS", "BatchCalls", "Turn"]

# Hypothesis draws the first value of a sampled_from more often than the others (and
# shrinks towards it), so each tuple starts with the choice that keeps work flowing.
RUNTIME_SETS = (
    ("sklearn", "tensorflow", "pytorch-2.1"),
    ("sklearn",),
    ("tensorflow",),
    ("pytorch-2.1", "sklearn"),
)
BATCH_OUTCOMES = ("retry", "succeeded", "failed", "retry", "cancelled", "succeeded", "retry")
BATCH_ACTIONS = (
    "finish",
    "killed",
    "renew",
    "finish",
    "killed",
    "finish",
    "killed",
    "renew",
    "finish",
)
# How many jobs a worker claims at most: after a claim of an inference job that names its
# model, it asks claim_batch for up to this many less one more of that model.
BATCH_SIZES = (3, 1, 5, 4)
# A worker with one attempt acts on it alone, or with one batch call that has a stale
# attempt or the same one again beside it. A batch is always acted on with batch calls,
# and with "half-cancel" a user first cancels one of its jobs.
MIXES = ("alone", "half-cancel", "stale", "half-cancel", "repeat")
# The models a worker holds at the start for a runtime (None: it unregisters). Long-lived:
# holders go stale here through claim_work's liveness window, which is drawn.
MODEL_SETS = (("mA",), ("mA", "mB"), ("mB",), (), None)
HOLDER_TTL_MS = 60_000
# claim_work's (affinity ms, holder liveness window ms); None: plain claim.
# Jobs here have waited some 10-70 ms when claimed.
AFFINITIES = (None, (60_000, HOLDER_TTL_MS), None, (60_000, 10), (30, HOLDER_TTL_MS), None)


@dataclass(frozen=True)
class Turn:
    """What a worker does in one turn of its loop (see ``BatchCalls.take_turn``)."""

    runtimes: tuple[str, ...]
    lease_ms: int
    action: str  # on one attempt: ACTIONS
    retry_delay_ms: int
    with_model: bool
    affinity: tuple[int, int] | None
    batch: int
    batch_action: str
    outcomes: list[str]  # a batch's, in turn
    mix: str


TURNS = st.builds(
    Turn,
    runtimes=st.sampled_from(RUNTIME_SETS),
    lease_ms=st.sampled_from(LEASES_MS),
    action=st.sampled_from(ACTIONS),
    retry_delay_ms=st.sampled_from(RETRY_DELAYS_MS),
    with_model=st.booleans(),
    affinity=st.sampled_from(AFFINITIES),
    batch=st.sampled_from(BATCH_SIZES),
    batch_action=st.sampled_from(BATCH_ACTIONS),
    outcomes=st.lists(st.sampled_from(BATCH_OUTCOMES), min_size=1, max_size=4),
    mix=st.sampled_from(MIXES),
)


class BatchCalls(SingleCalls):
    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue)
        # worker -> the runtime and models it last said it holds: what it passes to
        # claim_work as loaded.
        self.loaded: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.killed: set[str] = set()  # attempt ids of batches whose worker was killed
        self.short_wake_lists = False  # a claim_work gave wake lists a short lifetime

    # -- submitting -------------------------------------------------------------------

    def enqueue_many(self, spec: JobSpec, priorities: list[Priority]) -> list[str]:
        """A burst of one kind of job (so batches form), in one pipeline; with a key,
        the later ones name the first one's job."""
        subs = [spec.submission(p) for p in priorities]

        def item(sub: Submission, fields: dict[str, str]) -> ItemPrediction:
            assert sub.job_id is not None
            job_id, ttl = sub.job_id, round((sub.queue_ttl_s or 0) * 1000)

            def predict(m: Model, now: int, reply: tuple[str, bool]) -> Any:
                expected = m.enqueue(now, job_id, fields, ttl)
                return expected, reply, job_id if expected[1] else None

            return predict

        answers = self.step_each(
            "enqueue_many",
            lambda: self.queue.enqueue_many([sub for sub, _ in subs]),
            [item(sub, fields) for sub, fields in subs],
        )
        if len({job_id for job_id, _ in answers}) < len(answers):
            SEEN["enqueue_many: a key repeated within the batch"] += 1
        return [job_id for job_id, _ in answers]

    # -- affinity ---------------------------------------------------------------------

    @initialize(
        holders=st.lists(
            st.tuples(
                st.sampled_from(WORKERS), st.sampled_from(RUNTIMES), st.sampled_from(MODEL_SETS)
            ),
            max_size=3,
        )
    )
    def first_holders(self, holders: list[tuple[str, str, tuple[str, ...] | None]]) -> None:
        """Some workers hold models from the start (later, a worker holds the model of
        each inference job it claims: ``hold_model``)."""
        for worker_id, runtime, models in holders:
            self.load_models(worker_id, runtime, models)

    def hold_model(self, attempt: Attempt, keep_previous: bool) -> None:
        """Having claimed an inference job of a model it does not hold, a worker loads
        it (keeping the one it held before for the runtime, or not) and says so."""
        runtime, models = self.loaded.get(attempt.worker_id, ("", ()))
        if attempt.model_id in models and runtime == attempt.runtime:
            return
        kept = models[-1:] if keep_previous and runtime == attempt.runtime else ()
        self.load_models(attempt.worker_id, attempt.runtime, (*kept, attempt.model_id))

    def load_models(self, worker_id: str, runtime: str, models: tuple[str, ...] | None) -> None:
        """A worker says which models it holds for a runtime, or unregisters (None)."""
        SEEN["set_loaded_models" if models is not None else "unregister_worker"] += 1

        def predict(m: Model, now: int, _: None) -> tuple[None, None]:
            gone = models is None  # unregister_worker: "" forgets every runtime's models
            m.set_loaded_models(now, worker_id, "" if gone else runtime, models or (), ttl)
            return None, None

        ttl = HOLDER_TTL_MS
        if models is None:
            self.loaded.pop(worker_id, None)
            self.step("unregister_worker", lambda: self.queue.unregister_worker(worker_id), predict)
            return
        self.loaded[worker_id] = (runtime, models)
        self.step(
            "set_loaded_models",
            lambda: self.queue.set_loaded_models(worker_id, runtime, models, ttl),
            predict,
        )

    def claim_work(
        self,
        worker_id: str,
        runtimes: tuple[str, ...],
        lease_ms: int,
        affinity_ms: int,
        holder_window: int,
    ) -> Attempt:
        """``claim_work`` with the models the worker last said it holds."""
        loaded = list(self.loaded.get(worker_id, ("", ()))[1])
        self.short_wake_lists |= holder_window < HOLDER_TTL_MS

        def predict(m: Model, now: int, got: ClaimResult) -> Any:
            attempt_id = got.claim.attempt_id if got.claim else "<none>"
            expected = m.claim_work(
                now, worker_id, attempt_id, lease_ms, runtimes, loaded, affinity_ms, holder_window
            )
            return expected, (got.claim.job_id if got.claim else None, got.recheck_ms)

        before = self.model
        got = self.step(
            "claim_work",
            lambda: self.queue.claim_work(
                worker_id,
                runtimes,
                lease_ms,
                loaded_models=loaded,
                affinity_ms=affinity_ms,
                holder_ttl_ms=holder_window,
            ),
            predict,
        )
        scan = self.model.last_scan
        assert scan is not None
        if scan.woken:
            SEEN["claim_work: a job left to its model's holders"] += 1
            # Each live holder got a wake-up token on its own list (they are never popped
            # here, and live a minute unless a short window was ever drawn).
            holders = {h for name in scan.woken for h in self.model.holders.get(name, {})}
            for holder in sorted(holders - {worker_id}):
                if not self.short_wake_lists:
                    assert self.queue.redis.llen(self.queue.keys.wake_worker(holder)) >= 1
        if scan.pruned:
            SEEN["claim_work: a holder gone stale"] += 1
        if got.recheck_ms is not None:
            SEEN["claim_work: nothing claimable now, recheck later"] += 1
        if got.claim is None:
            return NO_ATTEMPT
        job = got.claim.job
        if job.get("model_id") in loaded and job["type"] == "inference":
            SEEN["claim_work: a loaded model's job"] += 1
        scores = [
            j.score
            for j in before.jobs.values()
            if j.state == "queued" and j.fields["runtime"] in runtimes
        ]
        if scores and before.jobs[job["id"]].score > min(scores):
            SEEN["claim_work: a later job before an earlier one"] += 1
        return self.claimed(got.claim.job, worker_id)

    def left_to_holders(self, worker_id: str) -> tuple[str, ...]:
        """A runtime whose queued jobs all ask for a model another worker holds there (a
        state random draws seldom meet: then claim_work has nothing to take now), or ()."""
        loaded = self.loaded.get(worker_id, ("", ()))[1]
        for runtime in RUNTIMES:
            queue = self.model.ready(runtime)
            if queue and all(
                j.model_key and j.fields.get("model_id") not in loaded
                and set(self.model.holders.get(j.model_key, {})) - {worker_id}
                for j in queue
            ):  # fmt: skip
                return (runtime,)
        return ()

    def claim_more(self, first: Attempt, max_jobs: int, lease_ms: int) -> list[Attempt]:
        """``claim_batch``: having claimed ``first``, an inference job that names its
        model, a worker takes up to ``max_jobs`` more of that model's jobs (as the
        supervisor does). Returns the attempts it got."""
        worker_id, runtime, model_id = first.worker_id, first.runtime, first.model_id

        def predict(m: Model, now: int, got: list[Any]) -> Any:
            ids = [c.attempt_id for c in got] + ["<none>"] * (max_jobs - len(got))
            return (
                m.claim_batch(now, worker_id, lease_ms, runtime, model_id, ids),
                [c.job_id for c in got],
            )

        claims = self.step(
            "claim_batch",
            lambda: self.queue.claim_batch(worker_id, runtime, model_id, lease_ms, max_jobs),
            predict,
        )
        assert len({c.attempt_id for c in claims} | {first.attempt_id}) == len(claims) + 1
        if claims:
            SEEN["claim_batch: a worker holds a batch"] += 1
        return [self.claimed(c.job, worker_id) for c in claims]

    # -- a worker's turn --------------------------------------------------------------

    def take_turn(self, worker_id: str, turn: Turn, other: Attempt) -> Any:
        """One turn of a worker's loop. Holding nothing, it claims a job (with ``claim``,
        or ``claim_work`` with an affinity) and, if that is an inference job naming its
        model, up to ``turn.batch`` - 1 more of that model (``claim_batch``); it then
        holds that model. Holding an attempt, it renews the lease, reports, hands the job
        back (and perhaps leaves), finishes it with an outcome, or crashes: it forgets
        the attempt without a word, the lease runs out and reap recovers the job.
        Holding a batch, it does ``turn.batch_action`` to all of it (``renew_many``,
        ``finish_many``, or killed); so with one attempt and a stale (``other``) or
        repeated item beside it. It lets go of an attempt when it is done with it or when
        a call is refused (the job was reaped, cancelled or finished). Always adds
        ``turn.batch`` values to the bundle (see ``NO_ATTEMPT``)."""
        t = turn
        held = self.holding.pop(worker_id, [])
        pad = [NO_ATTEMPT] * (t.batch - 1)
        if not held:
            if t.affinity is None:
                attempt = self.claim(worker_id, t.runtimes, t.lease_ms)
            else:  # as a supervisor does, for its one runtime (or for several)
                runtimes = t.runtimes[-1:] if t.with_model else t.runtimes
                if t.mix in ("repeat", "stale"):  # where every job waits for another's model
                    runtimes = self.left_to_holders(worker_id) or runtimes
                attempt = self.claim_work(worker_id, runtimes, t.lease_ms, *t.affinity)
            with_more = t.batch > 1 and attempt.model_id
            more = self.claim_more(attempt, t.batch - 1, t.lease_ms) if with_more else []
            if attempt.model_id:
                self.hold_model(attempt, keep_previous=t.with_model)
            if attempt is not NO_ATTEMPT:
                self.holding[worker_id] = [attempt, *more]
            return multiple(attempt, *more, *pad[len(more) :])
        self.log.append(f"{worker_id}: {t} as {held}")
        if len(held) == 1 and t.mix in ("alone", "half-cancel"):
            still = self.act(held[0], t.action, t.lease_ms, t.retry_delay_ms, t.with_model)
            if still and t.action in ("renew", "report"):
                self.holding[worker_id] = held
            if t.action == "release" and not t.with_model:  # it was shutting down: it leaves
                self.load_models(worker_id, "", None)
            return multiple(held[0], *pad)
        extra = {"stale": other, "repeat": held[0]}.get(t.mix)
        if t.mix == "half-cancel" and len(held) > 1:  # a user cancels one job of the batch
            self.cancel_job(held[-1].job_id)
        if kept := self.act_on_batch(held, t, extra):
            self.holding[worker_id] = kept
        return multiple(held[0], *pad)

    def act_on_batch(self, held: list[Attempt], t: Turn, extra: Attempt | None) -> list[Attempt]:
        """``t.batch_action`` on a batch (and ``extra``): ``killed`` (the worker forgets it
        all: the leases run out and reap recovers the jobs), ``renew`` every lease, or
        ``finish`` every job, each with its own outcome (``t.outcomes`` in turn), error
        and retry delay. Returns the attempts it still works on."""
        items = held + ([extra] if extra is not None else [])
        if t.batch_action == "killed":
            if len(held) > 1:
                self.killed.update(a.attempt_id for a in held)
            return []
        if t.batch_action == "renew":
            renewed = self.renew_many(items, t.lease_ms)
            return [a for a, ok in zip(held, renewed, strict=False) if ok]
        self.finish_many(items, t.outcomes, t.retry_delay_ms)
        return []

    def renew_many(self, items: list[Attempt], lease_ms: int) -> list[bool]:
        def item(n: int, a: Attempt) -> ItemPrediction:
            last = all(b.job_id != a.job_id for b in items[n + 1 :])

            def predict(m: Model, now: int, out: Any) -> Any:
                expected = m.renew(now, a.job_id, a.attempt_id, lease_ms)
                actual = (out.held, str(int(out.cancel_requested)) if out.held else out.state)
                return expected, actual, a.job_id if expected[0] and last else None

            return predict

        pairs = [(a.job_id, a.attempt_id) for a in items]
        renewals, held = self.fenced_many(
            "renew_many",
            items,
            lambda: self.step_each(
                "renew_many",
                lambda: self.queue.renew_many(pairs, lease_ms),
                [item(n, a) for n, a in enumerate(items)],
            ),
        )
        assert [r.held for r in renewals] == held
        if len({r.cancel_requested for r in renewals if r.held}) == 2:
            SEEN["renew_many: one member's cancel requested"] += 1
        return [r.held for r in renewals]

    def finish_many(self, items: list[Attempt], outcomes: list[str], retry_delay_ms: int) -> None:
        """Every item with its own outcome (``outcomes`` in turn), error and retry delay."""
        delays = (retry_delay_ms, 0, 20)
        plan = [(a, outcomes[n % len(outcomes)], delays[n % 3]) for n, a in enumerate(items)]
        flags = {
            a.job_id: self.model.jobs[a.job_id].fields["cancel_requested"]
            for a in items
            if self.model.holds(a.job_id, a.attempt_id)
        }
        if len(set(flags.values())) == 2:
            SEEN["finish_many: a batch half-cancelled"] += 1
        finish_items = [
            FinishItem(
                a.job_id,
                a.attempt_id,
                outcome,  # type: ignore[arg-type]
                result={"n": 1} if outcome == "succeeded" else None,
                error="" if outcome == "succeeded" else "boom",
                error_kind=ERROR_KINDS[outcome],
                retry_delay_ms=delay,
            )
            for a, outcome, delay in plan
        ]

        def predict(m: Model, now: int, out: Any) -> Any:
            expected = [
                m.finish(now, a.job_id, a.attempt_id, o, ERROR_KINDS[o], delay, "")
                for a, o, delay in plan
            ]
            return expected, [(x.applied, x.state) for x in out]

        out, held = self.fenced_many(
            "finish_many",
            items,
            lambda: self.step("finish_many", lambda: self.queue.finish_many(finish_items), predict),
        )
        # Each item fenced on its own: applied exactly when its attempt held the job and
        # no earlier item of the call had ended it.
        ended: set[str] = set()
        for a, h, x in zip(items, held, out, strict=True):
            assert x.applied == (h and a.job_id not in ended), f"finish_many item {a}: {x}"
            if x.applied:
                ended.add(a.job_id)
        if ended and len({a.job_id for a in items}) < len(items):
            SEEN["finish_many: one job twice in a call"] += 1

    def reaped_from_killed_batches(self, before: dict[str, str]) -> None:
        """After a reap: count the jobs it recovered from a batch whose worker was
        killed (``before``: job id -> the attempt id that held it before the reap)."""
        for job_id, attempt_id in before.items():
            if attempt_id in self.killed and self.model.jobs[job_id].state != "running":
                SEEN["reap: a job of a batch whose worker was killed"] += 1
