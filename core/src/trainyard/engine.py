"""The Redis queue engine. Every state change is one Lua script (see ``lua/``); this
module turns them into typed calls and adds the read side (records, indexes, events).

The job hash is the source of truth; ready queues, leases, the delayed set and the
listing indexes are indexes over it that the scripts keep in step.
"""

from __future__ import annotations

import json
import random
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis import Redis

from .keys import KeySchema
from .routing import RUNTIMES
from .scripts import Scripts
from .types import JobState, JobType, Priority

__all__ = [
    "CancelOutcome",
    "Claim",
    "Event",
    "FinishOutcome",
    "JobPage",
    "JobQueue",
    "RedriveOutcome",
    "Renewal",
    "backoff_ms",
    "new_job_id",
]

Outcome = Literal["succeeded", "failed", "cancelled", "retry"]


def new_job_id() -> str:
    return uuid.uuid4().hex


def backoff_ms(attempt: int, base_s: float = 2.0, cap_s: float = 300.0) -> int:
    """Exponential backoff with jitter: half fixed, half random, so retries of many jobs
    that failed together spread out but none retries at once."""
    ceiling = min(cap_s, base_s * 2 ** max(attempt - 1, 0)) * 1000
    return int(ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass(frozen=True)
class Claim:
    job: dict[str, str]

    @property
    def job_id(self) -> str:
        return self.job["id"]

    @property
    def attempt_id(self) -> str:
        return self.job["attempt_id"]


@dataclass(frozen=True)
class Renewal:
    held: bool  # False: this attempt lost the job; stop it now
    cancel_requested: bool
    state: str | None = None


@dataclass(frozen=True)
class FinishOutcome:
    applied: bool  # False: refused, this attempt no longer holds the job
    state: str


@dataclass(frozen=True)
class CancelOutcome:
    found: bool
    state: str  # cancelled, running (cancel requested) or the terminal state it had
    changed: bool


@dataclass(frozen=True)
class RedriveOutcome:
    found: bool
    redriven: bool  # False: the job is not dead (``state`` says what it is)
    state: str  # the old job's state
    new_job_id: str | None  # the job it was (or had already been) redriven to
    created: bool  # False: it had been redriven before; ``new_job_id`` is that job


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id; resumable with Last-Event-ID
    kind: str  # state | progress | log | cancel_requested
    data: dict[str, Any]


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, str]]
    next_cursor: str | None


