"""Trainyard's engine against its peers, Dramatiq and taskiq, and raw redis-py as the floor,
in one run on one private Valkey.

    ./bench/run.sh bench_peers.py [--jobs 5000] [--samples 300] [--repeat 3]

bench/run.sh builds the bench-only environment (bench/pyproject.toml, bench/uv.lock) outside
the clone on first use. The script starts its own embedded Valkey (AOF, appendfsync
everysec, as shipped) and measures, for every system, with one consumer process each:

  enqueue        single submits from one client, jobs/s
  batch submit   bulk submits (Trainyard enqueue_many; raw pipelined redis-py; the peers
                 have no bulk API), jobs/s
  drain          one consumer process works through a full queue of no-op jobs, jobs/s,
                 from the first job's start to the last job's stored result
  round trip     submit one job, wait for its result (Trainyard: the backend's ?wait= way;
                 peers: their result backends), one at a time: p50 / p99 ms

and what each job costs the server: round trips from the clients (counted in redis-py),
commands the server ran (INFO commandstats, commands inside Lua scripts included) and the
server's CPU time (INFO used_cpu_user + used_cpu_sys). Each phase starts on an empty server.
With --repeat N every measure is the median of N runs, the systems interleaved. Then a
breakdown of Trainyard's per-job calls, one call type at a time. Nothing asserts on these
numbers; the targets of issue 9 are printed next to them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from _benchlib import (
    RoundTripCounter,
    ServerDelta,
    ServerSnapshot,
    hiredis_in_use,
    machine_load,
    median,
    pct,
    print_table,
)
from _peer_systems import SYSTEMS, WHATIFS, ConsumerReport, Options, consume, make_submitter
from _trainyard_breakdown import breakdown

from trainyard.embedded import EmbeddedServer

PEERS = ("dramatiq", "taskiq-list", "taskiq-stream")
Metrics = dict[str, dict[str, float]]  # system -> metric -> value


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        self.admin = redis.Redis.from_url(url, decode_responses=True)
        self.ctx = mp.get_context("spawn")

    def options(self, system: str, phase: str) -> Options:
        return Options(
            url=self.url,
            tag=f"{system}-{phase}-{uuid.uuid4().hex[:6]}",
            results=self.args.peer_results == "on",
            dramatiq_threads=self.args.dramatiq_threads,
            taskiq_poll_s=self.args.taskiq_poll_ms / 1000,
        )

    def _costs(
        self, out: dict[str, float], phase: str, delta: ServerDelta, rts: int, n: int
    ) -> None:
        out[f"{phase} round trips/job"] = rts / n
        out[f"{phase} server commands/job"] = delta.commands / n
        out[f"{phase} scripts/job"] = delta.script_calls / n
        out[f"{phase} server CPU us/job"] = delta.cpu_s * 1e6 / n

    def _measured(self, fn: Callable[[], None]) -> tuple[float, ServerDelta, int]:
        before, rt0 = ServerSnapshot.take(self.admin), RoundTripCounter.read()[0]
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        delta = ServerSnapshot.take(self.admin).since(before)
        return took, delta, RoundTripCounter.read()[0] - rt0

    def enqueue(self, system: str, out: dict[str, float]) -> None:
        n = self.args.jobs
        sub = make_submitter(system, self.options(system, "enq"))
        sub.enqueue(min(50, n))  # warm: connections, scripts loaded
        took, delta, rts = self._measured(lambda: sub.enqueue(n))
        sub.close()
        out["enqueue jobs/s"] = n / took
        self._costs(out, "enqueue", delta, rts, n)
        self.admin.flushall()

    def batch(self, system: str, out: dict[str, float]) -> None:
        n, chunk = self.args.jobs, self.args.batch
        sub = make_submitter(system, self.options(system, "batch"))
        supported = sub.batch(min(chunk, 50), chunk)  # warm
        if supported:
            took, delta, rts = self._measured(lambda: sub.batch(n, chunk))
            out["batch jobs/s"] = n / took
            self._costs(out, "batch", delta, rts, n)
        if system == "raw":
            took, delta, rts = self._measured(lambda: sub.batch_record(n, chunk))
            out["batch (record) jobs/s"] = n / took
        sub.close()
        self.admin.flushall()

    def _consumer(self, system: str, opts: Options, n: int) -> tuple[Any, Any]:
        reports = self.ctx.Queue()
        proc = self.ctx.Process(target=consume, args=(system, opts, n, reports), daemon=True)
        proc.start()
        return proc, reports

    def _report(self, proc: Any, reports: Any, timeout_s: float = 300) -> ConsumerReport:
        try:
            report: ConsumerReport = reports.get(timeout=timeout_s)
        except queue.Empty:
            proc.kill()
            raise RuntimeError(f"consumer gave no report within {timeout_s:.0f} s") from None
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return report

    def drain(self, system: str, out: dict[str, float]) -> None:
        n = self.args.jobs
        opts = self.options(system, "drain")
        sub = make_submitter(system, opts)
        sub.prefill(n)
        sub.close()
        before = ServerSnapshot.take(self.admin)
        proc, reports = self._consumer(system, opts, n)
        report = self._report(proc, reports)
        delta = ServerSnapshot.take(self.admin).since(before)
        out["drain jobs/s"] = n / (report.last_s - report.first_s)
        self._costs(out, "drain", delta, report.round_trips, n)
        out["hiredis"] = float(report.hiredis)
        self.admin.flushall()

    def round_trip(self, system: str, out: dict[str, float]) -> None:
        if system in PEERS and self.args.peer_results == "off":
            return  # a peer without its result backend has no result to wait for
        samples, warmup = self.args.samples, self.args.warmup
        opts = self.options(system, "rt")
        sub = make_submitter(system, opts)
        proc, reports = self._consumer(system, opts, warmup + samples)
        for _ in range(warmup):  # the first waits for the consumer process to start
            sub.round_trip()
        # Variants of the submitter's wait (Trainyard: the backend's way and a leaner one)
        # take turns, against the same consumer.
        variants = getattr(sub, "round_trip_variants", lambda: {"": sub.round_trip})()
        times: dict[str, list[float]] = {name: [] for name in variants}
        cycle = list(variants.items())

        def run() -> None:
            for i in range(samples):
                name, fn = cycle[i % len(cycle)]
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)

        _, delta, rts = self._measured(run)
        report = self._report(proc, reports)
        sub.close()
        for name, values in times.items():
            out[f"round trip p50 ms{name}"] = pct(values, 50)
            out[f"round trip p99 ms{name}"] = pct(values, 99)
        # The consumer's round trips cover the warm-up too: per job over all its jobs.
        per_job = rts / samples + report.round_trips / report.jobs
        self._costs(out, "round trip", delta, round(per_job * samples), samples)
        self.admin.flushall()


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summarize(runs: list[Metrics], systems: list[str]) -> Metrics:
    merged: Metrics = defaultdict(dict)
    for system in systems:
        names = {m for run in runs for m in run.get(system, {})}
        for name in names:
            merged[system][name] = median([r[system][name] for r in runs if name in r[system]])
    return merged


def report(m: Metrics, systems: list[str], args: argparse.Namespace) -> None:
    peers = [s for s in systems if s in PEERS]

    def get(system: str, metric: str) -> float | None:
        return m.get(system, {}).get(metric)

    def best(metric: str, higher: bool) -> tuple[float | None, str]:
        vals = [(v, s) for s in peers if (v := get(s, metric)) is not None]
        if not vals:
            return None, "-"
        return max(vals) if higher else min(vals)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    # metric, higher is better, target text, the ratio judged ("best" or "raw"), bound
    spec: list[tuple[str, bool, str, str, float]] = [
        ("drain jobs/s", True, "ty/best >= 2", "best", 2.0),
        ("enqueue jobs/s", True, "ty/best >= 1.5", "best", 1.5),
        ("batch jobs/s", True, "ty/raw >= 0.5", "raw", 0.5),
        ("round trip p50 ms", False, "ty/raw <= 2", "raw", 2.0),
        ("round trip p99 ms", False, "", "", 0.0),
        ("round trip p50 ms, terminal-event wait", False, "(ty/raw)", "", 0.0),
        ("round trip p99 ms, terminal-event wait", False, "", "", 0.0),
    ]
    rows: list[list[str]] = []
    for metric, higher, target, against, bound in spec:
        ty, raw = get("trainyard", metric), get("raw", metric.split(",")[0])
        if ty is None and all(get(s, metric) is None for s in systems):
            continue
        fmt = _fmt_rate if higher else _fmt_num
        bp, who = best(metric.split(",")[0], higher)
        judged = ratio(ty, bp if against == "best" else raw)
        verdict = ""
        if against and judged is not None:
            verdict = "met" if (judged >= bound if higher else judged <= bound) else "MISSED"
        rows.append([
            metric, *[fmt(get(s, metric)) for s in systems],
            f"{fmt(bp)} ({who})" if bp is not None else "-",
            _fmt_num(ratio(ty, bp)), _fmt_num(ratio(ty, raw)), target, verdict,
        ])  # fmt: skip
    rec = get("raw", "batch (record) jobs/s")
    if rec is not None:
        rows.append([
            "batch, raw writing a record", *["" for _ in systems[:-1]], _fmt_rate(rec), "", "",
            _fmt_num(ratio(get("trainyard", "batch jobs/s"), rec)), "(HSET+ZADD+LPUSH/job)", "",
        ])  # fmt: skip
    header = ["measure", *systems, "best peer", "ty/best", "ty/raw", "target", ""]
    print_table(header, rows, fmt=str)

    print("\nwhat one job costs (server commands include those run inside scripts)")
    cost_rows = []
    for phase in ("enqueue", "batch", "drain", "round trip"):
        for what in ("round trips", "server commands", "scripts", "server CPU us"):
            metric = f"{phase} {what}/job"
            if any(get(s, metric) is not None for s in systems):
                cost_rows.append([metric, *[_fmt_num(get(s, metric)) for s in systems]])
    print_table(["per job", *systems], cost_rows, fmt=str)

    whatifs = [w for w in m if w not in systems]
    if whatifs:
        bp, who = best("drain jobs/s", True)
        print("\ndrain what-ifs: Trainyard's loop with fewer round trips (same server, same run)")
        wrows = []
        for system in ["trainyard", *whatifs]:
            rate = get(system, "drain jobs/s")
            wrows.append([
                system, _fmt_rate(rate), _fmt_num(ratio(rate, bp)),
                _fmt_num(get(system, "drain round trips/job")),
                _fmt_num(get(system, "drain server commands/job")),
                _fmt_num(get(system, "drain server CPU us/job")),
            ])  # fmt: skip
        print_table(
            ["loop", "drain jobs/s", f"x best peer ({who})", "round trips/job",
             "server cmds/job", "server CPU us/job"],
            wrows, fmt=str,
        )  # fmt: skip
        print(
            "  trainyard-lean: claim_work + finish, no state write (as if claim wrote "
            "busy)\n  trainyard-fused: finish + the next claim in one pipeline (as a "
            "finish-and-claim script would be), no state write"
        )
    hiredis = {s: bool(get(s, "hiredis")) for s in m if get(s, "hiredis") is not None}
    print(f"\nhiredis in every consumer: {all(hiredis.values())}; "
          f"in the submitter: {hiredis_in_use()}")  # fmt: skip
    print(
        f"peer results {'stored' if args.peer_results == 'on' else 'off'} (Trainyard always "
        f"keeps one); dramatiq worker threads {args.dramatiq_threads}; taskiq wait_result "
        f"check interval {args.taskiq_poll_ms} ms; jobs {args.jobs}, round trips "
        f"{args.samples} (+{args.warmup} warm-up), batch {args.batch}, repeats {args.repeat}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per enqueue/batch/drain")
    parser.add_argument("--samples", type=int, default=300, help="timed round trips")
    parser.add_argument("--warmup", type=int, default=30, help="untimed round trips first")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per bulk submit")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument(
        "--phases", default="enqueue,batch,drain,roundtrip,breakdown", help="comma-separated"
    )
    parser.add_argument("--peer-results", choices=("on", "off"), default="on")
    parser.add_argument("--dramatiq-threads", type=int, default=8)
    parser.add_argument("--taskiq-poll-ms", type=float, default=1.0)
    parser.add_argument(
        "--no-whatif",
        dest="whatif",
        action="store_false",
        help="skip the drain what-ifs (Trainyard loops with fewer round trips)",
    )
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)} (known: {', '.join(SYSTEMS)})")
    phases = [p for p in args.phases.split(",") if p]

    RoundTripCounter.install()
    began = time.perf_counter()
    print(f"machine: {machine_load()}; python {sys.version.split()[0]}", flush=True)
    runs: list[Metrics] = []
    with (
        tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp,
        EmbeddedServer(Path(tmp), appendfsync="everysec") as server,
    ):
        print(f"embedded Valkey on {server.url} (AOF, appendfsync everysec)", flush=True)
        bench = Bench(server.url, args)
        steps = {
            "enqueue": bench.enqueue,
            "batch": bench.batch,
            "drain": bench.drain,
            "roundtrip": bench.round_trip,
        }
        for rep in range(args.repeat):
            metrics: Metrics = defaultdict(dict)
            for phase in phases:
                if phase not in steps:
                    continue
                # Rotate the order each repeat so no system always runs first.
                order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
                if phase == "drain" and args.whatif and "trainyard" in systems:
                    order = order + list(WHATIFS)
                for system in order:
                    steps[phase](system, metrics[system])
                print(f"  repeat {rep + 1}/{args.repeat}: {phase} done", flush=True)
            runs.append(metrics)
        print(f"\n{machine_load()} at the end\n")
        all_systems = systems + [w for w in WHATIFS if any(w in r for r in runs)]
        report(summarize(runs, all_systems), systems, args)
        if "breakdown" in phases and "trainyard" in systems:
            breakdown(server.url, min(args.jobs, 2000))
    print(f"\ntotal bench time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
