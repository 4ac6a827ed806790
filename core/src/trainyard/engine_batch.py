"""Batch calls of the queue engine: many jobs per round trip. A mixin of
``trainyard.engine.JobQueue``.

``enqueue_many`` sends chunks of up to ``ENQUEUE_CHUNK`` submissions per
``enqueue_batch.lua`` call, all chunks in one pipeline; ``renew_many`` pipelines the
single-job script (one round trip, each call still atomic on its own); ``claim_batch`` and
``finish_many`` are one script call each (``claim_batch.lua``, ``finish_batch.lua``). Each
job is created, fenced, started or ended exactly as the single-job script does it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError

from .engine_types import Claim, FinishItem, FinishOutcome, Renewal, ScriptCall, Submission
from .keys import KeySchema
from .scripts import Scripts

__all__ = ["ENQUEUE_CHUNK", "QueueBatches", "run_pipelined"]

# Submissions per enqueue_batch.lua call: large enough that the per-call cost vanishes,
# small enough that one call does not hold the server for long (~200 jobs: a few ms).
ENQUEUE_CHUNK = 200


def run_pipelined(redis: Any, script: Script, calls: Sequence[ScriptCall]) -> list[Any]:
    """Call ``script`` once per ``(keys, args)`` in one pipeline (no MULTI) and return the
    replies in order. EVALSHA only: a call answered NOSCRIPT did not run, so exactly those
    are sent again after loading the script (redis-py's own pipelined scripts would ask
    SCRIPT EXISTS first, a second round trip every time). The first error reply is raised
    after the whole pipeline ran (the calls before and after it were applied)."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for _ in range(2):
        pipe = redis.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        missing: list[int] = []
        for i, reply in zip(todo, pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
            if isinstance(reply, NoScriptError):
                missing.append(i)
        if not missing:
            break
        script.sha = redis.script_load(script.script)
        todo = missing
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class QueueBatches:
    """Batch calls; ``JobQueue`` sets these attributes."""

    _r: Any
    keys: KeySchema
    _scripts: Scripts

    def enqueue_many(self, submissions: Sequence[Submission]) -> list[tuple[str, bool]]:
        """Queue many jobs in one round trip: ``(job_id, created)`` per submission, in
        order, each exactly as ``enqueue`` would answer it. Idempotency keys are honoured
        per submission, also within the batch (a key repeated later in the batch names
        the job its first use created). Submitted in order, so FIFO follows the list.
        One ``enqueue_batch.lua`` call per ``ENQUEUE_CHUNK`` submissions, each chunk
        atomic on its own, all in one pipeline."""
        if not submissions:
            return []
        calls: list[ScriptCall] = []
        for start in range(0, len(submissions), ENQUEUE_CHUNK):
            keys: list[str] = []
            args: list[str | int] = []
            for sub in submissions[start : start + ENQUEUE_CHUNK]:
                sub_keys, sub_args = sub.script_call(self.keys)
                keys.extend(sub_keys)
                args.extend(sub_args)
            calls.append((keys, args))
        replies = run_pipelined(self._r, self._scripts.enqueue_batch, calls)
        return [
            (str(existing), bool(int(created))) for chunk in replies for created, existing in chunk
        ]

    def claim_batch(
        self, worker_id: str, runtime: str, model_id: str, lease_ms: int, max_jobs: int
    ) -> list[Claim]:
        """Up to ``max_jobs`` more queued inference jobs of ``model_id`` on ``runtime``,
        best first (priority, then FIFO), each started as its own attempt exactly as
        ``claim`` starts one; ``[]`` when none is waiting. Marks the worker busy with
        the first job claimed, as ``claim_work`` does."""
        if max_jobs <= 0:
            return []
        attempt_ids = [secrets.token_hex(12) for _ in range(max_jobs)]
        hashes = self._scripts.claim_batch(
            keys=[self.keys.leases], args=[worker_id, lease_ms, runtime, model_id, *attempt_ids]
        )
        return [Claim.from_flat(flat) for flat in hashes]

    def finish_many(self, items: Sequence[FinishItem]) -> list[FinishOutcome]:
        """End many attempts in one call, each fenced on its own exactly as ``finish``:
        a stale item is refused (``applied`` False), the others are applied."""
        if not items:
            return []
        args: list[str | int] = []
        for item in items:
            args.extend(item.script_args())
        replies = self._scripts.finish_batch(
            keys=[self.keys.job(item.job_id) for item in items], args=args
        )
        return [FinishOutcome.from_reply(reply) for reply in replies]

    def renew_many(self, items: Sequence[tuple[str, str]], lease_ms: int) -> list[Renewal]:
        """Renew the leases of many ``(job_id, attempt_id)`` in one round trip; one
        ``Renewal`` per item, in order, as ``renew`` answers."""
        calls: list[ScriptCall] = [
            ([self.keys.job(job_id)], [job_id, attempt_id, lease_ms])
            for job_id, attempt_id in items
        ]
        return [Renewal.from_reply(r) for r in run_pipelined(self._r, self._scripts.renew, calls)]
