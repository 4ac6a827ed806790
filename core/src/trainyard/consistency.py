"""A consistency check of a queue: every job is in exactly the indexes its state calls for,
and no index names a job that is not there.

The Lua scripts keep the indexes in step with the job hashes; this is how the test suites
(the engine's model check, the fault-injection runs) and an operator (``trainyard check``)
verify that they did. It reads the whole keyspace of the namespace: run it on a quiet
queue, or accept that jobs moving during the scan may be reported.
"""

from __future__ import annotations

from typing import Any

from .engine import JobQueue
from .keys import KeySchema
from .types import JobState

__all__ = ["index_problems"]


def index_problems(queue: JobQueue) -> list[str]:
    """Every disagreement between the job hashes and the indexes, as readable lines."""
    r: Any = queue.redis
    k = queue.keys
    problems: list[str] = []
    all_ids = set(r.zrange(k.index_all, 0, -1))
    hash_ids = {key[len(k.job("")) :] for key in r.scan_iter(match=k.job("*"), count=1000)}
    for job_id in sorted(all_ids - hash_ids):
        problems.append(f"index:all names job {job_id}, which has no record")
    for job_id in sorted(hash_ids - all_ids):
        problems.append(f"job {job_id} is missing from index:all")

    by_state = {s.value: set(r.zrange(k.index_state(s), 0, -1)) for s in JobState}
    leases = set(r.zrange(k.leases, 0, -1))
    delayed = set(r.zrange(k.delayed, 0, -1))
    expiring = set(r.zrange(k.expiring, 0, -1))
    ready_keys = list(r.scan_iter(match=k.ready("*"), count=1000))
    ready = {key[len(k.ready("")) :]: set(r.zrange(key, 0, -1)) for key in ready_keys}
    # The per-model ready indexes, by key name: '<runtime>:<model>' -> {job id: score}.
    model_keys = list(r.scan_iter(match=k.ready_model("*", "*"), count=1000))
    name_at = len(k.ready_model("", "")) - 1  # where '<runtime>:<model>' starts
    by_model = {key[name_at:]: dict(r.zrange(key, 0, -1, withscores=True)) for key in model_keys}

    for job_id in sorted(all_ids & hash_ids):
        job = r.hgetall(k.job(job_id))
        state = job.get("state", "")
        where = f"job {job_id} ({state})"
        holders = [s for s, ids in by_state.items() if job_id in ids]
        if holders != [state]:
            problems.append(f"{where} is in state indexes {holders}")
        elif r.zscore(k.index_state(state), job_id) != float(job.get("seq", "nan")):
            problems.append(f"{where}: its state index score is not its seq")
        if r.zscore(k.index_runtime(job.get("runtime", "")), job_id) is None:
            problems.append(f"{where} is missing from its runtime index")
        if r.zscore(k.index_type(job.get("type", "")), job_id) is None:
            problems.append(f"{where} is missing from its job type index")
        in_ready = [rt for rt, ids in ready.items() if job_id in ids]
        if in_ready != ([job.get("runtime")] if state == "queued" else []):
            problems.append(f"{where} is in ready queues {in_ready}")
        problems.extend(_model_index_problems(r, k, job_id, job, by_model, where))
        if (job_id in leases) != (state == "running"):
            problems.append(f"{where}: in the leases set is {job_id in leases}")
        if (job_id in delayed) != (state == "retrying"):
            problems.append(f"{where}: in the delayed set is {job_id in delayed}")
        if job_id in expiring and (state != "queued" or job.get("attempt") != "0"):
            problems.append(f"{where} is in the expiring set after it started")
        if state == "running":
            if r.zscore(k.leases, job_id) != float(job.get("lease_until") or "nan"):
                problems.append(f"{where}: its lease score is not its lease_until")
            if not job.get("attempt_id"):
                problems.append(f"{where} has no attempt id")
    for state, ids in by_state.items():
        for job_id in sorted(ids - all_ids):
            problems.append(f"index:state:{state} names job {job_id}, which does not exist")
    for name, ids in (("leases", leases), ("delayed", delayed)):
        for job_id in sorted(ids - all_ids):
            problems.append(f"the {name} set names job {job_id}, which does not exist")
    for runtime, ids in ready.items():
        for job_id in sorted(ids - all_ids):
            problems.append(f"ready:{runtime} names job {job_id}, which does not exist")
    for name, scores in by_model.items():
        for job_id in sorted(set(scores) - all_ids):
            problems.append(f"ready_model:{name} names job {job_id}, which does not exist")
    return problems


def _model_index_problems(
    r: Any,
    k: KeySchema,
    job_id: str,
    job: dict[str, str],
    by_model: dict[str, dict[str, float]],
    where: str,
) -> list[str]:
    """A queued inference job that names its model is in exactly that model's ready index,
    with its ready queue score; every other job is in none."""
    runtime, model_id = job.get("runtime", ""), job.get("model_id", "")
    indexed = job.get("state") == "queued" and job.get("type") == "inference" and model_id
    expected = [f"{runtime}:{model_id}"] if indexed else []
    found = sorted(name for name, scores in by_model.items() if job_id in scores)
    if found != expected:
        return [f"{where} is in model ready queues {found}, expected {expected}"]
    if indexed and by_model[expected[0]][job_id] != r.zscore(k.ready(runtime), job_id):
        return [f"{where}: its model ready queue score is not its ready queue score"]
    return []
