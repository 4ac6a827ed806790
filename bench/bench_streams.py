"""Open event streams and ``?wait=`` requests against the API's own latency.

    "$(./scripts/env.sh backend)"/bin/python bench/bench_streams.py              # 1,000 + 200
    ... bench/bench_streams.py --streams 120 --waits 0 --repo /tmp/old   # an older checkout

It starts the backend alone (uvicorn, one process, default settings: THREADPOOL_SIZE 100)
on an embedded Valkey, no worker, and times ``GET /health``, ``GET /jobs`` (a page of 50)
and ``POST /jobs/training`` (the README's random forest), ``--samples`` of each in turn
from one client: first idle, then while a second process holds ``--streams`` open
``GET /jobs/{id}/events`` streams (one per queued job, each read as it arrives) and
``--waits`` ``POST /jobs/training?wait=`` requests waiting for jobs that never run. During
the loaded phase a pseudo-worker (the engine, in that second process, not in the measuring
one) reports ``--event-rate`` progress events a second spread over ``--reporting-jobs`` of
the followed jobs, so the streams carry traffic.

Prints p50/p95 per request, the ratios loaded/idle, the backend's thread count and the
server's connected clients in each phase, and how many progress events the streams got.
Nothing asserts on these numbers (the tests check behaviour); the figures go to
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _http_system import (
    BenchSystem,
    RunStats,
    add_common_args,
    bench_root,
    env_python,
    print_load,
    print_table,
    ratio,
)

from trainyard.connection import connect
from trainyard.engine import JobQueue
from trainyard.types import JobType

BODY = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "hyperparameters": {"n_estimators": 100, "max_depth": 10},
    "description": "bench_streams",
}


# ----------------------------------------------------------------- the load (a child)


async def _hold(
    url: str, job_ids: list[str], waits: int, wait_s: float, reporter: Reporter
) -> None:
    """Open a stream per job and ``waits`` waiting submissions; print ``ready`` once all
    streams have their first event, then keep reading until stdin closes."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    received = 0
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        opened = asyncio.Event()
        first = 0

        async def follow(job_id: str) -> None:
            nonlocal received, first
            async with client.stream("GET", f"/jobs/{job_id}/events") as resp:
                seen_first = False
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        received += 1
                        if not seen_first:
                            seen_first = True
                            first += 1
                            if first == len(job_ids):
                                opened.set()

        async def wait_one() -> None:
            await client.post(f"/jobs/training?wait={wait_s}", json=BODY)

        tasks = [asyncio.create_task(follow(j)) for j in job_ids]
        if not job_ids:
            opened.set()
        await opened.wait()
        tasks += [asyncio.create_task(wait_one()) for _ in range(waits)]
        reporter.start()
        print("ready", flush=True)
        # stdin closing (the parent is done) ends the load.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        reporter.stop.set()
        reporter.join()
        print(json.dumps({"events": received, "reported": reporter.sent}), flush=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def child_main(args: argparse.Namespace) -> None:
    plan = json.loads(Path(args.child_plan).read_text())
    queue = JobQueue(connect(plan["redis_url"]))
    claims = [(c[0], c[1]) for c in plan["claims"]]
    reporter = Reporter(queue, claims, args.event_rate)
    asyncio.run(_hold(args.child_url, plan["job_ids"], args.waits, args.wait_s, reporter))


# ------------------------------------------------------------------- measuring


def _time(client: httpx.Client, samples: int) -> dict[str, RunStats]:
    """``samples`` of each request, interleaved, one client (a kept-alive connection)."""
    calls = {
        "GET /health": lambda: client.get("/health"),
        "GET /jobs": lambda: client.get("/jobs?limit=50"),
        "POST /jobs/training": lambda: client.post("/jobs/training", json=BODY),
    }
    stats = {name: RunStats([], 0.0, []) for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            t0 = time.perf_counter()
            resp = call()
            took = (time.perf_counter() - t0) * 1000
            if resp.status_code in (200, 202):
                stats[name].latencies_ms.append(took)
            else:
                stats[name].errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
    return stats


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_cpu(pid: int, client: httpx.Client, samples: int) -> tuple[dict[str, RunStats], float]:
    """``_time``, and the backend's CPU use meanwhile, in % of one core."""
    cpu0, t0 = _cpu_s(pid), time.perf_counter()
    stats = _time(client, samples)
    return stats, 100 * (_cpu_s(pid) - cpu0) / (time.perf_counter() - t0)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


class Reporter(threading.Thread):
    """A pseudo-worker: reports progress on the jobs it claimed, ``rate`` events a second,
    until stopped."""

    def __init__(self, queue: JobQueue, claims: list[tuple[str, str]], rate: float) -> None:
        super().__init__(daemon=True)
        self.queue, self.claims, self.rate = queue, claims, rate
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        if not self.claims or self.rate <= 0:
            return
        interval = 1.0 / self.rate
        step = 0
        while not self.stop.wait(interval):
            job_id, attempt = self.claims[step % len(self.claims)]
            step += 1
            self.queue.report(job_id, attempt, "progress", {"step": step, "loss": 0.5})
            self.sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--wait-s", type=float, default=300.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--event-rate", type=float, default=50.0)
    parser.add_argument("--reporting-jobs", type=int, default=50)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-plan", help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args()
    if args.child_url:
        child_main(args)
        return

    print_load(
        f"bench_streams: {args.streams} open streams, {args.waits} waiting ?wait= requests, "
        f"{args.samples} samples of each request per phase"
    )
    with bench_root(args.keep) as root, BenchSystem(root, repo=args.repo) as system:
        assert system._server is not None
        backend_pid = system._procs[0].pid
        redis = connect(system._server.url)
        queue = JobQueue(redis)
        # The followed jobs first, so both phases see the same data.
        job_ids = [
            queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request=BODY)[0]
            for _ in range(args.streams)
        ]
        # Jobs that get progress: claimed now (a claim takes the oldest: ours).
        claims = []
        for _ in range(min(args.reporting_jobs, len(job_ids))):
            claim = queue.claim("bench-reporter", ["sklearn"], lease_ms=3_600_000)
            assert claim is not None
            claims.append((claim.job_id, claim.attempt_id))
        with httpx.Client(base_url=system.base_url, timeout=120) as client:
            _time(client, 20)  # warm-up
            idle, idle_cpu = _timed_cpu(backend_pid, client, args.samples)
            idle_threads, idle_clients = _threads(backend_pid), _clients(redis)

            plan = root / "plan.json"
            plan.write_text(
                json.dumps({"redis_url": system._server.url, "job_ids": job_ids, "claims": claims})
            )
            before = redis.zcard(queue.keys.index_all)
            started = time.perf_counter()
            child = subprocess.Popen(
                [env_python("backend"), __file__, "--child-url", system.base_url,
                 "--child-plan", str(plan), "--waits", str(args.waits),
                 "--wait-s", str(args.wait_s), "--event-rate", str(args.event_rate)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert child.stdin is not None and child.stdout is not None
            line = child.stdout.readline().strip()
            if line != "ready":
                sys.exit(f"the load process failed: {line!r}")
            opened_s = time.perf_counter() - started
            # The waits are waiting once the index holds their jobs.
            deadline = time.monotonic() + 120
            while redis.zcard(queue.keys.index_all) < before + args.waits:
                if time.monotonic() > deadline:
                    sys.exit("the ?wait= requests did not all arrive within 120 s")
                time.sleep(0.1)
            waits_s = time.perf_counter() - started - opened_s
            loaded, loaded_cpu = _timed_cpu(backend_pid, client, args.samples)
            loaded_threads, loaded_clients = _threads(backend_pid), _clients(redis)
            child.stdin.close()
            tail = child.stdout.readline().strip()
            child.wait(timeout=60)
            counts = json.loads(tail) if tail.startswith("{") else {"events": -1, "reported": -1}

    _print(args, idle, loaded, opened_s, waits_s)
    print(
        f"\nbackend CPU while measuring (% of a core, the measured requests included): "
        f"{idle_cpu:.0f} idle, {loaded_cpu:.0f} loaded"
    )
    print(
        f"backend threads: {idle_threads} idle, {loaded_threads} loaded; Redis clients: "
        f"{idle_clients} idle, {loaded_clients} loaded"
    )
    print(
        f"progress events reported while loaded: {counts['reported']}; SSE records the "
        f"streams received in all: {counts['events']} (their first events included)"
    )


def _clients(redis: Any) -> int:
    return int(redis.info("clients")["connected_clients"])


def _print(
    args: argparse.Namespace,
    idle: dict[str, RunStats],
    loaded: dict[str, RunStats],
    opened_s: float,
    waits_s: float,
) -> None:
    print(
        f"\n{args.streams} streams open and first events read in {opened_s:.1f} s; "
        f"then {args.waits} ?wait= requests in {waits_s:.1f} s\n"
    )
    rows = []
    for name in idle:
        a, b = idle[name], loaded[name]
        rows.append(
            [
                name,
                f"{a.p50:.1f}",
                f"{a.pct(0.95):.1f}",
                f"{b.p50:.1f}",
                f"{b.pct(0.95):.1f}",
                f"{ratio(b.p50, a.p50):.2f}x",
                f"{ratio(b.pct(0.95), a.pct(0.95)):.2f}x",
                str(len(a.errors) + len(b.errors)),
            ]
        )
    header = ["request", "idle p50", "idle p95", "loaded p50", "loaded p95", "p50 ratio",
              "p95 ratio", "errors"]  # fmt: skip
    print_table(header, rows)
    for name in idle:
        for stats in (idle[name], loaded[name]):
            if stats.errors:
                print(f"  {name}: first error: {stats.errors[0]}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
