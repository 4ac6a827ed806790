"""Trainyard's queue engine against the simplest raw redis-py queue, on one server.

    cd core && uv run python ../bench/bench_engine.py [--jobs 5000] [--latency-samples 300]

Starts its own embedded Valkey (AOF, appendfsync everysec) and measures, side by side:

  (a) enqueue throughput, one call per job
  (b) drain throughput: one worker process (its own connection) runs no-op jobs
  (c) submit -> result round trip for one job at a time (p50 / p95)

What each baseline does is printed with its row. The raw baselines have none of the
guarantees (no leases, no fencing, no retries, no state index, no events, no
idempotency); the ratio says what those guarantees cost. Not asserted anywhere.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema
from trainyard.types import JobType

RUNTIME = "sklearn"
REQUEST = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}
RAW_QUEUE = "raw:queue"
LEASE_MS = 60_000


def _enqueue_trainyard(q: JobQueue, n: int) -> None:
    for _ in range(n):
        q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)


def _enqueue_raw(url: str, n: int) -> None:
    import json

    r = connect(url)
    payload = json.dumps(REQUEST)
    for _ in range(n):
        job_id = uuid.uuid4().hex
        pipe = r.pipeline(transaction=False)
        pipe.hset(f"raw:job:{job_id}", mapping={"state": "queued", "request": payload})
        pipe.zadd("raw:ready", {job_id: time.time()})
        pipe.lpush("raw:wake", "1")
        pipe.execute()
    r.close()


def _drain_trainyard_worker(url: str, namespace: str, n: int, done: Any) -> None:
    q = JobQueue(connect(url), KeySchema(namespace))
    finished = 0
    while finished < n:
        claim = q.claim("bench-worker", [RUNTIME], LEASE_MS)
        if claim is None:
            q.wait_for_work([RUNTIME], 1)
            continue
        q.renew(claim.job_id, claim.attempt_id, LEASE_MS)
        outcome = q.finish(claim.job_id, claim.attempt_id, "succeeded", result={"ok": True})
        assert outcome.applied
        finished += 1
    done.set()


def _drain_raw_worker(url: str, n: int, done: Any) -> None:
    r = connect(url)
    for _ in range(n):
        got = r.blpop([RAW_QUEUE], timeout=5)
        assert got is not None, "raw queue ran dry"
        r.set(f"raw:result:{got[1]}", '{"ok":true}')
    done.set()


def _latency_trainyard_worker(url: str, namespace: str, n: int) -> None:
    q = JobQueue(connect(url, socket_timeout=60), KeySchema(namespace))
    for _ in range(n):
        while True:
            claim = q.claim("bench-worker", [RUNTIME], LEASE_MS)
            if claim is not None:
                break
            q.wait_for_work([RUNTIME], 5)
        q.finish(claim.job_id, claim.attempt_id, "succeeded", result={"ok": True})


def _latency_raw_worker(url: str, n: int) -> None:
    r = connect(url, socket_timeout=60)
    for _ in range(n):
        got = r.brpop(["raw:lat:queue"], timeout=5)
        assert got is not None
        r.lpush(f"raw:lat:result:{got[1]}", '{"ok":true}')


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_process(target: Callable[..., None], *args: Any) -> mp.Process:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _join(proc: mp.Process, timeout: float = 120) -> None:
    proc.join(timeout)
    if proc.is_alive() or proc.exitcode != 0:
        proc.kill()
        raise RuntimeError(f"bench worker {proc.name} failed (exit {proc.exitcode})")


def bench_enqueue(url: str, n: int) -> tuple[float, float]:
    q = JobQueue(connect(url), KeySchema("bench-enq"))
    ours = _timed(lambda: _enqueue_trainyard(q, n))
    raw = _timed(lambda: _enqueue_raw(url, n))
    q.redis.close()
    return n / ours, n / raw


def bench_drain(url: str, n: int) -> tuple[float, float]:
    ns = "bench-drain"
    q = JobQueue(connect(url), KeySchema(ns))
    _enqueue_trainyard(q, n)
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    proc = _run_process(_drain_trainyard_worker, url, ns, n, done)
    # Time from the worker's first claim: wait until the queue starts shrinking.
    start = _wait_started(lambda: q.redis.zcard(q.keys.ready(RUNTIME)) < n)
    done.wait(120)
    ours = time.perf_counter() - start
    _join(proc)
    assert q.count_by_state()["succeeded"] == n

    r = q.redis
    for i in range(0, n, 1000):
        r.rpush(RAW_QUEUE, *[uuid.uuid4().hex for _ in range(min(1000, n - i))])
    done = ctx.Event()
    proc = _run_process(_drain_raw_worker, url, n, done)
    start = _wait_started(lambda: r.llen(RAW_QUEUE) < n)
    done.wait(120)
    raw = time.perf_counter() - start
    _join(proc)
    r.close()
    return n / ours, n / raw


def _wait_started(condition: Callable[[], bool], timeout_s: float = 60) -> float:
    """The time at which ``condition`` first held (polled tightly; bounded)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the bench worker did not start")
        time.sleep(0.0005)
    return time.perf_counter()


