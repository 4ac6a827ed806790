"""Dead letters: jobs that used all their attempts (`dead`), listed with their last error,
and redriven: queued again as new jobs that link back to them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainyard.routing import RUNTIMES
from trainyard.schema import JobStatus, integral_float
from trainyard.types import FailureKind, JobState, JobType

from ..deps import JobIdPath, QueueDep, SettingsDep
from ..errors import ApiError, error_responses
from ..service import check_runtime, job_page, job_status, live_runtimes
from .jobs import RuntimeQuery

__all__ = ["DeadLetterList", "RedriveAll", "RedriveAllResult", "router"]

router = APIRouter(tags=["dead letters"])


class DeadLetterList(BaseModel):
    jobs: list[JobStatus] = Field(
        ...,
        description="dead jobs, newest first: each job's status with its last `error`, "
        "`error_kind`, `attempt` of `max_attempts` and, once redriven, `redriven_to`",
    )
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= for the next (older) page; null when there is none"
    )


class RedriveAll(BaseModel):
    """Which dead jobs to redrive; every filter is optional."""

    # A misspelt filter must not widen the redrive to every dead job.
    model_config = ConfigDict(extra="forbid")

    runtime: str | None = Field(
        None,
        description="only jobs of this runtime",
        json_schema_extra={"enum": [*RUNTIMES, None]},
    )
    job_type: JobType | None = None
    error_kind: FailureKind | None = Field(None, description="only jobs whose last error was this")
    limit: int = Field(100, ge=1, le=1000, strict=True, description="redrive at most this many")

    _integral_float = field_validator("limit", mode="before")(integral_float)


class Redriven(BaseModel):
    job_id: str = Field(..., description="the dead job")
    new_job_id: str = Field(..., description="the new job that runs it again")


class RedriveAllResult(BaseModel):
    redriven: list[Redriven]
    more: bool = Field(..., description="true when more dead jobs match (ask again)")


@router.get(
    "/dead-letters",
    response_model=DeadLetterList,
    responses=error_responses(422, 503),
    summary="List dead jobs (out of attempts), newest first",
)
def list_dead_letters(
    queue: QueueDep,
    settings: SettingsDep,
    runtime: RuntimeQuery = None,
    job_type: JobType | None = None,
    redriven: Annotated[
        bool | None, Query(description="true: only redriven ones; false: only those not yet")
    ] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeadLetterList:
    page = job_page(
        queue,
        state=JobState.DEAD.value,
        runtime=runtime,
        job_type=job_type.value if job_type else None,
        cursor=cursor,
        limit=limit,
    )
    jobs = page.jobs
    if redriven is not None:
        # A page may come back short (with a cursor) when this filter drops jobs.
        jobs = [j for j in jobs if bool(j.get("redriven_to")) == redriven]
    runtimes = live_runtimes(queue, settings)
    return DeadLetterList(
        jobs=[job_status(j, runtimes) for j in jobs], next_cursor=page.next_cursor
    )


@router.post(
    "/jobs/{job_id}/redrive",
    status_code=202,
    response_model=JobStatus,
    responses={
        200: {"model": JobStatus, "description": "Already redriven: the job it was redriven to"},
        **error_responses(404, 409, 422, 503),
    },
    summary="Run a dead job again, as a new job",
)
def redrive_job(
    job_id: JobIdPath, queue: QueueDep, settings: SettingsDep, response: Response
) -> JobStatus:
    """Queues the dead job's submission again as a new job (fresh attempts, same request,
    runtime, priority and timeout). The dead job stays `dead` and gets `redriven_to`; the
    new one has `redriven_from`. Asking again returns the same new job (200). Only `dead`
    jobs can be redriven: a failed job failed for a reason a rerun will not fix (bad data,
    a bad hyperparameter); submit it again, corrected."""
    outcome = queue.redrive(job_id, reason="redriven through the API")
    if not outcome.found:
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    if not outcome.redriven or outcome.new_job_id is None:
        raise ApiError(
            409, f"job {job_id!r} is {outcome.state}, not dead: only dead jobs are redriven",
            field="job_id",
        )  # fmt: skip
    response.status_code = 202 if outcome.created else 200
    response.headers["Location"] = f"/jobs/{outcome.new_job_id}"
    new = queue.get_job(outcome.new_job_id)
    if new is None:
        raise ApiError(404, f"no job {outcome.new_job_id!r}", field="job_id")
    return job_status(new, live_runtimes(queue, settings))


@router.post(
    "/dead-letters/redrive",
    response_model=RedriveAllResult,
    responses=error_responses(413, 422, 503),
    summary="Redrive many dead jobs at once",
)
def redrive_dead_letters(queue: QueueDep, body: RedriveAll | None = None) -> RedriveAllResult:
    """Redrives dead jobs not redriven yet, newest first, that match the filters (all of
    them, up to `limit`): after an outage that killed many jobs, one call queues them again."""
    body = body or RedriveAll()
    check_runtime(body.runtime)
    done: list[Redriven] = []
    cursor: str | None = None
    while True:
        page = queue.list_jobs(
            state=JobState.DEAD.value,
            runtime=body.runtime,
            job_type=body.job_type.value if body.job_type else None,
            cursor=cursor,
            limit=200,
        )
        for job in page.jobs:
            if job.get("redriven_to"):
                continue
            if body.error_kind is not None and job.get("error_kind") != body.error_kind.value:
                continue
            if len(done) == body.limit:
                return RedriveAllResult(redriven=done, more=True)
            outcome = queue.redrive(job["id"], reason="redriven through the API (bulk)")
            if outcome.created and outcome.new_job_id:
                done.append(Redriven(job_id=job["id"], new_job_id=outcome.new_job_id))
        if page.next_cursor is None:
            return RedriveAllResult(redriven=done, more=False)
        cursor = page.next_cursor
