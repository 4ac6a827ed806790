"""``trainyard.consistency.index_problems``: silent on a consistent queue, and it names
each kind of disagreement between job records and indexes (so a check built on it can
fail)."""

from __future__ import annotations

from queue_checks import enqueue_simple

from trainyard.consistency import index_problems
from trainyard.engine import JobQueue


def _busy_queue(queue: JobQueue) -> tuple[str, str]:
    waiting = enqueue_simple(queue, runtime="tensorflow")
    running = enqueue_simple(queue)
    assert queue.claim("worker-1", ["sklearn"], 30_000) is not None
    return waiting, running


def test_a_consistent_queue_has_no_problems(queue: JobQueue) -> None:
    _busy_queue(queue)
    assert index_problems(queue) == []


def test_each_kind_of_disagreement_is_named(queue: JobQueue) -> None:
    waiting, running = _busy_queue(queue)
    r, k = queue.redis, queue.keys
    r.zrem(k.index_state("queued"), waiting)  # a job missing from its state index
    r.zadd(k.ready("tensorflow"), {running: 1})  # a running job still in a ready queue
    r.zrem(k.leases, running)  # a running job without a lease
    r.zadd(k.delayed, {"ghost": 1})  # an index naming a job that does not exist
    r.hset(k.job("orphan"), mapping={"id": "orphan", "state": "queued"})  # not in index:all
    problems = "\n".join(index_problems(queue))
    assert f"job {waiting} (queued) is in state indexes []" in problems
    assert f"job {running} (running) is in ready queues ['tensorflow']" in problems
    assert f"job {running} (running): in the leases set is False" in problems
    assert "the delayed set names job ghost, which does not exist" in problems
    assert "job orphan is missing from index:all" in problems
