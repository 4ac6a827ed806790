"""What several routes share: building job statuses (with why a job waits) and waiting
for a job to finish. Everything here is sync: the engine is sync redis-py, and FastAPI
runs ``def`` routes in its threadpool."""

from __future__ import annotations

import json
import time
from typing import Any

from trainyard.engine import JobPage, JobQueue
from trainyard.routing import RUNTIMES
from trainyard.schema import (
    GpuRecord,
    JobRecord,
    JobStatus,
    ModelRecord,
    WorkerRecord,
    job_from_hash,
    ms_to_datetime,
)
from trainyard.types import TERMINAL_STATES, JobState

from .config import Settings
from .errors import ApiError

__all__ = [
    "absent_not_null",
    "job_record",
    "job_status",
    "live_runtimes",
    "to_model",
    "to_worker",
    "wait_for_terminal",
]

_WAITING_STATES = {JobState.QUEUED.value, JobState.RETRYING.value}
_TERMINAL = {s.value for s in TERMINAL_STATES}
_STATUS_FIELDS = set(JobStatus.model_fields)


def absent_not_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` for an optional header: document the value's own schema only.

    FastAPI documents ``str | None`` as "a string or null", but a header is sent or not:
    there is no null header, and a client that believes the schema sends the text "null"."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        del schema["anyOf"]
        schema.update(branches[0])


def live_runtimes(queue: JobQueue, settings: Settings) -> set[str]:
    workers = queue.live_workers(int(settings.worker_ttl_s * 1000))
    return {w.get("runtime", "") for w in workers}


def _waiting_reason(job: dict[str, str], runtimes: set[str]) -> str | None:
    if job.get("state") in _WAITING_STATES and job.get("runtime") not in runtimes:
        return f"no live worker serves runtime {job.get('runtime')}"
    return None


def job_record(job: dict[str, str], runtimes: set[str]) -> JobRecord:
    return job_from_hash(job, _waiting_reason(job, runtimes))


def job_status(job: dict[str, str], runtimes: set[str]) -> JobStatus:
    record = job_record(job, runtimes)
    return JobStatus.model_validate(record.model_dump(include=_STATUS_FIELDS))


def check_runtime(runtime: str | None) -> None:
    """A runtime filter must name a runtime (an unknown one would match nothing, silently)."""
    if runtime is not None and runtime not in RUNTIMES:
        known = ", ".join(RUNTIMES)
        raise ApiError(422, f"unknown runtime {runtime!r}; known: {known}", field="runtime")


def job_page(
    queue: JobQueue,
    *,
    state: str | None,
    runtime: str | None,
    job_type: str | None,
    cursor: str | None,
    limit: int,
) -> JobPage:
    """One page of a job listing (``GET /jobs``, ``GET /dead-letters``), filters checked."""
    check_runtime(runtime)
    return queue.list_jobs(
        state=state, runtime=runtime, job_type=job_type, cursor=cursor, limit=limit
    )


def wait_for_terminal(
    queue: JobQueue, job_id: str, timeout_s: float, chunk_s: float
) -> dict[str, str]:
    """Block until the job is terminal or ``timeout_s`` passed; return its hash then.

    Reads the job's event stream from its start, so a state change between the first
    look and the first read cannot be missed. Blocks in chunks of ``chunk_s`` (below the
    Redis socket timeout)."""
    deadline = time.monotonic() + timeout_s
    job = queue.get_job(job_id) or {}
    last = "0"
    while job.get("state") not in _TERMINAL:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # block_ms=0 would mean "forever" to XREAD: keep it at least 1 ms.
        events = queue.events(
            job_id, after=last, block_ms=max(1, int(min(remaining, chunk_s) * 1000))
        )
        if events:
            last = events[-1].id
            if any(e.kind == "state" for e in events):
                job = queue.get_job(job_id) or job
    return job


def to_model(raw: dict[str, Any]) -> ModelRecord:
    return ModelRecord.model_validate(raw)


def to_worker(h: dict[str, str]) -> WorkerRecord:
    """A worker's heartbeat hash (all strings) as the API's record."""
    try:
        loaded = json.loads(h.get("loaded_models") or "[]")
    except ValueError:
        loaded = []
    try:
        gpus = [GpuRecord.model_validate(g) for g in json.loads(h.get("gpus") or "[]")]
    except (ValueError, TypeError):
        gpus = []
    try:
        packages = {str(k): str(v) for k, v in json.loads(h.get("packages") or "{}").items()}
    except (ValueError, AttributeError):
        packages = {}
    return WorkerRecord(
        worker_id=h.get("id", ""),
        runtime=h.get("runtime", ""),
        framework=h.get("framework", ""),
        framework_version=h.get("framework_version", ""),
        device=h.get("device", ""),
        host=h.get("host", ""),
        pid=int(h.get("pid") or 0),
        state=h.get("state", "idle"),
        current_job=h.get("current_job") or None,
        loaded_models=[str(m) for m in loaded] if isinstance(loaded, list) else [],
        packages=packages,
        gpus=gpus,
        started_at=ms_to_datetime(h.get("started_at")),
        last_seen=ms_to_datetime(h.get("last_seen")),
    )
