"""Queue depths per runtime, and the routing table."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from trainyard.routing import routing_table

from ..deps import QueueDep, SettingsDep
from ..errors import error_responses

__all__ = ["QueueDepth", "Queues", "router"]

router = APIRouter(tags=["queues"])


class QueueDepth(BaseModel):
    high: int
    normal: int
    low: int
    total: int
    live_workers: int = Field(..., description="workers with a recent heartbeat serving it")


class Queues(BaseModel):
    queues: dict[str, QueueDepth] = Field(..., description="runtime -> queued jobs")
    jobs_by_state: dict[str, int]


@router.get(
    "/queues",
    response_model=Queues,
    responses=error_responses(503),
    summary="Queued jobs per runtime and priority; jobs per state",
)
def get_queues(queue: QueueDep, settings: SettingsDep) -> Queues:
    live = Counter(
        w.get("runtime", "") for w in queue.live_workers(int(settings.worker_ttl_s * 1000))
    )
    depths = {
        runtime: QueueDepth(**counts, live_workers=live.get(runtime, 0))
        for runtime, counts in queue.queue_depths().items()
    }
    return Queues(queues=depths, jobs_by_state=queue.count_by_state())


@router.get("/routing", tags=["routing"], summary="The routing table: runtimes and model types")
def get_routing() -> dict[str, Any]:
    """Which runtime each model type goes to (CPU and GPU), and what each runtime is."""
    table: dict[str, Any] = routing_table()
    return table
