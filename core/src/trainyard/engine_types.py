"""The typed records the queue engine hands out and takes in (``trainyard.engine``
re-exports them all), and how each becomes a Lua script's arguments or is parsed from
its reply, in one place, so the single and the batch calls cannot drift apart."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .keys import KeySchema
from .types import JobType, Priority

__all__ = [
    "CancelOutcome",
    "Claim",
    "ClaimResult",
    "Entry",
    "Event",
    "FinishItem",
    "FinishOutcome",
    "JobPage",
    "Outcome",
    "RedriveOutcome",
    "Renewal",
    "ScriptCall",
    "Submission",
    "backoff_ms",
    "events_from_entries",
    "new_job_id",
]

Outcome = Literal["succeeded", "failed", "cancelled", "retry"]

# One script call: its KEYS and its ARGV.
ScriptCall = tuple[list[str], list[str | int]]


def new_job_id() -> str:
    return uuid.uuid4().hex


def backoff_ms(attempt: int, base_s: float = 2.0, cap_s: float = 300.0) -> int:
    """Exponential backoff with jitter: half fixed, half random, so retries of many jobs
    that failed together spread out but none retries at once."""
    ceiling = min(cap_s, base_s * 2 ** max(attempt - 1, 0)) * 1000
    return int(ceiling / 2 + random.uniform(0, ceiling / 2))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Claim:
    job: dict[str, str]

    @property
    def job_id(self) -> str:
        return self.job["id"]

    @property
    def attempt_id(self) -> str:
        return self.job["attempt_id"]

    @classmethod
    def from_flat(cls, flat: list[str]) -> Claim:
        """From a script's flat ``{field, value, ...}`` reply (HGETALL in Lua)."""
        return cls(job=dict(zip(flat[::2], flat[1::2], strict=True)))


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim | None
    # Nothing claimable now, but jobs were skipped for affinity: call again after this
    # many ms (no wake-up will come for them). None when nothing was skipped.
    recheck_ms: int | None = None


@dataclass(frozen=True)
class Renewal:
    held: bool  # False: this attempt lost the job; stop it now
    cancel_requested: bool
    state: str | None = None

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Renewal:
        held, value = reply
        if int(held) == 1:
            return cls(held=True, cancel_requested=int(value) == 1)
        return cls(held=False, cancel_requested=False, state=str(value))


@dataclass(frozen=True)
class FinishOutcome:
    applied: bool  # False: refused, this attempt no longer holds the job
    state: str

    @classmethod
    def from_reply(cls, reply: list[Any]) -> FinishOutcome:
        applied, state = reply
        return cls(applied=bool(int(applied)), state=str(state))


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


Entry = tuple[str, dict[str, str]]  # a stream entry (XRANGE/XREAD): id, fields


def events_from_entries(entries: Iterable[Entry]) -> list[Event]:
    """Stream entries as events: ``kind`` and JSON ``data``."""
    return [Event(eid, f.get("kind", ""), json.loads(f.get("data") or "{}")) for eid, f in entries]


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, str]]
    next_cursor: str | None


@dataclass(frozen=True)
class Submission:
    """One job to queue; the fields are ``JobQueue.enqueue``'s keyword arguments."""

    job_type: JobType
    runtime: str
    request: dict[str, Any]
    priority: Priority = Priority.NORMAL
    max_attempts: int = 3
    timeout_s: float | None = None
    queue_ttl_s: float | None = None
    idempotency_key: str | None = None
    idempotency_ttl_s: int = 86400
    extra_fields: dict[str, str] | None = None
    job_id: str | None = None  # None: a new random id

    def script_call(self, keys: KeySchema) -> ScriptCall:
        """enqueue.lua's KEYS and ARGV for this submission (a new id if it has none)."""
        job_id = self.job_id or new_job_id()
        fields = {
            "priority": str(self.priority),
            "max_attempts": str(self.max_attempts),
            "timeout_s": "" if self.timeout_s is None else str(self.timeout_s),
            "request": _json(self.request),
            **(self.extra_fields or {}),
        }
        return [keys.job(job_id)], [
            job_id,
            self.runtime,
            str(self.job_type),
            self.priority.rank,
            self.idempotency_key or "",
            self.idempotency_ttl_s,
            round((self.queue_ttl_s or 0) * 1000),
            json.dumps(fields),
        ]


@dataclass(frozen=True)
class FinishItem:
    """One attempt to end; the fields are ``JobQueue.finish``'s arguments."""

    job_id: str
    attempt_id: str
    outcome: Outcome
    result: dict[str, Any] | None = None
    error: str = ""
    error_kind: str = ""
    retry_delay_ms: int = 0
    model: dict[str, Any] | None = None

    def script_args(self) -> list[str | int]:
        """finish.lua's ARGV (finish_batch.lua takes one such group per item)."""
        return [
            self.job_id,
            self.attempt_id,
            self.outcome,
            "" if self.result is None else _json(self.result),
            self.error,
            self.error_kind,
            self.retry_delay_ms,
            self.model["model_id"] if self.model else "",
            _json(self.model) if self.model else "",
        ]
