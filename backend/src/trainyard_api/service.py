"""What several routes share: checking and routing a submitted job (one function per job
type, for the single routes and the batch alike), building job statuses (with why a job
waits) and waiting for a job to finish. Everything here is sync: the engine is sync
redis-py, and FastAPI runs ``def`` routes in its threadpool."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from trainyard.datapaths import DataPathError, resolve_data_path
from trainyard.engine import JobPage, JobQueue, Submission
from trainyard.routing import RUNTIMES, RouteError, check_base_model, route_training
from trainyard.schema import (
    GpuRecord,
    InferenceJobRequest,
    JobRecord,
    JobStatus,
    ModelRecord,
    TrainingJobRequest,
    WorkerRecord,
    job_from_hash,
    ms_to_datetime,
    status_from_hash,
)
from trainyard.types import TERMINAL_STATES, JobState, JobType

from .config import Settings
from .errors import ApiError

__all__ = [
    "ModelLookup",
    "SubmitChecks",
    "absent_not_null",
    "enqueue_one",
    "inference_submission",
    "job_record",
    "job_status",
    "live_runtimes",
    "to_model",
    "to_worker",
    "training_submission",
]

ModelLookup = Callable[[str], dict[str, Any] | None]

_WAITING_STATES = {JobState.QUEUED.value, JobState.RETRYING.value}
_TERMINAL = {s.value for s in TERMINAL_STATES}


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
    return status_from_hash(job, _waiting_reason(job, runtimes))


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


def _data_path_error(settings: Settings, data_path: str) -> str | None:
    # Existence is checked only where this process sees the data root: a folder it can
    # list and enter. Elsewhere (API and workers on different machines, a root this user
    # may not read) only the path's shape is checked, so the API never calls a path
    # missing that it cannot look for; the worker checks existence against its own root.
    root = settings.data_root
    try:
        visible = root.is_dir() and os.access(root, os.R_OK | os.X_OK)
    except OSError:  # e.g. a parent folder this user may not enter
        visible = False
    try:
        resolve_data_path(root, data_path, must_exist=visible)
    except DataPathError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class SubmitChecks:
    """What checking a submission reads besides its body: the settings, the model registry
    and the data root. A batch reads each model and data path once (``for_batch``)."""

    settings: Settings
    get_model: ModelLookup
    data_path_error: Callable[[str], str | None]  # why a data_path is refused, or None

    @classmethod
    def for_single(cls, queue: JobQueue, settings: Settings) -> SubmitChecks:
        return cls(settings, queue.get_model, functools.partial(_data_path_error, settings))

    @classmethod
    def for_batch(cls, queue: JobQueue, settings: Settings) -> SubmitChecks:
        # Many jobs of a batch name the same model and data; the answers cannot change in
        # a way that matters within one request.
        return cls(
            settings,
            functools.cache(queue.get_model),
            functools.cache(functools.partial(_data_path_error, settings)),
        )


def training_submission(
    body: TrainingJobRequest, idempotency_key: str | None, checks: SubmitChecks
) -> Submission:
    """Check and route a training job; what to enqueue. ``ApiError`` names the body field
    at fault (404 ``base_model_id``; 422 routing, base model or ``data_path``)."""
    settings = checks.settings
    base = None
    if body.base_model_id is not None:
        base = checks.get_model(body.base_model_id)
        if base is None:
            raise ApiError(404, f"no model {body.base_model_id!r}", field="base_model_id")
    try:
        runtime = route_training(
            body.model_type,
            body.requires_gpu,
            body.framework_override,
            str(base["runtime"]) if base else None,
        )
        if base is not None:
            check_base_model(body.model_type, runtime, base)
    except RouteError as exc:
        raise ApiError(422, exc.message, field=exc.field) from exc
    refused = checks.data_path_error(body.data_path)
    if refused is not None:
        raise ApiError(422, refused, field="data_path")
    return Submission(
        job_type=JobType.TRAINING,
        runtime=runtime,
        request=body.model_dump(mode="json"),
        priority=body.priority,
        max_attempts=body.max_attempts or settings.default_training_max_attempts,
        timeout_s=body.timeout_s or settings.default_training_timeout_s,
        queue_ttl_s=body.queue_ttl_s,
        idempotency_key=idempotency_key,
    )


def inference_submission(
    body: InferenceJobRequest, idempotency_key: str | None, checks: SubmitChecks
) -> Submission:
    """Check an inference job (its model exists and names a known runtime, where it runs);
    what to enqueue. ``ApiError``: 404 or 409, field ``model_id``."""
    settings = checks.settings
    model = checks.get_model(body.model_id)
    if model is None:
        raise ApiError(404, f"no model {body.model_id!r}", field="model_id")
    runtime = str(model.get("runtime", ""))
    if runtime not in RUNTIMES:
        raise ApiError(
            409, f"model {body.model_id!r} names an unknown runtime {runtime!r}", field="model_id"
        )
    return Submission(
        job_type=JobType.INFERENCE,
        runtime=runtime,
        request=body.model_dump(mode="json"),
        priority=body.priority,
        max_attempts=body.max_attempts or settings.default_inference_max_attempts,
        timeout_s=body.timeout_s or settings.default_inference_timeout_s,
        queue_ttl_s=body.queue_ttl_s,
        idempotency_key=idempotency_key,
        extra_fields={"model_id": body.model_id},
    )


def enqueue_one(queue: JobQueue, submission: Submission) -> tuple[str, bool]:
    """A single submission: one script call (``enqueue_many`` is for batches)."""
    return queue.enqueue(**{f.name: getattr(submission, f.name) for f in fields(submission)})


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
        # Written by a worker that took itself out of service (trainyard_worker.data_guard);
        # "" once it is back.
        state_reason=h.get("state_reason") or None,
        current_job=h.get("current_job") or None,
        loaded_models=[str(m) for m in loaded] if isinstance(loaded, list) else [],
        packages=packages,
        gpus=gpus,
        started_at=ms_to_datetime(h.get("started_at")),
        last_seen=ms_to_datetime(h.get("last_seen")),
    )
