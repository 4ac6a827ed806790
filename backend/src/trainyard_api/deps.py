"""Dependencies, FastAPI-template style: ``Annotated`` aliases routes take as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from trainyard.engine import JobQueue
from trainyard.schema import ID_PATTERN

from .config import Settings
from .errors import ApiError

__all__ = [
    "JobDep",
    "JobIdPath",
    "QueueDep",
    "SettingsDep",
    "get_queue",
    "get_settings",
    "load_job",
]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue | None = getattr(request.app.state, "queue", None)
    if queue is None:  # only when the app runs without its lifespan
        raise ApiError(503, "the API has not started (no Redis connection yet)")
    return queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

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
