"""Prometheus metrics, in the text exposition format (written by hand: four gauge
families do not need a client library and its global registry)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from redis.exceptions import RedisError

from trainyard.routing import RUNTIMES

from ..deps import QueueDep, SettingsDep
from ..errors import ApiError, error_responses

__all__ = ["CONTENT_TYPE", "router"]

router = APIRouter(tags=["metrics"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(name: str, help_text: str, samples: list[tuple[dict[str, str], int]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        # Label values here are runtime/state/priority names: no quoting needed beyond ".
        rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
    return lines


@router.get(
    "/metrics",
    # No response_class: it would give the error responses its media type in OpenAPI.
    response_model=None,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        **error_responses(503),
    },
    summary="Prometheus metrics",
)
def metrics(queue: QueueDep, settings: SettingsDep) -> PlainTextResponse:
    try:
        depths = queue.queue_depths()
        running = queue.running_by_runtime()
        states = queue.count_by_state()
        live = Counter(
            w.get("runtime", "") for w in queue.live_workers(int(settings.worker_ttl_s * 1000))
        )
    except RedisError as exc:
        raise ApiError(503, f"redis: {exc}", field="redis") from exc
    depth_samples = [
        ({"runtime": rt, "priority": p}, counts[p])
        for rt, counts in depths.items()
        for p in ("high", "normal", "low")
    ]
    lines = [
        *_family(
            "trainyard_queue_depth", "Jobs waiting in a runtime's ready queue.", depth_samples
        ),
        *_family(
            "trainyard_running_jobs",
            "Jobs a worker of the runtime is running now (scale-in must not drop these).",
            [({"runtime": rt}, n) for rt, n in running.items()],
        ),
        *_family(
            "trainyard_jobs",
            "Jobs by state (all jobs Redis still holds).",
            [({"state": s}, n) for s, n in states.items()],
        ),
        *_family(
            "trainyard_live_workers",
            "Workers with a recent heartbeat, by runtime.",
            [({"runtime": rt}, live.get(rt, 0)) for rt in RUNTIMES],
        ),
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type=CONTENT_TYPE)
