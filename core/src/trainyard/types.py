"""The protocol's small vocabulary: job states, job types, priorities, failure kinds."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "UNSUCCESSFUL_TERMINAL_STATES",
    "FailureKind",
    "JobState",
    "JobType",
    "Priority",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # waiting for its next attempt (backoff)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # out of attempts


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DEAD}
)
UNSUCCESSFUL_TERMINAL_STATES = TERMINAL_STATES - {JobState.SUCCEEDED}
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.RETRYING})


class JobType(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Lower runs first."""
        return _RANKS[self]


_RANKS = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class FailureKind(StrEnum):
    """Why an attempt ended badly; decides whether it is retried."""

    USER_ERROR = "user_error"  # bad data, hyperparameter or input: never retried
    TIMEOUT = "timeout"  # ran past timeout_s: not retried
    CRASHED = "crashed"  # the job's process died unexpectedly: retried
    KILLED = "killed"  # killed by a signal we did not send (OOM killer): retried
    LOST = "lost"  # the worker vanished; its lease expired: retried by the reaper
    EXPIRED = "expired"  # waited in the queue past queue_ttl_s
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"  # worker-side fault (model store, Redis): retried
    # The API accepted the data_path but the worker that claimed the job cannot see it (a
    # wrong DATA_ROOT, a missing mount): that worker's fault, so retried (on another worker,
    # or this one after a fix); a path that exists nowhere ends dead after max_attempts.
    DATA_UNAVAILABLE = "data_unavailable"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        FailureKind.CRASHED,
        FailureKind.KILLED,
        FailureKind.LOST,
        FailureKind.INFRASTRUCTURE,
        FailureKind.DATA_UNAVAILABLE,
    }
)
