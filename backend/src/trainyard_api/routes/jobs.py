"""Jobs: submit (training, inference), read, cancel, list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel, Field

from trainyard.datapaths import DataPathError, resolve_data_path
from trainyard.engine import JobQueue
from trainyard.routing import RUNTIMES, RouteError, check_base_model, route_training
from trainyard.schema import (
    ID_PATTERN,
    InferenceJobRequest,
    JobRecord,
    JobStatus,
    TrainingJobRequest,
)
from trainyard.types import TERMINAL_STATES, JobState, JobType

from ..config import Settings
from ..deps import JobDep, JobIdPath, QueueDep, SettingsDep
from ..errors import ApiError, error_responses
from ..examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES
from ..service import (
    absent_not_null,
    job_page,
    job_record,
    job_status,
    live_runtimes,
    wait_for_terminal,
)

__all__ = ["JobList", "RuntimeQuery", "router"]

router = APIRouter(tags=["jobs"])

IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=ID_PATTERN,
        description="submitting again with the same key returns the same job (200)",
        json_schema_extra=absent_not_null,
    ),
]

# Any other runtime is refused (422): the schema says which ones there are, while the route
# keeps its own check for a message naming them.
RuntimeQuery = Annotated[
    str | None,
    Query(
        description="a runtime name (see GET /routing)",
        json_schema_extra={"enum": list(RUNTIMES)},
    ),
]


class JobList(BaseModel):
    jobs: list[JobStatus]
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= for the next (older) page; null when there is none"
    )


def _idempotency_key(body_key: str | None, header_key: str | None) -> str | None:
    if body_key and header_key and body_key != header_key:
        raise ApiError(
            422,
            "idempotency_key in the body and the Idempotency-Key header differ",
            field="idempotency_key",
        )
    return body_key or header_key


def _submit(
    queue: JobQueue,
    settings: Settings,
    response: Response,
    *,
    job_type: JobType,
    runtime: str,
    body: TrainingJobRequest | InferenceJobRequest,
    idempotency_key: str | None,
    max_attempts: int,
    timeout_s: float,
    extra_fields: dict[str, str] | None = None,
) -> tuple[str, bool]:
    job_id, created = queue.enqueue(
        job_type=job_type,
        runtime=runtime,
        request=body.model_dump(mode="json"),
        priority=body.priority,
        max_attempts=body.max_attempts or max_attempts,
        timeout_s=body.timeout_s or timeout_s,
        queue_ttl_s=body.queue_ttl_s,
        idempotency_key=idempotency_key,
        extra_fields=extra_fields,
    )
    # 202: accepted for later; 200: an idempotent replay of a job that already exists.
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/jobs/{job_id}"
    return job_id, created


def _status_of(queue: JobQueue, settings: Settings, job_id: str) -> JobStatus:
    job = queue.get_job(job_id)
    if job is None:  # deleted between enqueue and read: not expected, but say so plainly
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    return job_status(job, live_runtimes(queue, settings))


_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": JobStatus, "description": "Idempotent replay: the job the key already names"},
    **error_responses(404, 413, 422, 503),
}


@router.post(
    "/jobs/training",
    status_code=202,
    response_model=JobStatus,
    responses=_SUBMIT_RESPONSES,
    summary="Submit a training job",
)
def submit_training(
    body: Annotated[TrainingJobRequest, Body(openapi_examples=TRAINING_EXAMPLES)],
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> JobStatus:
    """Route the job to a runtime (see `GET /routing`) and queue it. A job no live worker
    serves is still accepted; its `waiting_reason` says why it waits."""
    base = None
    if body.base_model_id is not None:
        base = queue.get_model(body.base_model_id)
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
    # Without a local data root (API and workers on different machines) only the path's
    # shape is checked here; the worker checks existence against its own root.
    try:
        resolve_data_path(
            settings.data_root, body.data_path, must_exist=settings.data_root.is_dir()
        )
    except DataPathError as exc:
        raise ApiError(422, str(exc), field="data_path") from exc
    job_id, _ = _submit(
        queue,
        settings,
        response,
        job_type=JobType.TRAINING,
        runtime=runtime,
        body=body,
        idempotency_key=_idempotency_key(body.idempotency_key, idempotency_key),
        max_attempts=settings.default_training_max_attempts,
        timeout_s=settings.default_training_timeout_s,
    )
    return _status_of(queue, settings, job_id)


@router.post(
    "/jobs/inference",
    status_code=202,
    response_model=JobStatus,
    responses={
        **_SUBMIT_RESPONSES,
        200: {
            "model": JobStatus,
            "description": "The job finished within ?wait= (result included), or an "
            "idempotent replay",
        },
    },
    summary="Submit an inference job",
)
def submit_inference(
    body: Annotated[InferenceJobRequest, Body(openapi_examples=INFERENCE_EXAMPLES)],
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description=(
                "seconds to wait for the result; 0 (the default) answers at once; "
                "at most MAX_WAIT_S (300 unless configured)"
            ),
        ),
    ] = 0,
    idempotency_key: IdempotencyHeader = None,
) -> JobStatus:
    """Queue an inference job on a runtime of the framework that trained the model. With
    `?wait=N` the answer comes when the job ends (200, result included) or after N
    seconds (202, current status)."""
    if wait > settings.max_wait_s:
        raise ApiError(422, f"wait must be at most {settings.max_wait_s} seconds", field="wait")
    model = queue.get_model(body.model_id)
    if model is None:
        raise ApiError(404, f"no model {body.model_id!r}", field="model_id")
    runtime = str(model.get("runtime", ""))
    if runtime not in RUNTIMES:
        raise ApiError(
            409, f"model {body.model_id!r} names an unknown runtime {runtime!r}", field="model_id"
        )
    job_id, _ = _submit(
        queue,
        settings,
        response,
        job_type=JobType.INFERENCE,
        runtime=runtime,
        body=body,
        idempotency_key=_idempotency_key(body.idempotency_key, idempotency_key),
        max_attempts=settings.default_inference_max_attempts,
        timeout_s=settings.default_inference_timeout_s,
        extra_fields={"model_id": body.model_id},
    )
    if wait > 0:
        job = wait_for_terminal(queue, job_id, wait, settings.sse_keepalive_s)
        if job.get("state") in {s.value for s in TERMINAL_STATES}:
            response.status_code = 200
        return job_status(job, live_runtimes(queue, settings))
    return _status_of(queue, settings, job_id)


@router.get(
    "/jobs",
    response_model=JobList,
    responses=error_responses(422, 503),
    summary="List jobs, newest first",
)
def list_jobs(
    queue: QueueDep,
    settings: SettingsDep,
    state: JobState | None = None,
    job_type: JobType | None = None,
    runtime: RuntimeQuery = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    page = job_page(
        queue,
        state=state.value if state else None,
        runtime=runtime,
        job_type=job_type.value if job_type else None,
        cursor=cursor,
        limit=limit,
    )
    runtimes = live_runtimes(queue, settings)
    return JobList(jobs=[job_status(j, runtimes) for j in page.jobs], next_cursor=page.next_cursor)


@router.get(
    "/jobs/{job_id}/status",
    response_model=JobStatus,
    responses=error_responses(404, 422, 503),
    summary="A job's status",
)
def get_status(job: JobDep, queue: QueueDep, settings: SettingsDep) -> JobStatus:
    return job_status(job, live_runtimes(queue, settings))


@router.get(
    "/jobs/{job_id}",
    response_model=JobRecord,
    responses=error_responses(404, 422, 503),
    summary="A job's full record",
)
def get_job(job: JobDep, queue: QueueDep, settings: SettingsDep) -> JobRecord:
    return job_record(job, live_runtimes(queue, settings))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobStatus,
    responses=error_responses(404, 409, 422, 503),
    summary="Cancel a job",
)
def cancel_job(job_id: JobIdPath, queue: QueueDep, settings: SettingsDep) -> JobStatus:
    """A queued or retrying job is cancelled at once. A running job is flagged
    (`cancel_requested`); its worker stops it within a lease renewal."""
    outcome = queue.cancel(job_id)
    if not outcome.found:
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    if not outcome.changed:
        raise ApiError(409, f"job {job_id!r} already ended: it is {outcome.state}", field="job_id")
    return _status_of(queue, settings, job_id)
