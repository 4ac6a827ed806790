"""The global activity stream (Server-Sent Events): every job's state changes, progress
and workers coming and going, as the Lua scripts write them to ``<ns>:activity``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from trainyard.engine_async import AsyncQueue

from ..deps import AsyncQueueDep, SettingsDep
from ..errors import error_responses
from ..service import absent_not_null
from .events import SSE_HEADERS, STREAM_ID, sse

__all__ = ["ACTIVITY_KINDS", "ACTIVITY_SCHEMA", "router"]

router = APIRouter(tags=["jobs"])

ACTIVITY_KINDS = ("state", "progress", "worker")
_KIND = "|".join(ACTIVITY_KINDS)

ACTIVITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+-[0-9]+$", "description": "resume point"},
        "event": {"type": "string", "enum": list(ACTIVITY_KINDS), "description": "the kind"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
            "description": "state: {job_id, state, runtime, job_type}; progress: {job_id, "
            "epoch, epochs, step, steps, fraction}; worker: {worker_id, runtime, event: "
            "up|down|lost}",
        },
        "retry": {"type": "integer", "minimum": 0, "description": "reconnect delay, ms"},
    },
    "additionalProperties": False,
}


def _kinds(raw: str | None) -> frozenset[str] | None:
    # The query's pattern admits only known kinds: a request the schema calls valid is
    # never refused here (the fuzz suite checks exactly that).
    return None if raw is None else frozenset(raw.split(","))


async def _follow(
    queue: AsyncQueue, after: str, kinds: frozenset[str] | None, keepalive_s: float
) -> AsyncIterator[str]:
    """Follow the activity stream after ``after`` for as long as the client listens.

    Skipped kinds are not sent; resuming from the last id sent reads them again and skips
    them again, so nothing wanted is lost."""
    yield "retry: 2000\n\n"
    follower = queue.hub.follow(queue.keys.activity, after)
    wrote = time.monotonic()
    try:
        while True:
            events = await queue.hub.read(follower, keepalive_s)
            for event in events:
                if kinds is None or event.kind in kinds:
                    wrote = time.monotonic()
                    yield sse(event)
            # Quiet (or only skipped kinds) for a keepalive interval: say so to proxies.
            if not events or time.monotonic() - wrote >= keepalive_s:
                wrote = time.monotonic()
                yield ": keepalive\n\n"
    finally:
        queue.hub.unfollow(follower)


@router.get(
    "/events",
    response_model=None,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": ACTIVITY_SCHEMA}},
            "description": "`id:`/`event:`/`data:` records (kinds: state, progress, worker); "
            "never ends by itself",
        },
        **error_responses(422, 503),
    },
    summary="Follow everything that happens (Server-Sent Events)",
)
async def activity_events(
    queue: AsyncQueueDep,
    settings: SettingsDep,
    after: Annotated[
        str | None,
        Query(pattern=STREAM_ID, description="resume after this id; default: only new entries"),
    ] = None,
    kinds: Annotated[
        str | None,
        Query(
            pattern=rf"^({_KIND})(,({_KIND})){{0,9}}$",
            description="comma-separated kinds to send (state, progress, worker); default: all",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=STREAM_ID, json_schema_extra=absent_not_null),
    ] = None,
) -> StreamingResponse:
    """Every job's state changes (`state`), training progress (`progress`, without metric
    values: follow `GET /jobs/{job_id}/events` for those) and workers coming up, going
    down or being declared lost (`worker`). Starts with what happens from now on, or
    after `?after=` / `Last-Event-ID`; keepalive comments while idle. The stream keeps the
    last ~10,000 entries: a resume point older than that continues from the oldest kept."""
    wanted = _kinds(kinds)
    start = last_event_id or after or await queue.last_id(queue.keys.activity)
    return StreamingResponse(
        _follow(queue, start, wanted, settings.sse_keepalive_s),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
