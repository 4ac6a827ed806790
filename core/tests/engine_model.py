"""A plain-Python model of the queue engine's Lua scripts, and the harness that runs a
Hypothesis state machine against both Redis and the model, for ``test_engine_model.py``.

Each operation takes the server time ``now`` (ms) that the script would read with TIME
and changes the model the way the script's header says it changes Redis. The scripts read
the clock once per call, and the test only knows that ``now`` lies between two readings
taken around the call, so it replays an operation on a copy of the model for each ``now``
in that window and accepts the one that matches what Redis holds (see ``observe``). That
keeps the model exact everywhere except the one place where the real outcome depends on a
millisecond the test cannot see.

What the model tracks of a job is the hash fields in ``TRACKED`` (as the strings the
scripts write), the length of its event stream, and its scores in the ready queue, the
leases, the delayed and expiring sets and the state, runtime and type indexes. Where it
differs from the scripts as they were first written, a script was wrong; the
differences are the bugs the model check found (see ``finish`` and ``claim``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis.stateful import RuleBasedStateMachine
from queue_checks import snapshot

from trainyard.engine import JobQueue

__all__ = [
    "NO_ATTEMPT",
    "READY_BAND",
    "SEEN",
    "STATES",
    "TERMINAL",
    "TRACKED",
    "Attempt",
    "Harness",
    "Model",
    "ModelJob",
    "describe_difference",
    "observe",
]

T = TypeVar("T")

READY_BAND = 1 << 40  # ready score = priority rank * band + seq (_common.lua ready_score)
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
STATES = ("queued", "running", "retrying", *sorted(TERMINAL))
RANKS = {"high": 0, "normal": 1, "low": 2}

# The job hash fields the model predicts exactly. ``error`` (free text) and ``request``
# (opaque to the scripts) are left out on purpose.
# fmt: off
TRACKED = (
    "id", "type", "runtime", "priority", "rank", "seq", "state", "attempt", "max_attempts",
    "attempt_id", "worker_id", "stalls", "cancel_requested", "cancel_reason", "created_at",
    "expires_at", "started_at", "lease_until", "lease_ms", "retry_at", "finished_at",
    "error_kind", "progress", "model_id", "idempotency_key", "redriven_from", "redriven_to",
)
# fmt: on


@dataclass
class ModelJob:
    fields: dict[str, str]  # the tracked hash fields, exactly as the scripts write them
    events: int = 0  # entries in the job's event stream
    expiring: bool = False  # in the expiring set: queued, never started, with a queue TTL

    @property
    def state(self) -> str:
        return self.fields["state"]

    def num(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    def set(self, **values: int | str) -> None:
        self.fields.update({name: str(value) for name, value in values.items()})

    def view(self) -> dict[str, Any]:
        """What Redis must hold for this job (the same shape ``observe`` reads)."""
        f, state = self.fields, self.state
        return {
            **{name: f.get(name) for name in TRACKED},
            "events": self.events,
            "ready": float(self.num("rank") * READY_BAND + self.num("seq"))
            if state == "queued"
            else None,
            "lease": float(f["lease_until"]) if state == "running" else None,
            "delayed": float(f["retry_at"]) if state == "retrying" else None,
            "expiring": float(f["expires_at"]) if self.expiring else None,
            "state_indexes": {state: float(f["seq"])},
            "runtime_index": float(f["seq"]),
            "type_index": float(f["seq"]),
        }

    def event(self, **values: int | str) -> None:
        """A state change: new field values plus one event on the job's stream."""
        self.set(**values)
        self.events += 1