class JobQueue:
    """One handle on a Trainyard queue in a Redis (or Valkey) server.

    ``redis`` must be created with ``decode_responses=True``.
    """

    def __init__(self, redis: Redis, keys: KeySchema | None = None) -> None:
        self.redis = redis
        # Replies are str (decode_responses=True), which redis-py's stubs cannot express.
        self._r: Any = redis
        self.keys = keys or KeySchema()
        self._scripts = Scripts(redis, self.keys)

    # -- submitting and cancelling -------------------------------------------------

    def enqueue(
        self,
        *,
        job_type: JobType,
        runtime: str,
        request: dict[str, Any],
        priority: Priority = Priority.NORMAL,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        queue_ttl_s: float | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl_s: int = 86400,
        extra_fields: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> tuple[str, bool]:
        """Queue a job. Returns ``(job_id, created)``; ``created`` is False when the
        idempotency key already named a job (whose id is returned)."""
        job_id = job_id or new_job_id()
        fields = {
            "priority": str(priority),
            "max_attempts": str(max_attempts),
            "timeout_s": "" if timeout_s is None else str(timeout_s),
            "request": json.dumps(request, separators=(",", ":")),
            **(extra_fields or {}),
        }
        created, existing = self._scripts.enqueue(
            keys=[self.keys.job(job_id)],
            args=[
                job_id,
                runtime,
                str(job_type),
                priority.rank,
                idempotency_key or "",
                idempotency_ttl_s,
                round((queue_ttl_s or 0) * 1000),
                json.dumps(fields),
            ],
        )
        return str(existing), bool(int(created))

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> CancelOutcome:
        code, state = self._scripts.cancel(keys=[self.keys.job(job_id)], args=[job_id, reason])
        code = int(code)
        return CancelOutcome(found=code != -1, state=str(state), changed=code in (1, 2))

    def redrive(self, job_id: str, reason: str = "redriven") -> RedriveOutcome:
        """Queue a dead job again as a new job (see ``lua/redrive.lua``); idempotent."""
        code, value = self._scripts.redrive(
            keys=[self.keys.job(job_id)], args=[job_id, new_job_id(), reason]
        )
        code = int(code)
        if code == -1:
            return RedriveOutcome(False, False, "missing", None, False)
        if code == 0:
            return RedriveOutcome(True, False, str(value), None, False)
        return RedriveOutcome(True, True, "dead", str(value), code == 1)

    # -- the worker's side -----------------------------------------------------------

    def wait_for_work(self, runtimes: Sequence[str], timeout_s: float) -> bool:
        """Block until a wake-up token arrives for one of ``runtimes`` (or the timeout).
        The connection's socket timeout must exceed ``timeout_s``."""
        got = self._r.blpop([self.keys.wake(r) for r in runtimes], timeout=timeout_s)
        return got is not None

    def claim(self, worker_id: str, runtimes: Sequence[str], lease_ms: int) -> Claim | None:
        attempt_id = secrets.token_hex(12)
        flat = self._scripts.claim(
            keys=[self.keys.leases], args=[worker_id, attempt_id, lease_ms, *runtimes]
        )
        if not flat:
            return None
        return Claim(job=dict(zip(flat[::2], flat[1::2], strict=True)))

    def renew(self, job_id: str, attempt_id: str, lease_ms: int) -> Renewal:
        held, value = self._scripts.renew(
            keys=[self.keys.job(job_id)], args=[job_id, attempt_id, lease_ms]
        )
        if int(held) == 1:
            return Renewal(held=True, cancel_requested=int(value) == 1)
        return Renewal(held=False, cancel_requested=False, state=str(value))

    def cancel_requested(self, job_id: str) -> bool:
        """A cheap read of the cancel flag, for supervisors that check between renewals."""
        return bool(self._r.hget(self.keys.job(job_id), "cancel_requested") == "1")

    def report(self, job_id: str, attempt_id: str, kind: str, data: dict[str, Any]) -> bool:
        """Record a progress event or a log line; False if this attempt lost the job."""
        ok = self._scripts.report(
            keys=[self.keys.job(job_id)],
            args=[job_id, attempt_id, kind, json.dumps(data, separators=(",", ":"))],
        )
        return bool(int(ok))

    def finish(
        self,
        job_id: str,
        attempt_id: str,
        outcome: Outcome,
        *,
        result: dict[str, Any] | None = None,
        error: str = "",
        error_kind: str = "",
        retry_delay_ms: int = 0,
        model: dict[str, Any] | None = None,
    ) -> FinishOutcome:
        applied, state = self._scripts.finish(
            keys=[self.keys.job(job_id)],
            args=[
                job_id,
                attempt_id,
                outcome,
                "" if result is None else json.dumps(result, separators=(",", ":")),
                error,
                error_kind,
                retry_delay_ms,
                model["model_id"] if model else "",
                json.dumps(model, separators=(",", ":")) if model else "",
            ],
        )
        return FinishOutcome(applied=bool(int(applied)), state=str(state))

    def release(self, job_id: str, attempt_id: str, reason: str) -> bool:
        """Hand a running job back to its queue without counting the attempt."""
        ok = self._scripts.release(keys=[self.keys.job(job_id)], args=[job_id, attempt_id, reason])
        return bool(int(ok))

    def reap(self, limit: int = 100) -> list[tuple[str, str]]:
        """Recover jobs whose lease expired; returns ``(job_id, new_state)`` pairs."""
        flat = self._scripts.reap(keys=[self.keys.leases], args=[limit])
        return list(zip(flat[::2], flat[1::2], strict=True))

    def heartbeat(self, worker_id: str, fields: dict[str, Any], ttl_ms: int) -> int:
        now = self._scripts.heartbeat(
            keys=[self.keys.worker(worker_id)],
            args=[worker_id, ttl_ms, json.dumps({k: str(v) for k, v in fields.items()})],
        )
        return int(now)

    def unregister_worker(self, worker_id: str) -> None:
        pipe = self._r.pipeline()
        pipe.delete(self.keys.worker(worker_id))
        pipe.zrem(self.keys.workers, worker_id)
        pipe.execute()

    # -- reading ---------------------------------------------------------------------

    def server_time_ms(self) -> int:
        seconds, micros = self._r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def get_job(self, job_id: str) -> dict[str, str] | None:
        h = self._r.hgetall(self.keys.job(job_id))
        return h or None

    def get_jobs(self, job_ids: Iterable[str]) -> list[dict[str, str]]:
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        return [h for h in pipe.execute() if h]

    def list_jobs(
        self,
        *,
        state: str | None = None,
        runtime: str | None = None,
        job_type: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        scan_budget: int = 5000,
    ) -> JobPage:
        """Newest first. Walks the smallest matching index and filters the rest, so a
        page costs at most ``scan_budget`` index entries even with 100,000s of jobs; a
        page may come back short with a cursor when the budget ran out."""
        candidates = [self.keys.index_all]
        if state:
            candidates.append(self.keys.index_state(state))
        if runtime:
            candidates.append(self.keys.index_runtime(runtime))
        if job_type:
            candidates.append(self.keys.index_type(job_type))
        pipe = self._r.pipeline(transaction=False)
        for key in candidates:
            pipe.zcard(key)
        sizes = pipe.execute()
        driver = candidates[min(range(len(candidates)), key=lambda i: sizes[i])]

        # With at most one filter the driver index is that filter: every entry matches, so
        # read exactly what the page needs. Otherwise over-read to pay fewer round trips.
        exact = sum(1 for f in (state, runtime, job_type) if f) <= 1
        upper = f"({int(cursor)}" if cursor else "+inf"
        found: list[dict[str, str]] = []
        scanned = 0
        last_seq: int | None = None
        while len(found) < limit and scanned < scan_budget:
            want = limit - len(found)
            num = min(want if exact else max(want * 4, 100), scan_budget - scanned)
            batch = self._r.zrevrangebyscore(
                driver, upper, "-inf", start=0, num=num, withscores=True
            )
            scanned += len(batch)
            for job in self.get_jobs(job_id for job_id, _ in batch):
                if (
                    (state and job.get("state") != state)
                    or (runtime and job.get("runtime") != runtime)
                    or (job_type and job.get("type") != job_type)
                ):
                    continue
                found.append(job)
                if len(found) == limit:
                    return JobPage(found, job["seq"])
            if len(batch) < num:
                return JobPage(found, None)  # the index has nothing older
            last_seq = int(batch[-1][1])
            upper = f"({last_seq}"
        return JobPage(found, str(last_seq) if last_seq is not None else None)

    def events(
        self, job_id: str, after: str = "0", count: int = 1000, block_ms: int | None = None
    ) -> list[Event]:
        """Events after stream id ``after``; with ``block_ms``, wait that long for one."""
        key = self.keys.events(job_id)
        if block_ms is None:
            entries = self._r.xrange(key, min=f"({after}" if after != "0" else "-", count=count)
        else:
            reply = self._r.xread({key: after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [
            Event(eid, f.get("kind", ""), json.loads(f.get("data") or "{}")) for eid, f in entries
        ]

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Queued jobs per runtime, by priority and in total."""
        band = 1 << 40
        pipe = self._r.pipeline(transaction=False)
        names = list(RUNTIMES)
        for name in names:
            key = self.keys.ready(name)
            for rank in range(3):
                pipe.zcount(key, rank * band, (rank + 1) * band - 1)
        counts = pipe.execute()
        depths: dict[str, dict[str, int]] = {}
        for i, name in enumerate(names):
            high, normal, low = counts[i * 3 : i * 3 + 3]
            depths[name] = {
                "high": high,
                "normal": normal,
                "low": low,
                "total": high + normal + low,
            }
        return depths

    def running_by_runtime(self) -> dict[str, int]:
        """Running jobs per runtime (the intersection of two listing indexes)."""
        pipe = self._r.pipeline(transaction=False)
        names = list(RUNTIMES)
        running = self.keys.index_state(JobState.RUNNING)
        for name in names:
            pipe.zintercard(2, [running, self.keys.index_runtime(name)])
        return dict(zip(names, pipe.execute(), strict=True))

    def count_by_state(self) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        for s in JobState:
            pipe.zcard(self.keys.index_state(s))
        return dict(zip([str(s) for s in JobState], pipe.execute(), strict=True))

    def live_workers(self, max_age_ms: int) -> list[dict[str, str]]:
        now = self.server_time_ms()
        ids = self._r.zrangebyscore(self.keys.workers, now - max_age_ms, "+inf")
        pipe = self._r.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(self.keys.worker(worker_id))
        return [h for h in pipe.execute() if h]

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        raw = self._r.get(self.keys.model(model_id))
        return json.loads(raw) if raw else None

    def list_models(self, limit: int = 100, cursor: str | None = None) -> list[dict[str, Any]]:
        upper = f"({cursor}" if cursor else "+inf"
        ids = self._r.zrevrangebyscore(self.keys.models, upper, "-inf", start=0, num=limit)
        if not ids:
            return []
        raws = self._r.mget([self.keys.model(i) for i in ids])
        return [json.loads(r) for r in raws if r]