def bench_latency(url: str, samples: int) -> tuple[list[float], list[float]]:
    ns = "bench-lat"
    q = JobQueue(connect(url, socket_timeout=60), KeySchema(ns))
    proc = _run_process(_latency_trainyard_worker, url, ns, samples)
    ours: list[float] = []
    terminal = {"succeeded", "failed", "cancelled", "dead"}
    for _ in range(samples):
        start = time.perf_counter()
        job_id, _ = q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=REQUEST)
        last, finished = "0", False
        while not finished:
            events = q.events(job_id, after=last, block_ms=10_000)
            if not events:
                raise RuntimeError("no event within 10 s")
            for event in events:
                last = event.id
                finished = finished or (event.kind == "state" and event.data["state"] in terminal)
        ours.append((time.perf_counter() - start) * 1000)
    _join(proc)

    r = q.redis
    proc = _run_process(_latency_raw_worker, url, samples)
    raw: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        job_id = uuid.uuid4().hex
        r.lpush("raw:lat:queue", job_id)
        got = r.blpop([f"raw:lat:result:{job_id}"], timeout=10)
        assert got is not None
        raw.append((time.perf_counter() - start) * 1000)
    _join(proc)
    r.close()
    return ours, raw


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for (a) and (b)")
    parser.add_argument("--latency-samples", type=int, default=300, help="round trips for (c)")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp,
        EmbeddedServer(Path(tmp), appendfsync="everysec") as server,
    ):
        url = server.url
        print(
            f"embedded Valkey on {url} (AOF, appendfsync everysec); jobs={args.jobs}, "
            f"latency samples={args.latency_samples}",
            flush=True,
        )
        enq_ours, enq_raw = bench_enqueue(url, args.jobs)
        drain_ours, drain_raw = bench_drain(url, args.jobs)
        lat_ours, lat_raw = bench_latency(url, args.latency_samples)

    rows = [
        (
            "(a) enqueue, jobs/s",
            enq_ours,
            enq_raw,
            "higher",
            (
                "Trainyard: JobQueue.enqueue (1 Lua call: hash, 4 indexes, ready zset, wake list, "
                "event)\n      raw: per job a pipeline of HSET job + ZADD ready + LPUSH wake "
                "(1 round trip)"
            ),
        ),
        (
            "(b) drain, jobs/s",
            drain_ours,
            drain_raw,
            "higher",
            (
                "Trainyard: 1 worker process, claim -> renew -> finish per job (3 Lua calls, "
                "leases, fencing, events)\n      raw: 1 worker process, BLPOP + SET result per job "
                "(RPUSHed up front)"
            ),
        ),
        (
            "(c) round trip p50, ms",
            _pct(lat_ours, 50),
            _pct(lat_raw, 50),
            "lower",
            (
                "Trainyard: enqueue; worker blocked in wait_for_work claims + finishes; submitter "
                "blocks on events(block_ms)\n      raw: LPUSH; worker BRPOP + LPUSH result; "
                "submitter BLPOP on the result"
            ),
        ),
        ("(c) round trip p95, ms", _pct(lat_ours, 95), _pct(lat_raw, 95), "lower", ""),
    ]
    print()
    print(f"{'measure':<24}{'Trainyard':>12}{'raw redis-py':>14}{'Trainyard/raw':>15}")
    print("-" * 65)
    for name, ours, raw, better, _ in rows:
        print(f"{name:<24}{ours:>12.1f}{raw:>14.1f}{ours / raw:>14.2f}x  ({better} is better)")
    print()
    for name, *_, what in rows:
        if what:
            print(f"{name}:\n      {what}")
    print(
        f"\ntotal bench time {time.perf_counter() - began:.1f} s "
        f"(python {sys.version.split()[0]}, same server and client machine)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
