"""The Redis queue engine. Every state change is one Lua script (see ``lua/``); this
module turns them into typed calls. The read side (records, indexes, events) is
``engine_reads``, the batch calls ``engine_batch``, the records ``engine_types``; all of
them are importable from here.

The job hash is the source of truth; ready queues (per runtime, and per model for
inference jobs), leases, the delayed set and the listing indexes are indexes over it that
the scripts keep in step (``trainyard.consistency`` checks that they did).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from redis import Redis

from .engine_batch import QueueBatches
from .engine_reads import QueueReads
from .engine_types import (
    CancelOutcome,
    Claim,
    ClaimResult,
    Event,
    FinishItem,
    FinishOutcome,
    JobPage,
    Outcome,
    RedriveOutcome,
    Renewal,
    Submission,
    backoff_ms,
    new_job_id,
)
from .keys import KeySchema
from .scripts import Scripts
from .types import JobType, Priority

__all__ = [
    "DEFAULT_HOLDER_TTL_MS",
    "CancelOutcome",
    "Claim",
    "ClaimResult",
    "Event",
    "FinishItem",
    "FinishOutcome",
    "JobPage",
    "JobQueue",
    "Outcome",
    "RedriveOutcome",
    "Renewal",
    "Submission",
    "backoff_ms",
    "new_job_id",
]

# How long a model_holders entry counts as live without a refresh: the worker
# registration's default lifetime (ai-worker's worker_ttl_s, 20 s).
DEFAULT_HOLDER_TTL_MS = 20_000


class JobQueue(QueueBatches, QueueReads):
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
        idempotency key already named a job (whose id is returned). Many at once:
        ``enqueue_many``."""
        submission = Submission(
            job_type=job_type,
            runtime=runtime,
            request=request,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            queue_ttl_s=queue_ttl_s,
            idempotency_key=idempotency_key,
            idempotency_ttl_s=idempotency_ttl_s,
            extra_fields=extra_fields,
            job_id=job_id,
        )
        keys, args = submission.script_call(self.keys)
        created, existing = self._scripts.enqueue(keys=keys, args=args)
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

    def wait_for_work(
        self, runtimes: Sequence[str], timeout_s: float, *, worker_id: str | None = None
    ) -> bool:
        """Block until a wake-up token arrives for one of ``runtimes`` (or the timeout).
        With ``worker_id``, also for this worker alone: a job of a model it holds
        (``set_loaded_models``) was skipped by another worker's ``claim_work``. The
        connection's socket timeout must exceed ``timeout_s``."""
        lists = [self.keys.wake(r) for r in runtimes]
        if worker_id is not None:
            lists.append(self.keys.wake_worker(worker_id))
        got = self._r.blpop(lists, timeout=timeout_s)
        return got is not None

    def claim(self, worker_id: str, runtimes: Sequence[str], lease_ms: int) -> Claim | None:
        """The best queued job of ``runtimes`` (priority, then FIFO), started as a new
        attempt; None when none is ready. No model affinity (see ``claim_work``)."""
        return self.claim_work(worker_id, runtimes, lease_ms).claim

    def claim_work(
        self,
        worker_id: str,
        runtimes: Sequence[str],
        lease_ms: int,
        *,
        loaded_models: Sequence[str] = (),
        affinity_ms: int = 0,
        holder_ttl_ms: int = DEFAULT_HOLDER_TTL_MS,
    ) -> ClaimResult:
        """``claim`` with model affinity (``lua/claim.lua``): with ``affinity_ms`` > 0, an
        inference job whose model another live worker holds (``set_loaded_models``,
        entries younger than ``holder_ttl_ms``) and this one (``loaded_models``) does not
        is left to that worker until it has waited ``affinity_ms`` (and that worker is
        woken: see ``wait_for_work``'s ``worker_id``). When only such jobs are waiting,
        the result has no claim and ``recheck_ms``: call again then (no wake-up comes
        for them). ``affinity_ms`` = 0: exactly ``claim``. A claim also marks the
        worker busy with the job (``state``/``current_job``, as ``set_worker_state``)
        when it is registered; no separate busy write is needed."""
        attempt_id = secrets.token_hex(12)
        reply = self._scripts.claim(
            keys=[self.keys.leases],
            args=[
                worker_id,
                attempt_id,
                lease_ms,
                max(affinity_ms, 0),
                holder_ttl_ms,
                len(loaded_models),
                *loaded_models,
                *runtimes,
            ],
        )
        if isinstance(reply, list) and reply:
            return ClaimResult(claim=Claim.from_flat(reply))
        if isinstance(reply, int):
            return ClaimResult(claim=None, recheck_ms=max(reply, 1))
        return ClaimResult(claim=None)

    def renew(self, job_id: str, attempt_id: str, lease_ms: int) -> Renewal:
        """Extend a running attempt's lease; ``held`` False: it lost the job, stop it.
        Many at once: ``renew_many``."""
        reply = self._scripts.renew(
            keys=[self.keys.job(job_id)], args=[job_id, attempt_id, lease_ms]
        )
        return Renewal.from_reply(reply)

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
        """End a running attempt (fenced by ``attempt_id``). Many at once:
        ``finish_many``."""
        item = FinishItem(
            job_id, attempt_id, outcome, result, error, error_kind, retry_delay_ms, model
        )
        reply = self._scripts.finish(keys=[self.keys.job(job_id)], args=item.script_args())
        return FinishOutcome.from_reply(reply)

    def release(self, job_id: str, attempt_id: str, reason: str) -> bool:
        """Hand a running job back to its queue without counting the attempt."""
        ok = self._scripts.release(keys=[self.keys.job(job_id)], args=[job_id, attempt_id, reason])
        return bool(int(ok))

    def reap(self, limit: int = 100, *, every_ms: int = 0) -> list[tuple[str, str]]:
        """Recover jobs whose lease expired (and expire never-started jobs past their
        queue TTL); returns ``(job_id, new_state)`` pairs. ``every_ms`` > 0: at most one
        scan per ``every_ms`` for all callers together (``K.reaper_lock``); a call
        inside another's interval scans nothing and returns ``[]``. 0: always scan."""
        flat = self._scripts.reap(keys=[self.keys.leases], args=[limit, max(every_ms, 0)])
        return list(zip(flat[::2], flat[1::2], strict=True))

    def heartbeat(self, worker_id: str, fields: dict[str, Any], ttl_ms: int) -> int:
        now = self._scripts.heartbeat(
            keys=[self.keys.worker(worker_id)],
            args=[worker_id, ttl_ms, json.dumps({k: str(v) for k, v in fields.items()})],
        )
        return int(now)

    def set_worker_state(self, worker_id: str, state: str, current_job: str | None) -> bool:
        """The small busy/idle write (``state`` and ``current_job``) between heartbeats.
        False: the worker is not registered (its registration expired); nothing was
        written, and the next ``heartbeat`` registers it with every field."""
        written = self._scripts.worker_state(
            keys=[self.keys.worker(worker_id)], args=[state, current_job or ""]
        )
        return bool(int(written))

    def set_loaded_models(
        self, worker_id: str, runtime: str, loaded: Sequence[str], ttl_ms: int
    ) -> None:
        """Record the models this worker holds loaded for ``runtime`` (for affinity):
        it becomes a holder of each, for ``ttl_ms`` unless refreshed, and stops holding
        the runtime's models not in ``loaded``. Call it when the loaded set changes and
        with each heartbeat."""
        if not runtime:
            raise ValueError("set_loaded_models needs a runtime")
        self._scripts.loaded_models(
            keys=[self.keys.worker_models(worker_id)], args=[worker_id, runtime, ttl_ms, *loaded]
        )

    def cancel_channel(self, worker_id: str) -> str:
        """The pub/sub channel on which ``cancel`` publishes the ids of this worker's
        running jobs to stop. Best effort: a message sent while the subscriber
        reconnects is lost, so ``renew`` still reports the flag."""
        return self.keys.cancels(worker_id)

    def unregister_worker(self, worker_id: str) -> None:
        """A graceful exit: forget the worker's models and registration (``unregister.lua``
        also writes its "down" entry to the activity stream)."""
        self._scripts.loaded_models(
            keys=[self.keys.worker_models(worker_id)], args=[worker_id, "", 0]
        )
        self._scripts.unregister(keys=[self.keys.worker(worker_id)], args=[worker_id])
