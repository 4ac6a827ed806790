"""The engine's read side (listing, events, depths, workers) and its key layout."""

from __future__ import annotations

import threading

import pytest
from queue_checks import (
    assert_index_invariants,
    enqueue_simple,
    wait_for,
    wait_past_server_time,
)
from redis import Redis

from trainyard.engine import JobQueue
from trainyard.keys import KeySchema
from trainyard.types import JobType, Priority

LEASE_MS = 30_000


pytestmark = pytest.mark.usefixtures("index_invariant")


def _mixed_jobs(queue: JobQueue, count: int) -> list[dict[str, str]]:
    """``count`` jobs over two runtimes and both types, some of them run to the end."""
    for i in range(count):
        enqueue_simple(
            queue,
            "sklearn" if i % 2 else "tensorflow",
            job_type=JobType.INFERENCE if i % 5 == 0 else JobType.TRAINING,
        )
    for _ in range(count // 4):
        claim = queue.claim("w", ["tensorflow"], LEASE_MS)
        assert claim is not None
        queue.finish(claim.job_id, claim.attempt_id, "succeeded")
    return queue.get_jobs(queue.redis.zrevrange(queue.keys.index_all, 0, -1))


def _all_pages(queue: JobQueue, limit: int, **filters: str) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page = queue.list_jobs(cursor=cursor, limit=limit, **filters)
        assert len(page.jobs) <= limit
        seen.extend(job["id"] for job in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"state": "queued"},
        {"state": "succeeded"},
        {"runtime": "sklearn"},
        {"job_type": "inference"},
        {"state": "queued", "runtime": "tensorflow", "job_type": "training"},
        {"state": "failed"},
    ],
)
def test_list_jobs_pages_newest_first_without_duplicates_or_gaps(
    queue: JobQueue, filters: dict[str, str]
) -> None:
    jobs = _mixed_jobs(queue, 250)
    field = {"state": "state", "runtime": "runtime", "job_type": "type"}
    expected = [
        j["id"] for j in jobs if all(j[field[name]] == value for name, value in filters.items())
    ]

    for limit in (1, 37, 50, 300):
        if limit == 1 and len(expected) > 60:
            continue
        assert _all_pages(queue, limit, **filters) == expected, (filters, limit)


def test_list_jobs_with_a_small_scan_budget_returns_short_pages_that_still_cover_everything(
    queue: JobQueue,
) -> None:
    jobs = _mixed_jobs(queue, 250)
    expected = [j["id"] for j in jobs if j["type"] == "inference" and j["runtime"] == "tensorflow"]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page = queue.list_jobs(
            runtime="tensorflow", job_type="inference", cursor=cursor, limit=20, scan_budget=30
        )
        seen.extend(job["id"] for job in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


def test_events_after_an_id_resume_where_the_reader_left_off(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], LEASE_MS)
    assert claim is not None
    queue.report(job_id, claim.attempt_id, "progress", {"epoch": 1})
    everything = queue.events(job_id)
    assert [e.kind for e in everything] == ["state", "state", "progress"]

    queue.report(job_id, claim.attempt_id, "log", {"line": "done"})
    queue.finish(job_id, claim.attempt_id, "succeeded")
    rest = queue.events(job_id, after=everything[-1].id)

    assert [(e.kind, e.data.get("state")) for e in rest] == [("log", None), ("state", "succeeded")]
    assert queue.events(job_id, after=everything[0].id)[0].id == everything[1].id
    assert queue.events(job_id, after=rest[-1].id) == []
    assert [e.id for e in queue.events(job_id, count=2)] == [e.id for e in everything[:2]]


def test_events_with_block_ms_wakes_up_on_the_next_event(
    queue: JobQueue, redis_client: Redis
) -> None:
    job_id = enqueue_simple(queue)
    last = queue.events(job_id)[-1].id
    assert queue.events(job_id, after=last, block_ms=20) == []

    got: list[str] = []
    reader = threading.Thread(
        target=lambda: got.extend(
            e.data["state"] for e in queue.events(job_id, last, block_ms=5000)
        )
    )
    reader.start()
    wait_for(
        lambda: int(redis_client.info("clients")["blocked_clients"]) >= 1, what="reader blocked"
    )
    queue.cancel(job_id)  # a second pooled connection
    reader.join(timeout=10)
    assert got == ["cancelled"]


