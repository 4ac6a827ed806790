"""Live workers, as their heartbeats registered them."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, ValidationError

from trainyard.schema import WorkerRecord

from ..deps import QueueDep, SettingsDep
from ..errors import error_responses
from ..service import to_worker

__all__ = ["WorkerList", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["workers"])


class WorkerList(BaseModel):
    workers: list[WorkerRecord]


@router.get(
    "/workers",
    response_model=WorkerList,
    responses=error_responses(503),
    summary="Workers with a recent heartbeat",
)
def list_workers(queue: QueueDep, settings: SettingsDep) -> WorkerList:
    workers: list[WorkerRecord] = []
    for h in queue.live_workers(int(settings.worker_ttl_s * 1000)):
        try:
            workers.append(to_worker(h))
        except (ValidationError, ValueError) as exc:
            log.warning("skipping malformed worker record %r: %s", h.get("id"), exc)
    workers.sort(key=lambda w: (w.runtime, w.worker_id))
    return WorkerList(workers=workers)
