"""Jobs: submit (training, inference), read, cancel, list."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from trainyard.engine import JobQueue, Submission
from trainyard.engine_async import AsyncQueue
from trainyard.routing import RUNTIMES
from trainyard.schema import (
    ID_PATTERN,
    InferenceJobRequest,
    JobRecord,
    JobStatus,
    TrainingJobRequest,
)
from trainyard.types import TERMINAL_STATES, JobState, JobType

from ..config import Settings
from ..deps import AsyncQueueDep, JobDep, JobIdPath, QueueDep, SettingsDep
from ..errors import ApiError, error_responses
from ..examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES
from ..service import (
    SubmitChecks,
    absent_not_null,
    enqueue_one,
    inference_submission,
    job_page,
    job_record,
    job_status,
    live_runtimes,
    training_submission,
)

__all__ = ["JobList", "RuntimeQuery", "WaitQuery", "router"]

router = APIRouter(tags=["jobs"])

_TERMINAL = {s.value for s in TERMINAL_STATES}

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


async def _answer(
    queue: JobQueue,
    async_queue: AsyncQueue,
    settings: Settings,
    response: Response,
    check: Callable[[], Submission],
    wait: float,
) -> JobStatus:
    """Check and enqueue a submission and answer with the job's status: at once, or, with
    ``wait`` > 0, when the job ends (200) or after ``wait`` seconds (202, current status).

    The sync work (checks, the enqueue script) runs in the threadpool for the moment it
    takes; the wait itself is on the event loop (``AsyncQueue.wait_for_terminal``), so a
    waiting request holds no thread."""

    def submit() -> tuple[str, bool, dict[str, str] | None, set[str]]:
        job_id, created = enqueue_one(queue, check())
        job = None if wait > 0 else queue.get_job(job_id)
        return job_id, created, job, live_runtimes(queue, settings)

    job_id, created, job, runtimes = await run_in_threadpool(submit)
    # 202: accepted for later; 200: an idempotent replay of a job that already exists.
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/jobs/{job_id}"
    if wait > 0:
        job = await async_queue.wait_for_terminal(job_id, wait)
        if job and job.get("state") in _TERMINAL:
            response.status_code = 200
        elif job:  # still waiting: why, as of now (the live workers may have changed)
            runtimes = await run_in_threadpool(live_runtimes, queue, settings)
    if not job:  # deleted between enqueue and read: not expected, but say so plainly
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    return job_status(job, runtimes)


def _check_wait(wait: float, settings: Settings) -> None:
    if wait > settings.max_wait_s:
        raise ApiError(422, f"wait must be at most {settings.max_wait_s} seconds", field="wait")


# ?wait= on both submit routes; at most MAX_WAIT_S, checked by _check_wait (a setting, so
# not in the schema).
WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        description=(
            "seconds to wait for the job to end; 0 (the default) answers at once; "
            "at most MAX_WAIT_S (300 unless configured)"
        ),
    ),
]

_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(404, 413, 422, 503),
    200: {
        "model": JobStatus,
        "description": "The job ended within ?wait= (its final status, result included), "
        "or an idempotent replay (the job the key already names)",
    },
}


@router.post(
    "/jobs/training",
    status_code=202,
    response_model=JobStatus,
    responses=_SUBMIT_RESPONSES,
    summary="Submit a training job",
)
async def submit_training(
    body: Annotated[TrainingJobRequest, Body(openapi_examples=TRAINING_EXAMPLES)],
    queue: QueueDep,
    async_queue: AsyncQueueDep,
    settings: SettingsDep,
    response: Response,
    wait: WaitQuery = 0,
    idempotency_key: IdempotencyHeader = None,
) -> JobStatus:
    """Route the job to a runtime (see `GET /routing`) and queue it. A job no live worker
    serves is still accepted; its `waiting_reason` says why it waits. With `?wait=N` the
    answer comes when the job ends (200, model_id and result included) or after N seconds
    (202, current status)."""
    _check_wait(wait, settings)
    key = _idempotency_key(body.idempotency_key, idempotency_key)
    checks = SubmitChecks.for_single(queue, settings)
    check = functools.partial(training_submission, body, key, checks)
    return await _answer(queue, async_queue, settings, response, check, wait)


@router.post(
    "/jobs/inference",
    status_code=202,
    response_model=JobStatus,
    responses={**_SUBMIT_RESPONSES, **error_responses(409)},
    summary="Submit an inference job",
)
async def submit_inference(
    body: Annotated[InferenceJobRequest, Body(openapi_examples=INFERENCE_EXAMPLES)],
    queue: QueueDep,
    async_queue: AsyncQueueDep,
    settings: SettingsDep,
    response: Response,
    wait: WaitQuery = 0,
    idempotency_key: IdempotencyHeader = None,
) -> JobStatus:
    """Queue an inference job on a runtime of the framework that trained the model. With
    `?wait=N` the answer comes when the job ends (200, result included) or after N
    seconds (202, current status)."""
    _check_wait(wait, settings)
    key = _idempotency_key(body.idempotency_key, idempotency_key)
    checks = SubmitChecks.for_single(queue, settings)
    check = functools.partial(inference_submission, body, key, checks)
    return await _answer(queue, async_queue, settings, response, check, wait)


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
    job = queue.get_job(job_id)
    if job is None:  # deleted since: not expected, but say so plainly
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    return job_status(job, live_runtimes(queue, settings))
