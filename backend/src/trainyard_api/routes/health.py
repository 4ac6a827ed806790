"""Liveness and readiness in one: the API answers and Redis answers."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError

from ..deps import QueueDep, SettingsDep
from ..errors import ApiError, error_responses

__all__ = ["Health", "router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = "ok"
    redis: str = "ok"
    workers: int


@router.get(
    "/health",
    response_model=Health,
    responses=error_responses(503),
    summary="Health check (Redis PING, live workers)",
)
def health(queue: QueueDep, settings: SettingsDep) -> Health:
    try:
        queue.redis.ping()
        workers = len(queue.live_workers(int(settings.worker_ttl_s * 1000)))
    except RedisError as exc:
        raise ApiError(503, f"redis: {exc}", field="redis") from exc
    return Health(workers=workers)
