"""Where a Trainyard job's cost goes: each engine call the worker loop and the submitter
make, run ``k`` times in a row from one client, with what it costs the client (wall time
per call: one round trip plus the server's work) and the server (CPU time, time inside the
command or script, commands run, the script's own commands included).

Used by ``bench_peers.py`` (phase ``breakdown``); runs on an empty server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from _benchlib import ServerSnapshot, print_table, worker_heartbeat_fields

from trainyard.connection import connect
from trainyard.engine import Claim, JobQueue, Submission
from trainyard.keys import KeySchema
from trainyard.types import JobType

__all__ = ["breakdown"]

RUNTIME = "sklearn"
REQUEST: dict[str, Any] = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}
WORKER = "bench-breakdown"
LEASE_MS = 30_000
_NOT_INNER = ("evalsha", "eval", "script|load")  # the call itself, and a first-call load


def _fields() -> dict[str, Any]:
    return worker_heartbeat_fields("idle", None)


def breakdown(url: str, k: int) -> None:
    admin = redis.Redis.from_url(url, decode_responses=True)
    admin.flushall()
    q = JobQueue(connect(url), KeySchema("bench-breakdown"))
    q.heartbeat(WORKER, _fields(), 60_000)  # registered: set_worker_state writes
    rows: list[list[str]] = []
    loop_usec: dict[str, float] = {}  # the worker loop's server time, by command, per job
    claims: list[Claim] = []
    job_ids: list[str] = []

    def measure(
        name: str, calls: int, fn: Callable[[int], object], per: int = 1, loop: bool = False
    ) -> None:
        before = ServerSnapshot.take(admin)
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        wall = time.perf_counter() - start
        delta = ServerSnapshot.take(admin).since(before)
        units = calls * per
        script_us = sum(v for c, v in delta.usec.items() if c in ("evalsha", "eval"))
        if loop:
            for c, v in delta.usec.items():
                loop_usec[c] = loop_usec.get(c, 0.0) + v / units
        inner = [(c, v) for c, v in delta.top(12) if c not in _NOT_INNER][:5]
        rows.append([
            name,
            f"{wall * 1e6 / units:.0f}",
            f"{delta.cpu_s * 1e6 / units:.0f}",
            f"{script_us / units:.0f}" if script_us else "-",
            f"{delta.commands / units:.1f}",
            " ".join(f"{c}:{v / units:.1f}" for c, v in inner),
        ])  # fmt: skip

    def enqueue(_: int) -> None:
        job_ids.append(q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)[0])

    def claim(_: int = 0) -> Any:  # as the worker calls it (its default affinity)
        return q.claim_work(WORKER, [RUNTIME], LEASE_MS, affinity_ms=50, holder_ttl_ms=20_000)

    def claim_hit(_: int) -> None:
        result = claim()
        assert result.claim is not None
        claims.append(result.claim)

    measure("enqueue (1 job)", k, enqueue)
    measure("claim_work, a job ready", k, claim_hit, loop=True)
    measure(
        "set_worker_state busy", k, lambda i: q.set_worker_state(WORKER, "busy", "j"), loop=True
    )
    measure("renew (jobs > renew_every_s)", k, lambda i: _renew(q, claims[i]))
    measure("finish succeeded", k, lambda i: _finish(q, claims[i]), loop=True)
    measure("set_worker_state idle", k, lambda i: q.set_worker_state(WORKER, "idle", None))
    measure("claim_work, queue empty", k, claim)
    measure("heartbeat (full, every 5 s)", k, lambda i: q.heartbeat(WORKER, _fields(), 60_000))
    measure(
        "set_loaded_models (every 5 s)",
        k,
        lambda i: q.set_loaded_models(WORKER, RUNTIME, [], 20_000),
    )
    measure("reap, nothing expired", k, lambda i: q.reap())
    measure("get_job (?wait= reads)", k, lambda i: q.get_job(job_ids[i]))
    measure("events, 4 state events", k, lambda i: q.events(job_ids[i]))
    chunk = 100
    sub = Submission(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)
    measure(
        f"enqueue_many ({chunk}/call), per job",
        max(1, k // chunk),
        lambda i: q.enqueue_many([sub] * chunk),
        per=chunk,
    )
    measure("PING (one bare round trip)", k, lambda i: q.redis.ping())
    print(
        f"\nTrainyard, call by call ({k} calls each, one client, no other load; "
        "'server cmds' counts the commands a script runs, and the script itself)"
    )
    print_table(
        ["call", "client us", "server CPU us", "script us", "server cmds", "top commands/call"],
        rows,
        fmt=str,
    )
    script = sum(v for c, v in loop_usec.items() if c in ("evalsha", "eval"))
    inner = sorted(
        ((c, v) for c, v in loop_usec.items() if c not in _NOT_INNER), key=lambda x: -x[1]
    )
    inside = sum(v for _, v in inner)
    print(
        f"\nthe worker loop's scripts (claim, busy, finish) per job: {script:.0f} us "
        f"inside the scripts, of which the commands {inside:.0f} us ("
        + ", ".join(f"{c} {v:.1f}" for c, v in inner[:8])
        + f") and the rest, {script - inside:.0f} us, Lua itself: the preamble every call "
        "defines (key table, helpers), argument parsing, cjson"
    )
    q.redis.close()
    admin.flushall()


def _renew(q: JobQueue, claim: Claim) -> None:
    assert q.renew(claim.job_id, claim.attempt_id, LEASE_MS).held


def _finish(q: JobQueue, claim: Claim) -> None:
    assert q.finish(claim.job_id, claim.attempt_id, "succeeded", result={"ok": True}).applied
