"""What the model check's state machine stands on: reading what Redis holds in the shape
of the model's view (``observe``), and ``Harness``, which runs a call against Redis and
moves the model (``engine_model.Model``) along with it.

The scripts read the clock once per call, and the test only knows that the script's
``now`` lies between two readings taken around the call, so ``step`` replays an operation
on a copy of the model for each ``now`` in that window and accepts the one that matches
what Redis holds. That keeps the model exact everywhere except the one place where the
real outcome depends on a millisecond the test cannot see. ``step_each`` does the same
for a pipeline of script calls (``enqueue_many``, ``renew_many``), each of which reads
its own clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from engine_model import STATES, TRACKED, Model
from hypothesis.stateful import RuleBasedStateMachine
from queue_checks import snapshot

from trainyard.engine import JobQueue

__all__ = [
    "NO_ATTEMPT",
    "SEEN",
    "Attempt",
    "Harness",
    "ItemPrediction",
    "describe_difference",
    "observe",
]

T = TypeVar("T")

# One call of a pipeline, predicted: given the model, ``now`` and the call's reply, the
# expected and actual replies and the job it changed for good (None: none, or a later
# call of the pipeline changes it again).
ItemPrediction = Callable[[Model, int, Any], tuple[Any, Any, str | None]]


def observe(queue: JobQueue, routes: Mapping[str, tuple[str, str, str]]) -> dict[str, Any]:
    """What Redis holds, in the shape of ``Model.view``, for the jobs ``routes`` names
    (job id -> its runtime, job type and model ready queue), read in one round trip. With
    the index scores it reads, a match with the model also says that each job is in
    exactly the indexes its state calls for (``index_problems`` checks the same, and
    orphans, more slowly)."""
    r: Any = queue.redis
    k = queue.keys
    ids = sorted(routes)
    pipe = r.pipeline(transaction=False)
    per_job = 9 + len(STATES)
    for job_id in ids:
        runtime, job_type, model_key = routes[job_id]
        pipe.hmget(k.job(job_id), list(TRACKED))
        pipe.xlen(k.events(job_id))
        pipe.zscore(k.ready(runtime), job_id)
        if model_key:
            pipe.zscore(k.ready_model(*model_key.split(":", 1)), job_id)
        else:
            pipe.echo("")  # keeps every job's replies the same length
        pipe.zscore(k.leases, job_id)
        pipe.zscore(k.delayed, job_id)
        pipe.zscore(k.expiring, job_id)
        pipe.zscore(k.index_runtime(runtime), job_id)
        pipe.zscore(k.index_type(job_type), job_id)
        for state in STATES:
            pipe.zscore(k.index_state(state), job_id)
    pipe.get(k.seq)
    pipe.zcard(k.models)
    pipe.zcard(k.index_all)
    pipe.keys(k.idem("*"))
    pipe.keys(k.model_holders("*", "*"))
    pipe.keys(k.worker_models("*"))
    replies = pipe.execute()
    jobs: dict[str, Any] = {}
    for n, job_id in enumerate(ids):
        values, events, ready, by_model, lease, delayed, expiring, by_runtime, by_type, *states = (
            replies[n * per_job : (n + 1) * per_job]
        )
        jobs[job_id] = {
            **dict(zip(TRACKED, values, strict=True)),
            "events": events,
            "ready": ready,
            "ready_model": by_model or None,
            "lease": lease,
            "delayed": delayed,
            "expiring": expiring,
            "state_indexes": {s: v for s, v in zip(STATES, states, strict=True) if v is not None},
            "runtime_index": by_runtime,
            "type_index": by_type,
        }
    seq, models, total, idem_keys, holder_keys, worker_keys = replies[len(ids) * per_job :]
    assert total == len(ids), f"index:all holds {total} jobs; the model knows {len(ids)}"
    idem = {key[len(k.idem("")) :]: r.get(key) for key in idem_keys}
    name_at = len(k.model_holders("", "")) - 1  # where '<runtime>:<model>' starts
    holders = {key[name_at:]: dict(r.zrange(key, 0, -1, withscores=True)) for key in holder_keys}
    at = len(k.worker_models(""))
    worker_models = {key[at:]: r.smembers(key) for key in worker_keys}
    return {
        "jobs": jobs,
        "seq": seq,
        "idem": idem,
        "models": models,
        "holders": holders,
        "worker_models": worker_models,
    }


def describe_difference(expected: dict[str, Any], observed: dict[str, Any]) -> str:
    """The fields where a model's view and Redis differ, one per line."""
    lines = [
        f"{name}: model {expected[name]!r}, redis {observed[name]!r}"
        for name in ("seq", "idem", "models", "holders", "worker_models")
        if expected[name] != observed[name]
    ]
    for job_id in sorted(set(expected["jobs"]) | set(observed["jobs"])):
        want, got = expected["jobs"].get(job_id, {}), observed["jobs"].get(job_id, {})
        lines += [
            f"job {job_id} {name}: model {want.get(name)!r}, redis {got.get(name)!r}"
            for name in sorted(set(want) | set(got))
            if want.get(name) != got.get(name)
        ]
    return "\n".join(lines) or "(Redis matches the model; the replies differ)"


