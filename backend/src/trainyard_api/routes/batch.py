"""Batch submission: many training and inference jobs in one request, one answer per job.

Each job is checked exactly as its single route checks it (the same request model, then
``training_submission`` / ``inference_submission``); the ones that pass are queued with one
pipelined ``enqueue_many``. A refused job does not refuse the batch: its result carries the
status and error its single submission would have answered, its fields named
``jobs[<index>].<field>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from trainyard.engine import Submission
from trainyard.schema import (
    MAX_BATCH_JOBS,
    BatchJob,
    BatchJobResult,
    BatchSubmitResponse,
    ErrorBody,
    ErrorDetail,
    InferenceJobRequest,
    TrainingJobRequest,
)

from ..deps import QueueDep, SettingsDep
from ..errors import ApiError, error_responses, validation_details
from ..examples import BATCH_EXAMPLES
from ..service import (
    SubmitChecks,
    inference_submission,
    job_status,
    live_runtimes,
    training_submission,
)

__all__ = ["BatchSubmitRequest", "router"]

router = APIRouter(tags=["jobs"])

_REQUESTS: dict[str, type[TrainingJobRequest] | type[InferenceJobRequest]] = {
    "training": TrainingJobRequest,
    "inference": InferenceJobRequest,
}


def _as_sent(value: Any) -> Any:
    return value


# A job as sent: documented as a BatchJob, validated by submit_batch one job at a time so
# that a bad job is refused alone instead of failing the whole batch with one 422.
SentJob = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=BatchJob)]


class BatchSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[SentJob] = Field(
        ...,
        min_length=1,
        max_length=MAX_BATCH_JOBS,
        description=f"1 to {MAX_BATCH_JOBS} jobs, each a training or an inference body with "
        "its `type`",
    )


def _item_error(index: int, exc: ApiError) -> ErrorBody:
    """The error a single submission would answer, its fields named within the batch."""
    where = f"jobs[{index}]"
    details = [
        (where if name in ("", "body") else f"{where}.{name}", reason)
        for name, reason in exc.details
    ]
    message = exc.message
    if exc.status == 422 and details:
        # As the API words a 422: "<field>: <reason>; ...".
        message = "; ".join(f"{name}: {reason}" for name, reason in details)
    return ErrorBody(
        status=exc.status,
        code=exc.code,
        message=message,
        details=[ErrorDetail(field=name, reason=reason) for name, reason in details],
    )


def _submission(sent: Any, checks: SubmitChecks) -> Submission:
    """Validate one job as its single route would, and check and route it; ``ApiError``
    with fields relative to the job."""
    kind = sent.get("type") if isinstance(sent, dict) else None
    request_model = _REQUESTS.get(kind) if isinstance(kind, str) else None
    if request_model is None:
        field = "type" if isinstance(sent, dict) else ""
        reason = "must be 'training' or 'inference'" if field else "must be a job object"
        raise ApiError(422, reason, details=[(field, reason)])
    try:
        body = request_model.model_validate({k: v for k, v in sent.items() if k != "type"})
    except ValidationError as exc:
        details = validation_details(RequestValidationError(exc.errors()))
        raise ApiError(422, "invalid job", details=details) from exc
    if isinstance(body, TrainingJobRequest):
        return training_submission(body, body.idempotency_key, checks)
    return inference_submission(body, body.idempotency_key, checks)


@router.post(
    "/jobs/batch",
    response_model=BatchSubmitResponse,
    responses=error_responses(413, 422, 503),
    summary="Submit many jobs at once",
)
def submit_batch(
    body: Annotated[BatchSubmitRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    queue: QueueDep,
    settings: SettingsDep,
) -> BatchSubmitResponse:
    """Submit 1 to 1000 training and inference jobs in one request. Each job is checked as
    `POST /jobs/training` or `POST /jobs/inference` checks it; the valid ones are queued
    together. The answer is **200** with one result per job, in order: `status_code` 202
    (queued) or 200 (an idempotent replay) with the job's status, or the 4xx and error its
    single submission would have answered, each field named `jobs[<index>].<field>`. Only
    a malformed batch (not an object with `jobs`, or no job, or more than 1000) is a 422."""
    checks = SubmitChecks.for_batch(queue, settings)
    results: dict[int, BatchJobResult] = {}
    pending: list[tuple[int, Submission]] = []
    for index, sent in enumerate(body.jobs):
        try:
            pending.append((index, _submission(sent, checks)))
        except ApiError as exc:
            results[index] = BatchJobResult(
                index=index, status_code=exc.status, error=_item_error(index, exc)
            )
    if pending:
        enqueued = queue.enqueue_many([submission for _, submission in pending])
        jobs = {job["id"]: job for job in queue.get_jobs(job_id for job_id, _ in enqueued)}
        runtimes = live_runtimes(queue, settings)
        for (index, _), (job_id, created) in zip(pending, enqueued, strict=True):
            job = jobs.get(job_id)
            if job is None:  # deleted between enqueue and read: not expected
                missing = ApiError(404, f"no job {job_id!r}", field="job_id")
                results[index] = BatchJobResult(
                    index=index, status_code=404, error=_item_error(index, missing)
                )
                continue
            results[index] = BatchJobResult(
                index=index, status_code=202 if created else 200, job=job_status(job, runtimes)
            )
    return BatchSubmitResponse(results=[results[i] for i in range(len(body.jobs))])
