"""A job's event stream (Server-Sent Events) and its log lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from trainyard.engine import Event
from trainyard.engine_async import AsyncQueue
from trainyard.types import TERMINAL_STATES

from ..deps import AsyncJobDep, AsyncQueueDep, JobDep, QueueDep, SettingsDep
from ..errors import error_responses
from ..service import absent_not_null

__all__ = ["EVENT_SCHEMA", "SSE_HEADERS", "STREAM_ID", "LogLine", "Logs", "router", "sse"]

router = APIRouter(tags=["jobs"])

# Both parts of a stream id are unsigned 64-bit numbers to Redis. 19 digits always fit; a
# 20th could overflow, and Redis would refuse the id only once the stream had started.
STREAM_ID = r"^(0|[0-9]{1,19}-[0-9]{1,19})$"

# In OpenAPI 3.1 the `schema` of `text/event-stream` describes ONE event, as its fields (a
# plain "string" here would say every event is a string, which no event is). The stream
# opens with a record that only sets `retry`; every other one has `id`, `event`, `data`.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+-[0-9]+$", "description": "resume point"},
        "event": {
            "type": "string",
            "description": "the kind: state, progress, log, cancel_requested, redriven",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
            "description": "the event as a JSON object (a state event has `state`)",
        },
        "retry": {"type": "integer", "minimum": 0, "description": "reconnect delay, ms"},
    },
    "additionalProperties": False,
}
_TERMINAL = {s.value for s in TERMINAL_STATES}


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: Event) -> str:
    """One SSE record: ``id``, ``event`` (the kind), ``data`` (compact JSON)."""
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


def _is_end(event: Event) -> bool:
    return event.kind == "state" and event.data.get("state") in _TERMINAL


async def _stream(
    queue: AsyncQueue, job_id: str, after: str, keepalive_s: float
) -> AsyncIterator[str]:
    """Replay what is stored after ``after``, then follow live until the job ends.

    An async generator on the process's shared stream reader (``StreamHub``): an open
    stream holds no thread and no Redis connection while it waits. An idle wait of
    ``keepalive_s`` sends a comment so proxies keep the connection open; the first one
    re-checks the job so a stream resumed after the final event still ends."""
    yield "retry: 2000\n\n"
    follower = queue.hub.follow(queue.keys.events(job_id), after)
    idle = 0
    try:
        while True:
            events = await queue.hub.read(follower, keepalive_s)
            for event in events:
                yield sse(event)
                if _is_end(event):
                    return
            if not events:
                idle += 1
                # The final event comes through the hub; the look at the job is for a
                # stream resumed past it (or a job deleted meanwhile): at the first idle
                # wait, then every twelfth, so 1,000 quiet streams cost no read storm.
                job = await queue.get_job(job_id) if idle % 12 == 1 else {}
                if job is None or job.get("state") in _TERMINAL:
                    # Drain anything written between the read and the look, then stop.
                    for event in await queue.events(job_id, after=follower.last, count=10_000):
                        yield sse(event)
                    return
                yield ": keepalive\n\n"
    finally:
        queue.hub.unfollow(follower)


@router.get(
    "/jobs/{job_id}/events",
    # No response_class: it would give the error responses its media type in OpenAPI.
    response_model=None,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "`id:`/`event:`/`data:` records (kinds: state, progress, log, "
            "cancel_requested); the stream ends after the job's final state",
        },
        **error_responses(404, 422, 503),
    },
    summary="Follow a job's events (Server-Sent Events)",
)
async def job_events(
    job: AsyncJobDep,
    queue: AsyncQueueDep,
    settings: SettingsDep,
    after: Annotated[
        str | None, Query(pattern=STREAM_ID, description="resume after this event id")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=STREAM_ID, json_schema_extra=absent_not_null),
    ] = None,
) -> StreamingResponse:
    start = last_event_id or after or "0"
    return StreamingResponse(
        _stream(queue, job["id"], start, settings.sse_keepalive_s),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


class LogLine(BaseModel):
    model_config = ConfigDict(extra="allow")  # whatever else the worker attached

    id: str
    stream: str = "stdout"
    line: str = ""
    time: datetime


class Logs(BaseModel):
    job_id: str
    lines: list[LogLine]
    next_after: str | None = None


def _time_of(stream_id: str) -> datetime:
    # A stream id starts with the server's time in ms when the entry was added.
    return datetime.fromtimestamp(int(stream_id.split("-", 1)[0]) / 1000, tz=UTC)


@router.get(
    "/jobs/{job_id}/logs",
    response_model=Logs,
    responses=error_responses(404, 422, 503),
    summary="A job's log lines",
)
def job_logs(
    job: JobDep,
    queue: QueueDep,
    after: Annotated[str, Query(pattern=STREAM_ID, description="lines after this id")] = "0",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Logs:
    lines: list[LogLine] = []
    last = after
    while len(lines) < limit:
        batch = queue.events(job["id"], after=last, count=1000)
        if not batch:
            break
        for event in batch:
            last = event.id
            if event.kind != "log":
                continue
            data = {"time": _time_of(event.id), **event.data, "id": event.id}
            lines.append(LogLine.model_validate(data))
            if len(lines) == limit:
                break
    return Logs(job_id=job["id"], lines=lines, next_after=lines[-1].id if lines else None)
