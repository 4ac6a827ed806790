"""Open event streams and ``?wait=`` requests hold no thread: with far more of them open
than the threadpool has threads, ``/health``, listings and submissions still answer, and
every stream and wait still ends when its job does. Real HTTP (uvicorn) and a real Valkey."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from redis import Redis

from conftest import LiveApi, run_job
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.engine_async import AsyncQueue, StreamHub, connect_async
from trainyard.types import JobType
from trainyard_api.config import Settings

__all__ = ["Sse", "eventually", "open_sse"]

BODY = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "framework_override": "sklearn",
}
STREAMS = 150  # far more than the threadpool below (4 threads)
WAITS = 20


class Sse:
    """Reads SSE records off a streaming httpx response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """The next record with an ``event`` (``data`` parsed), or None at the end."""
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> dict[str, Any] | None:
        fields: dict[str, Any] = {}
        async for line in self._lines:
            if not line:
                if "event" in fields:
                    fields["data"] = json.loads(fields["data"])
                    return fields
                fields = {}
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(": ")
                fields[name] = value
        return None

    async def rest(self, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Every record until the server ends the stream."""
        records = []
        while (record := await self.next(timeout_s)) is not None:
            records.append(record)
        return records


async def open_sse(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> Sse:
    """A stream whose headers have arrived (the route has run: it follows from here)."""
    request = client.build_request("GET", url, headers=headers)
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    return Sse(response)


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    """``wait_for`` for a test that runs an event loop (the client's tasks go on meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.05)


def _blocked_xreads(redis: Redis) -> int:
    return sum(
        1 for c in redis.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", "")
    )


async def _scenario(url: str, job_ids: list[str], queue: JobQueue, redis: Redis) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        streams = [await open_sse(client, f"/jobs/{j}/events") for j in job_ids]
        firsts = await asyncio.gather(*(s.next() for s in streams))
        assert all(f is not None and f["data"]["state"] == "queued" for f in firsts)

        waits = [
            asyncio.create_task(client.post("/jobs/training?wait=60", json=BODY))
            for _ in range(WAITS)
        ]
        # Every wait has enqueued its job (it waits from there on).
        await eventually(lambda: redis.zcard(queue.keys.index_all) == STREAMS + WAITS, "waits")

        # The threads are free: the sync routes answer (a generous bound: it is no speed
        # check, with threads held these would queue behind streams that never end).
        health = await asyncio.wait_for(client.get("/health"), 5.0)
        assert health.status_code == 200, health.text
        listing = await asyncio.wait_for(client.get("/jobs?limit=5"), 5.0)
        assert listing.status_code == 200 and len(listing.json()["jobs"]) == 5
        submitted = await asyncio.wait_for(client.post("/jobs/training", json=BODY), 5.0)
        assert submitted.status_code == 202, submitted.text
        # One shared read for all 170 waiters, not one blocked connection each.
        assert _blocked_xreads(redis) <= 1
        assert len(redis.client_list()) < 80

        # Three jobs succeed, every other one is cancelled: each stream and wait ends.
        for job_id in job_ids[:3]:
            run_job(queue, job_id, "sklearn", result={"ok": True})
        for member in redis.zrange(queue.keys.index_all, 0, -1):
            if str(member) not in job_ids[:3]:
                queue.cancel(str(member))
        endings = await asyncio.gather(*(s.rest() for s in streams))
        finals = [records[-1]["data"]["state"] for records in endings]
        assert finals == ["succeeded"] * 3 + ["cancelled"] * (STREAMS - 3)
        answers = await asyncio.wait_for(asyncio.gather(*waits), 15.0)
        assert [a.status_code for a in answers] == [200] * WAITS
        assert {a.json()["status"] for a in answers} == {"cancelled"}
        for stream in streams:
            await stream.response.aclose()


def test_open_streams_and_waits_hold_no_thread(
    settings: Settings, queue: JobQueue, redis_client: Redis
) -> None:
    job_ids = [
        queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={"i": i})[0]
        for i in range(STREAMS)
    ]
    small_pool = settings.model_copy(update={"threadpool_size": 4})
    with LiveApi(small_pool) as api:
        asyncio.run(_scenario(api.url, job_ids, queue, redis_client))


async def _late_follower(url: str, job_id: str, queue: JobQueue) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = await open_sse(client, f"/jobs/{job_id}/events")
        assert (await first.next())["data"]["state"] == "queued"  # type: ignore[index]
        claim = queue.claim("w-test", ["sklearn"], lease_ms=60_000)
        assert claim is not None
        running = await first.next()
        assert running is not None and running["data"]["state"] == "running"
        # A second stream of the same job, resumed from the start while the first one
        # is in the shared read: it replays, then both see the end.
        second = await open_sse(client, f"/jobs/{job_id}/events")
        replay = [await second.next(), await second.next()]
        assert [r["data"]["state"] for r in replay if r] == ["queued", "running"]
        for i in range(3):
            queue.report(job_id, claim.attempt_id, "progress", {"epoch": i + 1})
        assert queue.finish(job_id, claim.attempt_id, "succeeded", result={}).applied
        one, two = await asyncio.gather(first.rest(), second.rest())
        assert one == two
        assert [r["event"] for r in one] == ["progress"] * 3 + ["state"]
        assert one[-1]["data"]["state"] == "succeeded"


def test_two_streams_of_one_job_share_the_read(
    settings: Settings, queue: JobQueue, redis_client: Redis
) -> None:
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    with LiveApi(settings) as api:
        asyncio.run(_late_follower(api.url, job_id, queue))


async def _hub_checks(url: str, queue: JobQueue) -> None:
    """The hub on its own: a slow follower loses nothing, a key gained mid-read joins it."""
    # A long block: an entry seen sooner came through CLIENT UNBLOCK, not a read timing out.
    reads = AsyncQueue(connect_async(url), connect_async(url, single=True), queue.keys)
    reads.hub = StreamHub(reads.redis, reads._reader, block_ms=20_000, inbox_limit=5)
    reads.start()
    try:
        first, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
        claim = queue.claim("w-hub", ["sklearn"], lease_ms=60_000)
        assert claim is not None
        slow = reads.hub.follow(queue.keys.events(first), "0")
        assert [e.data["state"] for e in await reads.hub.read(slow, 5.0)] == ["queued", "running"]
        assert await reads.hub.read(slow, 0.2) == [] and slow.attached
        # 40 entries while it does not read: past its inbox (5), it is detached and pages.
        for i in range(40):
            queue.report(first, claim.attempt_id, "progress", {"step": i})
        steps: list[int] = []
        while len(steps) < 40:
            events = await reads.hub.read(slow, 5.0)
            assert events, f"stalled after {steps}"
            steps += [e.data["step"] for e in events]
        assert steps == list(range(40))

        # The shared read now blocks (20 s) on `first` alone; a second job's stream joins it.
        second, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
        other = reads.hub.follow(queue.keys.events(second), "0")
        assert [e.data["state"] for e in await reads.hub.read(other, 5.0)] == ["queued"]
        assert other.attached and reads.hub.followed_keys == 2
        started = time.monotonic()
        queue.cancel(second)
        events = await reads.hub.read(other, 10.0)
        assert [e.data["state"] for e in events] == ["cancelled"]
        assert time.monotonic() - started < 5.0
        # A stream deleted under the hub (its cursor now points past anything there): a
        # new follower joins after a few empty looks and gets what comes next.
        queue.redis.delete(queue.keys.events(first))
        late = reads.hub.follow(queue.keys.events(first), "0")
        assert await reads.hub.read(late, 1.0) == [] and late.attached
        queue.redis.xadd(queue.keys.events(first), {"kind": "log", "data": '{"line": "x"}'})
        assert [e.data for e in await reads.hub.read(late, 5.0)] == [{"line": "x"}]
        for follower in (slow, other, late):
            reads.hub.unfollow(follower)
        assert reads.hub.followed_keys == 0
    finally:
        await reads.close()


def test_stream_hub_pages_a_slow_follower_and_adds_keys_at_once(
    server: EmbeddedServer, queue: JobQueue, redis_client: Redis
) -> None:
    asyncio.run(_hub_checks(server.url, queue))
