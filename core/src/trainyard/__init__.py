"""Trainyard's shared core: job schema, routing table, Redis queue engine, client, CLI.

Imports neither FastAPI nor any ML framework, so the backend and every worker
environment can depend on it.
"""

from .engine import Claim, Event, JobQueue, backoff_ms, new_job_id
from .keys import KeySchema
from .routing import MODEL_TYPES, RUNTIMES, RouteError, route_training
from .types import TERMINAL_STATES, FailureKind, JobState, JobType, Priority

__all__ = [
    "MODEL_TYPES",
    "RUNTIMES",
    "TERMINAL_STATES",
    "Claim",
    "Event",
    "FailureKind",
    "JobQueue",
    "JobState",
    "JobType",
    "KeySchema",
    "Priority",
    "RouteError",
    "backoff_ms",
    "new_job_id",
    "route_training",
]
