"""``GET /events``: the global activity stream, over real HTTP (uvicorn: the stream never
ends by itself, which the in-process test client cannot read) and a real Valkey."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi.testclient import TestClient
from redis import Redis
from test_async_streams import BODY, Sse, open_sse

from conftest import LiveApi, assert_error, heartbeat
from trainyard.engine import JobQueue
from trainyard_api.config import Settings


async def _states_of(sse: Sse, job_id: str, until: str) -> list[dict[str, Any]]:
    """The stream's state records of ``job_id`` up to its state ``until``."""
    seen = []
    while True:
        record = await sse.next()
        assert record is not None, "the activity stream ended"
        if record["event"] == "state" and record["data"]["job_id"] == job_id:
            seen.append(record)
            if record["data"]["state"] == until:
                return seen


async def _lifecycle(url: str, queue: JobQueue) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        before = (await client.post("/jobs/training", json=BODY)).json()["job_id"]
        sse = await open_sse(client, "/events")  # from now on: `before` is not replayed
        job_id = (await client.post("/jobs/training", json=BODY)).json()["job_id"]
        claim = queue.claim("w-act", ["sklearn"], lease_ms=60_000)
        assert claim is not None and claim.job_id == before
        assert queue.finish(before, claim.attempt_id, "succeeded", result={}).applied
        claim = queue.claim("w-act", ["sklearn"], lease_ms=60_000)
        assert claim is not None and claim.job_id == job_id
        queue.report(job_id, claim.attempt_id, "progress", {"epoch": 1, "epochs": 2})
        assert queue.finish(job_id, claim.attempt_id, "succeeded", result={}).applied

        first = await sse.next()
        assert first is not None and first["event"] == "state"
        assert first["data"] == {
            "job_id": job_id,
            "state": "queued",
            "runtime": "sklearn",
            "job_type": "training",
        }
        records: list[dict[str, Any]] = [first]
        while records[-1]["data"] != {**first["data"], "state": "succeeded"}:
            record = await sse.next()
            assert record is not None
            records.append(record)
        mine = [r for r in records if r["data"].get("job_id") == job_id]
        assert [(r["event"], r["data"].get("state")) for r in mine] == [
            ("state", "queued"),
            ("state", "running"),
            ("progress", None),
            ("state", "succeeded"),
        ]
        assert mine[2]["data"]["epoch"] == 1 and "metrics" not in mine[2]["data"]
        running = mine[1]["id"]
        await sse.response.aclose()

        # Resume after the running entry (header or query): the rest, in order.
        for headers, path in (
            ({"Last-Event-ID": running}, "/events"),
            ({}, f"/events?after={running}"),
        ):
            resumed = await open_sse(client, path, headers)
            rest = [r["id"] for r in records if _after(r["id"], running)]
            got = [(await resumed.next())["id"] for _ in rest]  # type: ignore[index]
            assert got == rest
            await resumed.response.aclose()

        # Only the kinds asked for.
        only_state = await open_sse(client, f"/events?after={first['id']}&kinds=state")
        assert [(await only_state.next())["event"] for _ in range(3)] == ["state"] * 3  # type: ignore[index]
        await only_state.response.aclose()


def _after(a: str, b: str) -> bool:
    return tuple(map(int, a.split("-"))) > tuple(map(int, b.split("-")))


def test_state_and_progress_entries_follow_the_engine(
    settings: Settings, queue: JobQueue, redis_client: Redis
) -> None:
    with LiveApi(settings) as api:
        asyncio.run(_lifecycle(api.url, queue))


async def _workers(url: str, queue: JobQueue) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        sse = await open_sse(client, "/events?kinds=worker")
        heartbeat(queue, "w-seen", "sklearn")
        record = await sse.next()
        assert record is not None and record["event"] == "worker"
        assert record["data"] == {"worker_id": "w-seen", "runtime": "sklearn", "event": "up"}
        queue.unregister_worker("w-seen")
        record = await sse.next()
        assert record is not None and record["data"]["event"] == "down"
        await sse.response.aclose()


def test_worker_entries(settings: Settings, queue: JobQueue, redis_client: Redis) -> None:
    with LiveApi(settings) as api:
        asyncio.run(_workers(api.url, queue))


async def _idle(url: str, redis: Redis, queue: JobQueue) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        sse = await open_sse(client, "/events?kinds=worker")
        # A kind not asked for, then nothing: keepalive comments, no record.
        redis.xadd(
            queue.keys.activity,
            {"kind": "progress", "data": json.dumps({"job_id": "j1", "fraction": 0.5})},
        )
        try:
            record = await sse.next(timeout_s=1.5)  # three keepalive intervals
        except TimeoutError:
            record = None
        assert record is None and sse.comments >= 1


def test_idle_stream_sends_keepalives_only(
    settings: Settings, queue: JobQueue, redis_client: Redis
) -> None:
    with LiveApi(settings) as api:
        asyncio.run(_idle(api.url, redis_client, queue))


def test_bad_parameters_are_422(client: TestClient) -> None:
    assert_error(client.get("/events?kinds=state,bogus"), 422, "invalid_request", "kinds")
    assert_error(client.get("/events?kinds=STATE"), 422, "invalid_request", "kinds")
    assert_error(client.get("/events?after=x"), 422, "invalid_request", "after")
    resp = client.get("/events", headers={"Last-Event-ID": "1-2; drop"})
    assert_error(resp, 422, "invalid_request", "Last-Event-ID")