SEEN: Counter[str] = Counter()  # what the runs exercised (transitions by call, and paths)


@dataclass(frozen=True)
class Attempt:
    job_id: str
    attempt_id: str
    worker_id: str
    runtime: str = ""
    model_id: str = ""  # the inference job's model ("" for none): what a batch shares


# What a claim that found nothing adds to the bundle. Whether a claim finds work depends
# on the clock, and Hypothesis needs the same draws whatever the clock did, so every claim
# adds one value (a batch claim, one per job it asked for). Used later, it is an attempt
# on a job that does not exist: refused too.
NO_ATTEMPT = Attempt("no-such-job", "nothing-was-claimed", "nobody")


class Harness(RuleBasedStateMachine):
    """A queue on a flushed database, a model, and ``step``, which runs one call and
    moves the model along with it."""

    def __init__(self, queue: JobQueue) -> None:
        super().__init__()
        self.queue = queue
        queue.redis.flushdb()
        self.model = Model()
        self.terminal: dict[str, str] = {}  # job id -> the terminal state Redis first showed
        self.issued: dict[str, list[Attempt]] = {}  # job id -> its attempts, oldest first
        # Bumped whenever Redis may have changed (a script ran, or time passed), so the
        # invariants skip reads that could not show anything new: after a step, ``step``
        # has already compared Redis with the model and nothing was written since.
        self.generation = 0
        self.verified = -1  # the generation whose Redis ``step`` compared with the model
        self.changed = 0  # the last generation in which a script changed something
        self.indexes_checked = -1
        self._jobs: tuple[int, dict[str, dict[str, str]]] = (-1, {})
        self.log: list[str] = []  # what each call did, for failure messages

    # -- matching the model -----------------------------------------------------------

    def step(self, what: str, call: Callable[[], T], predict: Callable[[Model, int, T], Any]) -> T:
        """Run ``call`` against Redis, then find a server time ``now`` in the window around
        it for which ``predict(model_copy, now, reply)`` gives ``(expected, actual)`` replies
        that agree and leaves the copy equal to what Redis holds; that copy is the model."""
        self.generation += 1
        t0 = self.queue.server_time_ms()
        reply = call()
        t1 = self.queue.server_time_ms()
        first: tuple[Any, Any, Model] | None = None
        observed: dict[str, Any] = {}
        for now in range(t0, t1 + 1):
            model = self.model.clone()
            expected, actual = predict(model, now, reply)
            if not observed or set(observed["jobs"]) != set(model.jobs):
                observed = observe(self.queue, model.routes())
            if expected == actual and model.view() == observed:
                self.accept(what, model, f"{what} at {now}: {actual!r}")
                return reply
            first = first or (expected, actual, model)
        assert first is not None
        expected, actual, model = first
        self.fail(
            f"{what}: no server time in [{t0}, {t1}] explains the outcome.\n"
            f"reply {actual!r}; the model's at {t0}: {expected!r}\n"
            + describe_difference(model.view(), observed)
        )

    def step_each(
        self, what: str, call: Callable[[], list[T]], predicts: Sequence[ItemPrediction]
    ) -> list[T]:
        """``step`` for a pipeline of script calls, each reading its own clock: the i-th
        call's ``now`` is the least one, not before the previous call's, in the window
        for which ``predicts[i]`` agrees with its reply and leaves its job as Redis holds
        it. Then the whole model must match Redis."""
        self.generation += 1
        t0 = self.queue.server_time_ms()
        replies = call()
        t1 = self.queue.server_time_ms()
        probe = self.model.clone()  # which jobs there are does not depend on the clock
        for predict, reply in zip(predicts, replies, strict=True):
            predict(probe, t0, reply)
        observed = observe(self.queue, probe.routes())
        model, earliest, nows = self.model, t0, []
        for i, (predict, reply) in enumerate(zip(predicts, replies, strict=True)):
            for now in range(earliest, t1 + 1):
                trial = model.clone()
                expected, actual, job_id = predict(trial, now, reply)
                if expected == actual and (
                    job_id is None or trial.jobs[job_id].view() == observed["jobs"][job_id]
                ):
                    model, earliest = trial, now
                    nows.append(now)
                    break
            else:
                trial = model.clone()
                expected, actual, _ = predict(trial, earliest, reply)
                self.fail(
                    f"{what}: no server time in [{earliest}, {t1}] explains call {i}.\n"
                    f"reply {actual!r}; the model's: {expected!r}\n"
                    + describe_difference(trial.view(), observed)
                )
        if model.view() != observed:
            self.fail(
                f"{what}: Redis differs from the model after every call.\n"
                + describe_difference(model.view(), observed)
            )
        self.accept(what, model, f"{what} at {nows}: {replies!r}")
        return replies

    def accept(self, what: str, model: Model, line: str) -> None:
        if model.view() != self.model.view():
            self.changed = self.generation
        self.record(what, model)
        self.verified = self.generation
        self.log.append(line)

    def fail(self, message: str) -> NoReturn:
        # A failure that depends on the clock may not replay, so Hypothesis may not
        # shrink it or print its steps: this example's calls so far, to read instead.
        raise AssertionError(message + "\nthis example's calls so far:\n  " + "\n  ".join(self.log))

    def record(self, what: str, model: Model) -> None:
        for job_id, job in model.jobs.items():
            old = self.model.jobs.get(job_id)
            if old is None or (old.state, old.events) != (job.state, job.events):
                SEEN[f"{what}: {old.state if old else 'new'} -> {job.state}"] += 1
        self.model = model

    def redis_jobs(self) -> dict[str, dict[str, str]]:
        """Every job hash the model knows of, as Redis holds it now (read once per
        generation)."""
        if self._jobs[0] != self.generation:
            pipe = self.queue.redis.pipeline(transaction=False)
            ids = sorted(self.model.jobs)
            for job_id in ids:
                pipe.hgetall(self.queue.keys.job(job_id))
            self._jobs = (self.generation, dict(zip(ids, pipe.execute(), strict=True)))
        return self._jobs[1]

    def holding_now(self, attempts: Sequence[Attempt]) -> list[bool]:
        """Per attempt, whether Redis says it holds its job now (read in one round trip)."""
        pipe = self.queue.redis.pipeline(transaction=False)
        for a in attempts:
            pipe.hmget(self.queue.keys.job(a.job_id), ["state", "attempt_id"])
        return [
            state == "running" and attempt_id == a.attempt_id
            for a, (state, attempt_id) in zip(attempts, pipe.execute(), strict=True)
        ]

    def fenced(
        self,
        what: str,
        attempt: Attempt,
        call: Callable[[], T],
        predict: Callable[[Model, int, T], Any],
    ) -> tuple[T, bool]:
        """``step`` for an attempt-scoped call. If Redis says the attempt does not hold
        the job (stale, or no such job), check that the call changed nothing at all.
        Returns the reply and whether the attempt held the job."""
        held = self.holding_now([attempt])[0]
        before = None if held else snapshot(self.queue, attempt.job_id)
        reply = self.step(what, call, predict)
        if before is not None:
            assert snapshot(self.queue, attempt.job_id) == before, "a stale attempt wrote"
            SEEN["refused: a stale or unknown attempt"] += 1
        return reply, held

    def fenced_many(
        self, what: str, attempts: Sequence[Attempt], run: Callable[[], list[T]]
    ) -> tuple[list[T], list[bool]]:
        """``fenced`` for a call on many attempts at once: the jobs none of them holds
        are left exactly as they were. Returns the replies and, per item, whether its
        attempt held the job when the call began."""
        held = self.holding_now(attempts)
        live = {a.job_id for a, h in zip(attempts, held, strict=True) if h}
        before = {
            a.job_id: snapshot(self.queue, a.job_id) for a in attempts if a.job_id not in live
        }
        replies = run()
        for job_id, was in before.items():
            assert snapshot(self.queue, job_id) == was, f"{what}: a stale item wrote {job_id}"
        if live and before:
            SEEN[f"{what}: stale items beside live ones"] += 1
        return replies, held
