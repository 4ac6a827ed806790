"""Many workers on one Redis: N simulated workers against one private Valkey, idle and
then under a steady stream of jobs, for N = 10, 100, 500 (issue 9, section 7).

    ./bench/run.sh bench_fleet.py [--workers 10,100,500] [--rate 200] [--load-s 10]

Each simulated worker is a thread with its own connection speaking exactly the real
protocol (see ``_fleet_sim.py``: claim_work, BLPOP on the wake list with block_s,
set_worker_state busy/idle, finish, renew when a job outlives renew_every_s, a full
heartbeat and a reap every 5 s); up to --per-process workers share a process. Per N, on a
fresh server (AOF, appendfsync everysec, as shipped):

  idle   N registered workers and no jobs for --idle-s: the server's CPU per second of
         wall time (INFO used_cpu_user + used_cpu_sys), in % of one core, and commands/s
  load   --rate jobs/s submitted one by one (enqueue) for --load-s, each "running"
         --job-ms: pick-up latency (just before enqueue -> claim_work returned) p50/p99/max,
         and as the server saw it (the job's created_at -> started_at, whole ms),
         the server's CPU and commands per job (total, and over the idle baseline), how many
         workers woke per job and how many of those found nothing to claim, BLPOP timeouts

Targets (issue 9): at 500 idle workers the idle cost <= 5 % of one core and the pick-up p99
<= 5 ms; the cost per job independent of N. Then a burst (--burst jobs in enqueue_many
calls) to the idle fleet: how long it takes, how many workers woke and how many of them
found nothing, and wake tokens left over. Nothing asserts on these numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from _benchlib import ServerDelta, ServerSnapshot, machine_load, pct, print_table
from _fleet_sim import RUNTIME, FleetSettings, PhaseStats, run_fleet_process

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue, Submission
from trainyard.keys import KeySchema
from trainyard.types import JobType

IDLE, LOAD, BURST, STOPPING = 1, 2, 3, 4


@dataclass
class FleetResult:
    n: int
    idle_s: float
    idle: ServerDelta
    idle_stats: PhaseStats
    load_s: float
    load: ServerDelta
    load_stats: PhaseStats
    jobs: int
    wake_tokens_left: int
    server_pickup_ms: list[float]  # the job hash's created_at -> started_at (server clock)
    burst: int = 0  # jobs submitted at once (enqueue_many) after the steady stream
    burst_s: float = 0.0  # from the submit to the last job finished
    burst_stats: PhaseStats | None = None
    burst_tokens_left: int = 0


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _produce(q: JobQueue, rate: float, seconds: float) -> int:
    """Submit ``rate`` jobs a second for ``seconds``, on a fixed schedule (not a burst)."""
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        request = {"model_type": "random_forest", "t": time.time()}
        q.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME, request=request)
    return total


def _server_pickups(q: JobQueue) -> list[float]:
    """Every finished job's wait as the server saw it: created_at -> started_at (ms, both
    from Redis TIME): the wake-up and the claim, without the submitter's side."""
    ids: list[str] = q.redis.zrange(q.keys.index_state("succeeded"), 0, -1)  # type: ignore[assignment]
    pipe = q.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(q.keys.job(job_id), "created_at", "started_at")
    return [float(b) - float(a) for a, b in pipe.execute() if a and b]