@dataclass
class Model:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    seq: int = 0
    idem: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    models: set[str] = field(default_factory=set)  # registered model ids

    def clone(self) -> Model:
        return Model(
            {i: ModelJob(dict(j.fields), j.events, j.expiring) for i, j in self.jobs.items()},
            self.seq,
            dict(self.idem),
            set(self.models),
        )

    def view(self) -> dict[str, Any]:
        return {
            "jobs": {job_id: job.view() for job_id, job in self.jobs.items()},
            "seq": str(self.seq) if self.seq else None,
            "idem": dict(self.idem),
            "models": len(self.models),
        }

    def routes(self) -> dict[str, tuple[str, str]]:
        return {job_id: (j.fields["runtime"], j.fields["type"]) for job_id, j in self.jobs.items()}

    def holds(self, job_id: str, attempt_id: str) -> bool:
        """Whether ``attempt_id`` is the attempt holding the job (the fence every
        attempt-scoped script applies)."""
        job = self.jobs.get(job_id)
        return job is not None and job.state == "running" and job.fields["attempt_id"] == attempt_id

    def state_of(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        return job.state if job else "missing"

    def deadlines(self) -> list[int]:
        """Every moment at which the passing of time alone makes something due."""
        out = []
        for job in self.jobs.values():
            if job.state == "running":
                out.append(job.num("lease_until"))
            elif job.state == "retrying":
                out.append(job.num("retry_at"))
            if job.expiring:
                out.append(job.num("expires_at"))
        return out

    # -- the scripts ---------------------------------------------------------------

    def enqueue(
        self, now: int, job_id: str, submission: dict[str, str], queue_ttl_ms: int
    ) -> tuple[str, bool]:
        """``submission``: priority, max_attempts, runtime, type and idempotency_key."""
        key = submission["idempotency_key"]
        if key and key in self.idem:
            return self.idem[key], False
        self._insert(now, job_id, submission, now + queue_ttl_ms if queue_ttl_ms > 0 else 0)
        if key:
            self.idem[key] = job_id
        return job_id, True

    def _insert(self, now: int, job_id: str, submission: dict[str, str], expires_at: int) -> None:
        """A new queued job (``insert_job`` in _common.lua)."""
        self.seq += 1
        job = ModelJob({}, expiring=expires_at > 0)
        job.event(
            **submission,
            id=job_id,
            rank=RANKS[submission["priority"]],
            seq=self.seq,
            state="queued",
            attempt=0,
            stalls=0,
            cancel_requested=0,
            created_at=now,
            expires_at=expires_at,
        )
        self.jobs[job_id] = job

    def redrive(self, now: int, job_id: str, new_id: str) -> tuple[bool, bool, str, Any, bool]:
        """(found, redriven, state, new job id, created), as ``RedriveOutcome``. A dead
        job's submission queued again as ``new_id``: nothing its lifecycle wrote (its
        attempts, errors, result, progress) comes along."""
        job = self.jobs.get(job_id)
        if job is None:
            return False, False, "missing", None, False
        if job.state != "dead":
            return True, False, job.state, None, False
        if job.fields.get("redriven_to"):
            return True, True, "dead", job.fields["redriven_to"], False
        names = ("priority", "max_attempts", "runtime", "type")
        submission = {name: job.fields[name] for name in names}
        # No queue TTL and no idempotency key: the operator asked for this run.
        self._insert(now, new_id, {**submission, "idempotency_key": "", "redriven_from": job_id}, 0)
        job.event(redriven_to=new_id)  # not a state change: a "redriven" event
        return True, True, "dead", new_id, True

    def _expire(self, job: ModelJob, now: int) -> None:
        job.expiring = False
        job.event(state="failed", finished_at=now, error_kind="expired")

    def claim(
        self, now: int, worker_id: str, attempt_id: str, lease_ms: int, runtimes: tuple[str, ...]
    ) -> str | None:
        for job in self.jobs.values():  # due retries go back to their queue first
            if job.state == "retrying" and job.num("retry_at") <= now:
                job.event(state="queued")
        ready = sorted(
            (
                j
                for j in self.jobs.values()
                if j.state == "queued" and j.fields["runtime"] in runtimes
            ),
            key=lambda j: (j.num("rank"), j.num("seq")),
        )
        for job in ready:
            # queue_ttl_s bounds only the wait before the first start.
            if job.expiring and now >= job.num("expires_at"):
                self._expire(job, now)
                continue
            job.expiring = False
            job.event(
                state="running",
                attempt=job.num("attempt") + 1,
                attempt_id=attempt_id,
                worker_id=worker_id,
                started_at=now,
                lease_until=now + lease_ms,
                lease_ms=lease_ms,
                cancel_requested=0,
            )
            return job.fields["id"]
        return None

    def renew(self, now: int, job_id: str, attempt_id: str, lease_ms: int) -> tuple[bool, str]:
        """(held, cancel_requested or the state)."""
        if not self.holds(job_id, attempt_id):
            return False, self.state_of(job_id)
        job = self.jobs[job_id]
        job.set(lease_until=now + lease_ms)
        return True, job.fields["cancel_requested"]

    def report(self, job_id: str, attempt_id: str, kind: str, data: str) -> bool:
        if not self.holds(job_id, attempt_id):
            return False
        job = self.jobs[job_id]
        if kind == "progress":
            job.set(progress=data)
        job.events += 1
        return True

    def finish(
        self,
        now: int,
        job_id: str,
        attempt_id: str,
        outcome: str,
        error_kind: str,
        retry_delay_ms: int,
        model_id: str,
    ) -> tuple[bool, str]:
        if not self.holds(job_id, attempt_id):
            return False, self.state_of(job_id)
        job = self.jobs[job_id]
        job.set(error_kind=error_kind, lease_until=0)
        if outcome == "retry":
            if job.fields["cancel_requested"] == "1":
                # A cancel was requested while this attempt ran: it must not be retried
                # (the next claim would clear the flag and the cancel would be lost).
                job.event(state="cancelled", finished_at=now, error_kind="cancelled")
                return True, "cancelled"
            if job.num("attempt") < job.num("max_attempts"):
                job.event(state="retrying", retry_at=now + retry_delay_ms)
                return True, "retrying"
            outcome = "dead"
        job.set(finished_at=now)
        if outcome == "succeeded" and model_id:
            self.models.add(model_id)
            job.set(model_id=model_id)
        job.event(state=outcome)
        return True, outcome

    def release(self, now: int, job_id: str, attempt_id: str) -> bool:
        if not self.holds(job_id, attempt_id):
            return False
        job = self.jobs[job_id]
        job.set(attempt=max(job.num("attempt") - 1, 0), attempt_id="", lease_until=0, worker_id="")
        if job.fields["cancel_requested"] == "1":
            job.event(state="cancelled", finished_at=now, error_kind="cancelled")
        else:
            job.event(state="queued")
        return True

    def cancel(self, now: int, job_id: str, reason: str) -> tuple[bool, str, bool]:
        """(found, state, changed), as ``CancelOutcome``."""
        job = self.jobs.get(job_id)
        if job is None:
            return False, "missing", False
        if job.state in ("queued", "retrying"):
            job.expiring = False
            job.event(
                state="cancelled", finished_at=now, error_kind="cancelled", cancel_requested=1
            )
            return True, "cancelled", True
        if job.state == "running":
            job.event(cancel_requested=1, cancel_reason=reason)
            return True, "running", True
        return True, job.state, False

    def reap(self, now: int, limit: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        leases = sorted(
            (j for j in self.jobs.values() if j.state == "running"),
            key=lambda j: (j.num("lease_until"), j.fields["id"]),  # zset order
        )
        for job in [j for j in leases if j.num("lease_until") <= now][:limit]:
            if job.fields["cancel_requested"] == "1":
                new_state, kind = "cancelled", "cancelled"
            elif job.num("attempt") >= job.num("max_attempts"):
                new_state, kind = "dead", "lost"
            else:
                new_state, kind = "queued", "lost"
            job.set(stalls=job.num("stalls") + 1, attempt_id="", lease_until=0, error_kind=kind)
            if new_state != "queued":
                job.set(finished_at=now)
            job.event(state=new_state)
            out.append((job.fields["id"], new_state))
        expiring = sorted(
            (j for j in self.jobs.values() if j.expiring),
            key=lambda j: (j.num("expires_at"), j.fields["id"]),
        )
        for job in [j for j in expiring if j.num("expires_at") <= now][:limit]:
            self._expire(job, now)
            out.append((job.fields["id"], "failed"))
        return out


def observe(queue: JobQueue, routes: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """What Redis holds, in the shape of ``Model.view``, for the jobs ``routes`` names
    (job id -> its runtime and job type), read in one round trip. With the index scores
    it reads, a match with the model also says that each job is in exactly the indexes
    its state calls for (``index_problems`` checks the same, and orphans, more slowly)."""
    r: Any = queue.redis
    k = queue.keys
    ids = sorted(routes)
    pipe = r.pipeline(transaction=False)
    per_job = 8 + len(STATES)
    runtimes = {job_id: runtime for job_id, (runtime, _) in routes.items()}
    types = {job_id: job_type for job_id, (_, job_type) in routes.items()}
    for job_id in ids:
        pipe.hmget(k.job(job_id), list(TRACKED))
        pipe.xlen(k.events(job_id))
        pipe.zscore(k.ready(runtimes[job_id]), job_id)
        pipe.zscore(k.leases, job_id)
        pipe.zscore(k.delayed, job_id)
        pipe.zscore(k.expiring, job_id)
        pipe.zscore(k.index_runtime(runtimes[job_id]), job_id)
        pipe.zscore(k.index_type(types[job_id]), job_id)
        for state in STATES:
            pipe.zscore(k.index_state(state), job_id)
    pipe.get(k.seq)
    pipe.zcard(k.models)
    pipe.zcard(k.index_all)
    pipe.keys(k.idem("*"))
    replies = pipe.execute()
    jobs: dict[str, Any] = {}
    for n, job_id in enumerate(ids):
        values, events, ready, lease, delayed, expiring, by_runtime, by_type, *states = replies[
            n * per_job : (n + 1) * per_job
        ]
        jobs[job_id] = {
            **dict(zip(TRACKED, values, strict=True)),
            "events": events,
            "ready": ready,
            "lease": lease,
            "delayed": delayed,
            "expiring": expiring,
            "state_indexes": {s: v for s, v in zip(STATES, states, strict=True) if v is not None},
            "runtime_index": by_runtime,
            "type_index": by_type,
        }
    seq, models, total, idem_keys = replies[len(ids) * per_job :]
    assert total == len(ids), f"index:all holds {total} jobs; the model knows {len(ids)}"
    prefix = len(k.idem(""))
    idem = {key[prefix:]: r.get(key) for key in idem_keys}
    return {"jobs": jobs, "seq": seq, "idem": idem, "models": models}


def describe_difference(expected: dict[str, Any], observed: dict[str, Any]) -> str:
    """The fields where a model's view and Redis differ, one per line."""
    lines = [
        f"{name}: model {expected[name]!r}, redis {observed[name]!r}"
        for name in ("seq", "idem", "models")
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


# -- running a state machine against Redis and the model --------------------------------

SEEN: Counter[str] = Counter()  # what the runs exercised (transitions by call)


@dataclass(frozen=True)
class Attempt:
    job_id: str
    attempt_id: str
    worker_id: str


# What a claim that found nothing adds to the bundle. Whether a claim finds work depends
# on the clock, and Hypothesis needs the same draws whatever the clock did, so every claim
# adds one value. Used later, it is an attempt on a job that does not exist: refused too.
NO_ATTEMPT = Attempt("no-such-job", "nothing-was-claimed", "nobody")


class Harness(RuleBasedStateMachine):
    """What the model check's state machine stands on: a queue on a flushed database, a
    model, and ``step``, which runs one call and moves the model along with it."""

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
                if model.view() != self.model.view():
                    self.changed = self.generation
                self.record(what, model)
                self.verified = self.generation
                self.log.append(f"{what} at {now}: {actual!r}")
                return reply
            first = first or (expected, actual, model)
        assert first is not None
        expected, actual, model = first
        raise AssertionError(
            f"{what}: no server time in [{t0}, {t1}] explains the outcome.\n"
            f"reply {actual!r}; the model's at {t0}: {expected!r}\n"
            + describe_difference(model.view(), observed)
            # A failure that depends on the clock may not replay, so Hypothesis may not
            # shrink it or print its steps: this example's calls so far, to read instead.
            + "\nthis example's calls so far:\n  "
            + "\n  ".join(self.log)
        )

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
        job = self.queue.get_job(attempt.job_id) or {}
        held = job.get("state") == "running" and job.get("attempt_id") == attempt.attempt_id
        before = None if held else snapshot(self.queue, attempt.job_id)
        reply = self.step(what, call, predict)
        if before is not None:
            assert snapshot(self.queue, attempt.job_id) == before, "a stale attempt wrote"
            SEEN["refused: a stale or unknown attempt"] += 1
        return reply, held
