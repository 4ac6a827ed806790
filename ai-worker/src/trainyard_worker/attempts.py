"""A claimed job as the supervisor runs it, how its run may be stopped, and how it ends."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from trainyard.engine import Claim, Outcome
from trainyard.types import FailureKind

from .wakeups import Wake

__all__ = ["Ending", "JobAttempt", "Verdict", "Work", "verdict_ending"]


class Verdict(enum.Enum):
    """Why the watch stopped a job before its work ended by itself."""

    LOST = "lost"  # the lease is gone: another attempt may own the job now; write nothing
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    HANDBACK = "handback"  # the worker is shutting down: the job goes back to its queue


@dataclass(frozen=True)
class JobAttempt(Claim):
    """One claimed job (the engine's ``Claim``: its record as claimed, ``job_id``,
    ``attempt_id``), and when its run began (for timeout_s)."""

    started: float = field(default_factory=time.monotonic)  # time.monotonic()

    @classmethod
    def of(cls, claim: Claim) -> JobAttempt:
        return cls(job=claim.job)

    @property
    def number(self) -> int:
        return int(self.job["attempt"])

    @property
    def timeout_s(self) -> float | None:
        value = self.job.get("timeout_s")
        return float(value) if value else None

    @property
    def deadline(self) -> float | None:
        """When its run timeout passes (time.monotonic()), if it has one."""
        timeout = self.timeout_s
        return None if timeout is None else self.started + timeout


@dataclass(frozen=True)
class Ending:
    """How one attempt ends: ``JobQueue.finish``'s arguments less the ids (the retry
    delay is the supervisor's, from the attempt number)."""

    outcome: Outcome
    result: dict[str, Any] | None = None
    error: str = ""
    error_kind: str = ""
    model: dict[str, Any] | None = None


def verdict_ending(job: JobAttempt, verdict: Verdict) -> Ending | None:
    """The ending a verdict gives; None for a lost lease (nothing is written) and a
    hand-back (a release, not a finish)."""
    if verdict is Verdict.CANCELLED:
        return Ending("cancelled", error="cancelled by user", error_kind=FailureKind.CANCELLED)
    if verdict is Verdict.TIMEOUT:
        return Ending("failed", error_kind=FailureKind.TIMEOUT,
                      error=f"timed out: ran longer than timeout_s={job.timeout_s:g}")  # fmt: skip
    return None


class Work(Protocol):
    """What the supervisor watches: a training attempt or an inference batch."""

    @property
    def jobs(self) -> list[JobAttempt]: ...

    def ended_by(self, wake: Wake) -> bool:
        """Whether this wake-up says the work ended by itself (a child's exit, the
        batch's reply or the host's end); wake-ups of other, earlier work are not."""
        ...

    def kill(self, grace_s: float) -> None: ...