def simulate(n: int, args: argparse.Namespace) -> FleetResult:
    ctx = mp.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="trainyard-fleet-") as tmp,
        EmbeddedServer(Path(tmp), appendfsync="everysec") as server,
    ):
        s = FleetSettings(
            url=server.url, namespace="fleet", block_s=args.block_s,
            heartbeat_s=args.heartbeat_s, reap_every_s=args.reap_every_s, job_ms=args.job_ms,
            loaded_models_every_beat=args.loaded_models,
        )  # fmt: skip
        admin = redis.Redis.from_url(server.url, decode_responses=True)
        q = JobQueue(connect(server.url), KeySchema(s.namespace))
        phase = ctx.Value("i", 0, lock=False)
        stop = ctx.Event()
        results = ctx.Queue()
        ids = [f"sim-{i:04d}" for i in range(n)]
        per = max(1, math.ceil(n / max(1, math.ceil(n / args.per_process))))
        procs = [
            ctx.Process(
                target=run_fleet_process,
                args=(ids[i : i + per], s, phase, stop, results),
                daemon=True,
            )
            for i in range(0, n, per)
        ]
        for p in procs:
            p.start()
        try:
            _wait(lambda: admin.zcard(q.keys.workers) >= n, 120, f"{n} workers to register")
            _wait(
                lambda: ServerSnapshot.take(admin).blocked_clients >= n,
                120 + args.block_s,
                f"{n} workers blocked in BLPOP",
            )
            time.sleep(args.block_s)  # every worker past its spread-out first wait

            phase.value = IDLE
            before = ServerSnapshot.take(admin)
            start = time.monotonic()
            time.sleep(args.idle_s)
            idle = ServerSnapshot.take(admin).since(before)
            idle_s = time.monotonic() - start

            phase.value = LOAD
            before = ServerSnapshot.take(admin)
            start = time.monotonic()
            jobs = _produce(q, args.rate, args.load_s)
            _wait(
                lambda: admin.zcard(q.keys.index_state("succeeded")) >= jobs,
                60 + args.load_s,
                "every job to finish",
            )
            load = ServerSnapshot.take(admin).since(before)
            load_s = time.monotonic() - start
            server_pickup = _server_pickups(q)
            tokens = int(admin.llen(q.keys.wake(RUNTIME)))

            burst_s, burst_tokens = 0.0, 0
            if args.burst:
                _wait(lambda: ServerSnapshot.take(admin).blocked_clients >= n, 30, "idle fleet")
                phase.value = BURST
                sub = Submission(
                    job_type=JobType.TRAINING, runtime=RUNTIME, request={"t": time.time()}
                )
                start = time.monotonic()
                for i in range(0, args.burst, 1000):
                    q.enqueue_many([sub] * min(1000, args.burst - i))
                _wait(
                    lambda: admin.zcard(q.keys.index_state("succeeded")) >= jobs + args.burst,
                    120,
                    "the burst to finish",
                )
                burst_s = time.monotonic() - start
                # Let woken workers finish their claim and go back to waiting.
                _wait(lambda: ServerSnapshot.take(admin).blocked_clients >= n, 30, "idle fleet")
                burst_tokens = int(admin.llen(q.keys.wake(RUNTIME)))
            phase.value = STOPPING
            stop.set()
            idle_stats, load_stats, burst_stats = PhaseStats(), PhaseStats(), PhaseStats()
            for _ in procs:
                per_phase: dict[int, PhaseStats] = results.get(timeout=60)
                idle_stats.add(per_phase.get(IDLE, PhaseStats()))
                load_stats.add(per_phase.get(LOAD, PhaseStats()))
                burst_stats.add(per_phase.get(BURST, PhaseStats()))
        finally:
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
        q.redis.close()
        admin.close()
    return FleetResult(
        n, idle_s, idle, idle_stats, load_s, load, load_stats, jobs, tokens, server_pickup,
        args.burst, burst_s, burst_stats, burst_tokens,
    )  # fmt: skip