def test_queue_depths_count_queued_jobs_per_runtime_and_priority(queue: JobQueue) -> None:
    for priority, runtime, n in (
        (Priority.HIGH, "sklearn", 2),
        (Priority.NORMAL, "sklearn", 1),
        (Priority.LOW, "tensorflow", 3),
        (Priority.HIGH, "pytorch-2.1-gpu", 1),
    ):
        for _ in range(n):
            enqueue_simple(queue, runtime, priority=priority)
    claim = queue.claim("w", ["tensorflow"], LEASE_MS)  # running: no longer counted
    assert claim is not None

    depths = queue.queue_depths()

    assert depths["sklearn"] == {"high": 2, "normal": 1, "low": 0, "total": 3}
    assert depths["tensorflow"] == {"high": 0, "normal": 0, "low": 2, "total": 2}
    assert depths["pytorch-2.1-gpu"] == {"high": 1, "normal": 0, "low": 0, "total": 1}
    assert depths["pytorch-2.0"]["total"] == 0
    assert queue.count_by_state()["queued"] == 6
    assert queue.count_by_state()["running"] == 1


def test_live_workers_drops_a_worker_whose_ttl_passed(queue: JobQueue) -> None:
    queue.heartbeat("steady", {"runtime": "sklearn", "pid": 1}, ttl_ms=60_000)
    last = queue.heartbeat("flaky", {"runtime": "tensorflow", "pid": 2}, ttl_ms=50)
    assert {w["id"] for w in queue.live_workers(max_age_ms=60_000)} == {"steady", "flaky"}
    steady = next(w for w in queue.live_workers(60_000) if w["id"] == "steady")
    assert steady["runtime"] == "sklearn" and steady["pid"] == "1" and int(steady["last_seen"]) > 0

    wait_past_server_time(queue, last + 50)

    assert [w["id"] for w in queue.live_workers(max_age_ms=60_000)] == ["steady"]
    assert queue.redis.exists(queue.keys.worker("flaky")) == 0  # its registration expired
    queue.heartbeat("brief", {"runtime": "sklearn"}, ttl_ms=50)  # prunes entries older than 50 ms
    assert "flaky" not in queue.redis.zrange(queue.keys.workers, 0, -1)
    queue.unregister_worker("brief")
    queue.unregister_worker("steady")
    assert queue.live_workers(max_age_ms=60_000) == []


def _run_every_transition(queue: JobQueue) -> None:
    done = enqueue_simple(queue, idempotency_key="k1")
    enqueue_simple(queue, "tensorflow", queue_ttl_s=3600)
    claim = queue.claim("w", ["sklearn"], 50)
    assert claim is not None and claim.job_id == done
    queue.report(done, claim.attempt_id, "progress", {"p": 1})
    queue.finish(done, claim.attempt_id, "succeeded", model={"model_id": "m-1"})
    retried = enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], 50)
    assert claim is not None
    queue.finish(retried, claim.attempt_id, "retry", retry_delay_ms=60_000)
    lost = enqueue_simple(queue)
    claim = queue.claim("w", ["sklearn"], 50)
    assert claim is not None
    wait_past_server_time(queue, int(claim.job["lease_until"]))
    queue.reap()
    queue.cancel(lost)
    queue.heartbeat("w", {"runtime": "sklearn"}, 60_000)


def test_every_key_the_scripts_create_carries_the_namespace_prefix(queue: JobQueue) -> None:
    _run_every_transition(queue)
    keys = list(queue.redis.scan_iter(count=1000))
    assert len(keys) > 15
    assert [k for k in keys if not k.startswith("{trainyard}:")] == []
    for expected in ("delayed", "seq", "models", "workers", "index:all", "idem:k1", "model:m-1"):
        assert "{trainyard}:" + expected in keys


def test_two_namespaces_on_one_server_stay_apart(queue: JobQueue, redis_client: Redis) -> None:
    other = JobQueue(redis_client, KeySchema("other"))
    mine = enqueue_simple(queue, idempotency_key="same-key")
    theirs = enqueue_simple(other, idempotency_key="same-key")
    assert mine != theirs

    claim = other.claim("w", ["sklearn"], LEASE_MS)
    assert claim is not None and claim.job_id == theirs
    assert other.claim("w", ["sklearn"], LEASE_MS) is None
    assert queue.get_job(theirs) is None
    assert queue.cancel(theirs).found is False
    assert other.finish(theirs, claim.attempt_id, "succeeded").applied

    assert [j["id"] for j in queue.list_jobs().jobs] == [mine]
    assert queue.get_job(mine)["state"] == "queued"  # type: ignore[index]
    keys = list(redis_client.scan_iter(count=1000))
    assert all(k.startswith(("{trainyard}:", "{other}:")) for k in keys)
    assert any(k.startswith("{other}:") for k in keys)
    assert_index_invariants(other)
