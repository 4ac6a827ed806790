"""Dependencies, FastAPI-template style: ``Annotated`` aliases routes take as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from trainyard.engine import JobQueue
from trainyard.engine_async import AsyncQueue
from trainyard.schema import ID_PATTERN

from .config import Settings
from .errors import ApiError

__all__ = [
    "AsyncJobDep",
    "AsyncQueueDep",
    "JobDep",
    "JobIdPath",
    "QueueDep",
    "SettingsDep",
    "get_async_queue",
    "get_queue",
    "get_settings",
    "load_job",
    "load_job_async",
]


# The getters are async: a plain attribute read needs no threadpool hop (FastAPI runs
# ``def`` dependencies there), so a streaming route starts even while every thread is busy.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue | None = getattr(request.app.state, "queue", None)
    if queue is None:  # only when the app runs without its lifespan
        raise ApiError(503, "the API has not started (no Redis connection yet)")
    return queue


async def get_async_queue(request: Request) -> AsyncQueue:
    queue: AsyncQueue | None = getattr(request.app.state, "async_queue", None)
    if queue is None:
        raise ApiError(503, "the API has not started (no Redis connection yet)")
    return queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
# The asyncio client and the process's shared stream reader: for routes that wait.
AsyncQueueDep = Annotated[AsyncQueue, Depends(get_async_queue)]

# Ids become parts of Redis keys: a malformed one is refused before Redis is touched.
JobIdPath = Annotated[
    str, Path(pattern=ID_PATTERN, description="the job id returned on submission")
]


def load_job(job_id: JobIdPath, queue: QueueDep) -> dict[str, str]:
    job: dict[str, str] | None = queue.get_job(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    return job


JobDep = Annotated[dict[str, str], Depends(load_job)]


async def load_job_async(job_id: JobIdPath, queue: AsyncQueueDep) -> dict[str, str]:
    """``load_job`` without a thread: for the streaming routes."""
    job = await queue.get_job(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", field="job_id")
    return job


AsyncJobDep = Annotated[dict[str, str], Depends(load_job_async)]