def report(results: list[FleetResult], args: argparse.Namespace) -> None:
    rows = []
    for r in results:
        idle_cpu = r.idle.cpu_s / r.idle_s
        net_cpu = r.load.cpu_s - idle_cpu * r.load_s
        net_cmds = r.load.commands - r.idle.commands / r.idle_s * r.load_s
        lat = r.load_stats.pickup_ms
        slow = sum(1 for v in lat if v > 100)
        rows.append([
            str(r.n),
            f"{idle_cpu * 100:.2f}",
            f"{r.idle.commands / r.idle_s:,.0f}",
            f"{pct(lat, 50):.2f}" if lat else "-",
            f"{pct(lat, 99):.2f}" if lat else "-",
            f"{max(lat):.1f}" if lat else "-",
            str(slow),
            f"{pct(r.server_pickup_ms, 50):.0f} / {pct(r.server_pickup_ms, 99):.0f}"
            if r.server_pickup_ms
            else "-",
            f"{r.load.cpu_s / r.load_s * 100:.1f}",
            f"{r.load.cpu_s * 1e6 / r.jobs:.0f}",
            f"{net_cpu * 1e6 / r.jobs:.0f}",
            f"{r.load.commands / r.jobs:.1f}",
            f"{net_cmds / r.jobs:.1f}",
            f"{r.load_stats.wakes / r.jobs:.2f}",
            f"{r.load_stats.empty_wakes / r.jobs:.2f}",
            f"{r.load_stats.empty_claims / r.jobs:.2f}",
            str(r.load_stats.timeouts),
            str(r.wake_tokens_left),
        ])  # fmt: skip
    print()
    print_table(
        [
            "N", "idle CPU %core", "idle cmds/s", "pickup p50 ms", "p99 ms", "max ms",
            ">100ms", "server p50/p99 ms", "load CPU %core", "CPU us/job", "over idle",
            "cmds/job", "over idle",
            "wakes/job", "empty wakes/job", "empty claims/job", "BLPOP timeouts",
            "tokens left",
        ],
        rows,
        fmt=str,
    )  # fmt: skip
    print("\nidle: what the server runs per second (commands inside scripts included)")
    for r in results:
        top = ", ".join(f"{c} {v / r.idle_s:.0f}" for c, v in r.idle.top(8))
        print(f"  N={r.n}: {top}")
    print("load: commands per job (total, idle baseline included)")
    for r in results:
        top = ", ".join(f"{c} {v / r.jobs:.2f}" for c, v in r.load.top(10))
        print(f"  N={r.n}: {top}")
    if any(r.burst for r in results):
        print(
            "\nburst: jobs submitted at once (enqueue_many, 1,000 a call) to the idle fleet; "
            "the wake list keeps at most 64 tokens"
        )
        brows = []
        for r in results:
            b = r.burst_stats or PhaseStats()
            brows.append([
                str(r.n), str(r.burst), f"{r.burst_s:.2f}", f"{r.burst / r.burst_s:,.0f}",
                str(b.wakes), str(b.empty_wakes), str(b.timeouts), str(r.burst_tokens_left),
            ])  # fmt: skip
        print_table(
            ["N", "jobs", "seconds", "jobs/s", "wakes", "empty wakes", "BLPOP timeouts",
             "tokens left"],
            brows, fmt=str,
        )  # fmt: skip
    worst = results[-1]
    idle_pct = worst.idle.cpu_s / worst.idle_s * 100
    lat = worst.load_stats.pickup_ms
    print(
        f"\ntargets at N={worst.n}: idle cost {idle_pct:.2f} % of a core (target <= 5 %): "
        f"{'met' if idle_pct <= 5 else 'MISSED'}; pick-up p99 "
        f"{pct(lat, 99) if lat else float('nan'):.2f} ms (target <= 5 ms): "
        f"{'met' if lat and pct(lat, 99) <= 5 else 'MISSED'}"
    )
    print(
        f"settings: rate {args.rate} jobs/s for {args.load_s} s, each {args.job_ms} ms; "
        f"idle {args.idle_s} s; block_s {args.block_s}, heartbeat_s {args.heartbeat_s}, "
        f"reap_every_s {args.reap_every_s}; set_loaded_models with each heartbeat: "
        f"{args.loaded_models}; up to {args.per_process} workers a process"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="10,100,500", help="comma-separated N")
    parser.add_argument("--rate", type=float, default=200.0, help="jobs submitted a second")
    parser.add_argument("--load-s", type=float, default=10.0, help="seconds of submitting")
    parser.add_argument("--idle-s", type=float, default=15.0, help="seconds idle, measured")
    parser.add_argument("--job-ms", type=float, default=10.0, help="each job's run time")
    parser.add_argument("--block-s", type=float, default=5.0)
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument(
        "--reap-every-s", type=float, default=5.0, help="each worker's reap interval (0: none)"
    )
    parser.add_argument(
        "--loaded-models",
        dest="loaded_models",
        action="store_true",
        help="what-if: a set_loaded_models call with each heartbeat (the worker makes it only "
        "while its inference host holds models; the simulated workers hold none)",
    )
    parser.add_argument(
        "--burst", type=int, default=2000, help="jobs submitted at once after the stream (0: none)"
    )
    parser.add_argument("--per-process", type=int, default=128, help="workers per process")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.workers.split(",") if x]

    began = time.perf_counter()
    print(f"machine: {machine_load()}; python {sys.version.split()[0]}", flush=True)
    results = []
    for n in sizes:
        results.append(simulate(n, args))
        print(f"  N={n} done ({machine_load()})", flush=True)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps([_as_json(r) for r in results], indent=2))
    print(f"\n{machine_load()} at the end; total {time.perf_counter() - began:.1f} s")
    return 0


def _as_json(r: FleetResult) -> dict[str, Any]:
    lat = r.load_stats.pickup_ms
    return {
        "workers": r.n,
        "idle_cpu_fraction": r.idle.cpu_s / r.idle_s,
        "idle_commands_per_s": r.idle.commands / r.idle_s,
        "pickup_p50_ms": pct(lat, 50) if lat else None,
        "pickup_p99_ms": pct(lat, 99) if lat else None,
        "server_pickup_p99_ms": pct(r.server_pickup_ms, 99) if r.server_pickup_ms else None,
        "cpu_us_per_job": r.load.cpu_s * 1e6 / r.jobs,
        "commands_per_job": r.load.commands / r.jobs,
        "wakes_per_job": r.load_stats.wakes / r.jobs,
        "empty_wakes_per_job": r.load_stats.empty_wakes / r.jobs,
        "blpop_timeouts_under_load": r.load_stats.timeouts,
        "jobs": r.jobs,
    }


if __name__ == "__main__":
    raise SystemExit(main())
