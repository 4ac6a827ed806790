"""Helpers shared by the engine tests: the index invariant, jobs to queue, a job snapshot
for "nothing changed" checks, and bounded waits on the server's clock (never bare sleeps;
``wait_for`` is ``trainyard.testing``'s, re-exported)."""

from __future__ import annotations

from typing import Any

from redis import Redis

from trainyard.consistency import index_problems
from trainyard.engine import Claim, JobQueue
from trainyard.testing import wait_for
from trainyard.types import JobState, JobType, Priority

__all__ = [
    "assert_index_invariants",
    "enqueue_inference",
    "enqueue_simple",
    "in_model_queue",
    "snapshot",
    "wait_for",
    "wait_for_lease_expiry",
    "wait_past_server_time",
]


def enqueue_simple(
    queue: JobQueue,
    runtime: str = "sklearn",
    *,
    job_type: JobType = JobType.TRAINING,
    priority: Priority = Priority.NORMAL,
    **options: Any,
) -> str:
    job_id, created = queue.enqueue(
        job_type=job_type,
        runtime=runtime,
        request={"model_type": "random_forest", "data_path": "/data/tabular_data.csv"},
        priority=priority,
        **options,
    )
    assert created
    return job_id


def enqueue_inference(
    queue: JobQueue,
    model_id: str,
    runtime: str = "sklearn",
    *,
    priority: Priority = Priority.NORMAL,
    **options: Any,
) -> str:
    """An inference job for ``model_id``, as the backend queues one (the model id in the
    job hash too, which the per-model ready index reads)."""
    job_id, created = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime=runtime,
        request={"model_id": model_id, "input_data": "5.1,3.5,1.4,0.2"},
        priority=priority,
        extra_fields={"model_id": model_id},
        **options,
    )
    assert created
    return job_id


def in_model_queue(queue: JobQueue, job_id: str, model_id: str, runtime: str = "sklearn") -> bool:
    """Whether the job is in its model's ready index (``ready_model``)."""
    return queue.redis.zscore(queue.keys.ready_model(runtime, model_id), job_id) is not None


def wait_past_server_time(queue: JobQueue, when_ms: int, timeout_s: float = 5.0) -> None:
    """Poll the server's clock (the one the scripts use) until it is past ``when_ms``."""
    wait_for(
        lambda: queue.server_time_ms() > when_ms,
        timeout_s,
        f"server time > {when_ms}",
        interval_s=0.005,
    )


def wait_for_lease_expiry(queue: JobQueue, claim: Claim) -> None:
    lease_until = int(queue.redis.hget(queue.keys.job(claim.job_id), "lease_until") or 0)
    wait_past_server_time(queue, lease_until)


def snapshot(queue: JobQueue, job_id: str) -> dict[str, Any]:
    """Everything a transition of ``job_id`` could touch, to assert that nothing changed."""
    r: Redis = queue.redis
    k = queue.keys
    job = r.hgetall(k.job(job_id))
    runtime = job.get("runtime", "")
    model_id = job.get("model_id", "")
    return {
        "hash": job,
        "events": r.xlen(k.events(job_id)),
        "lease": r.zscore(k.leases, job_id),
        "delayed": r.zscore(k.delayed, job_id),
        "ready": r.zscore(k.ready(runtime), job_id) if runtime else None,
        "ready_model": r.zscore(k.ready_model(runtime, model_id), job_id) if model_id else None,
        "states": {s.value: r.zscore(k.index_state(s), job_id) for s in JobState},
        "models": r.zcard(k.models),
    }


def assert_index_invariants(queue: JobQueue) -> None:
    """Every job is in exactly the indexes its hash's state calls for, and no index names
    a job that is not there (``trainyard.consistency``)."""
    problems = index_problems(queue)
    assert not problems, "\n".join(problems)
