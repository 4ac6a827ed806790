"""Simulated workers for ``bench_fleet.py``: one process runs many of them, each a thread
with its own connection that speaks exactly the supervisor's protocol, minus the ML:

    loop: claim_work (the worker's default affinity_ms)
          -> nothing: set_worker_state idle (only when the state changes, as the worker
             writes it), wait_for_work (BLPOP on the runtime's and its own wake list,
             block_s, or the claim's recheck_ms), claim again
          -> a job (the claim marked the worker busy): "run" it (sleep job_ms; renew every
             renew_every_s if it runs that long), finish, claim the next

and, per worker, a full ``heartbeat`` and ``set_loaded_models`` every heartbeat_s and a
``reap`` every reap_every_s, gated so the fleet scans once an interval (the supervisor's
registration thread does these; here one thread per process does it for all of its
workers, each on its own schedule and phase, over one connection).

Each thread counts, per phase of the run (the parent sets the phase): wake-ups (BLPOP
returned a token), wake-ups after which the claim found nothing, BLPOP timeouts, claims
that found nothing, and for every job the pick-up latency: from just before the
submitter's enqueue call (wall clock, written into the request) to claim_work's return.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from _benchlib import worker_heartbeat_fields

from trainyard.connection import connect
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema

__all__ = ["FleetSettings", "PhaseStats", "run_fleet_process"]

RUNTIME = "sklearn"


@dataclass(frozen=True)
class FleetSettings:
    url: str
    namespace: str
    block_s: float = 5.0  # the supervisor's longest idle wait
    heartbeat_s: float = 5.0
    reap_every_s: float = 5.0
    worker_ttl_s: float = 20.0
    lease_s: float = 30.0
    renew_every_s: float = 5.0
    job_ms: float = 10.0  # how long each simulated job "runs"
    affinity_ms: int = 50  # the worker's default
    # The worker refreshes its held models with each heartbeat only while it holds some;
    # the simulated workers hold none (True: a what-if, as if each held models).
    loaded_models_every_beat: bool = False


@dataclass
class PhaseStats:
    wakes: int = 0  # BLPOP returned a token
    empty_wakes: int = 0  # ... and the claim right after found nothing
    timeouts: int = 0  # BLPOP waited block_s and returned nothing
    empty_claims: int = 0
    rechecks: int = 0  # claim_work said: call again after recheck_ms
    jobs: int = 0
    pickup_ms: list[float] = field(default_factory=list)

    def add(self, other: PhaseStats) -> None:
        self.wakes += other.wakes
        self.empty_wakes += other.empty_wakes
        self.timeouts += other.timeouts
        self.empty_claims += other.empty_claims
        self.rechecks += other.rechecks
        self.jobs += other.jobs
        self.pickup_ms.extend(other.pickup_ms)


class _Worker:
    def __init__(self, worker_id: str, s: FleetSettings, phase: Any, stop: Any) -> None:
        self.id = worker_id
        self.s = s
        self.phase = phase  # a shared int: which phase to count into
        self.stop = stop
        self.q = JobQueue(connect(s.url, socket_timeout=s.block_s + 10), KeySchema(s.namespace))
        self.stats: dict[int, PhaseStats] = defaultdict(PhaseStats)
        self.state = "idle"
        self.current_job: str | None = None

    def run(self) -> None:
        s, q = self.s, self.q
        lease_ms = int(s.lease_s * 1000)
        # Workers of a real fleet started at different times: spread the first wait.
        wait_s = random.uniform(0.05, s.block_s)
        woke = False
        while not self.stop.is_set():
            result = q.claim_work(
                self.id, [RUNTIME], lease_ms, loaded_models=(), affinity_ms=s.affinity_ms,
                holder_ttl_ms=int(s.worker_ttl_s * 1000),
            )  # fmt: skip
            stats = self.stats[self.phase.value]
            claim = result.claim
            if claim is None:
                if self.current_job is not None or self.state != "idle":
                    self._set_state("idle", None)  # only when it changes, as the worker does
                stats.empty_claims += 1
                if woke:
                    stats.empty_wakes += 1
                if result.recheck_ms is not None:
                    stats.rechecks += 1
                    wait_s = min(wait_s, result.recheck_ms / 1000)
                woke = q.wait_for_work([RUNTIME], max(wait_s, 0.001), worker_id=self.id)
                stats = self.stats[self.phase.value]
                if woke:
                    stats.wakes += 1
                else:
                    stats.timeouts += 1
                wait_s = s.block_s
                continue
            woke = False
            picked = time.time()
            submitted = json.loads(claim.job["request"]).get("t")
            if submitted is not None:
                stats.pickup_ms.append((picked - float(submitted)) * 1000)
            stats.jobs += 1
            self.state, self.current_job = "busy", claim.job_id  # the claim wrote it
            self._run_job(claim.job_id, claim.attempt_id)
            q.finish(claim.job_id, claim.attempt_id, "succeeded", result={"ok": True})

    def _set_state(self, state: str, job_id: str | None) -> None:
        self.state, self.current_job = state, job_id
        self.q.set_worker_state(self.id, state, job_id)

    def _run_job(self, job_id: str, attempt_id: str) -> None:
        left = self.s.job_ms / 1000
        while left > 0:
            step = min(left, self.s.renew_every_s)
            time.sleep(step)
            left -= step
            if left > 0:
                self.q.renew(job_id, attempt_id, int(self.s.lease_s * 1000))


def _beats(workers: list[_Worker], s: FleetSettings, stop: Any) -> None:
    """Every worker's heartbeat (full) and reap, each on its own schedule and phase."""
    beat = JobQueue(connect(s.url), KeySchema(s.namespace))
    ttl_ms = int(s.worker_ttl_s * 1000)
    now = time.monotonic()
    due: list[tuple[float, int, str]] = []
    for i in range(len(workers)):
        due.append((now + random.uniform(0, s.heartbeat_s), i, "beat"))
        if s.reap_every_s > 0:  # 0: this fleet never reaps (a what-if)
            due.append((now + random.uniform(0, s.reap_every_s), i, "reap"))
    heapq.heapify(due)
    while not stop.is_set() and due:
        at, i, what = due[0]
        if stop.wait(max(0.0, at - time.monotonic())):
            break
        heapq.heappop(due)
        w = workers[i]
        if what == "beat":  # registration._loop: the heartbeat, then the loaded models
            beat.heartbeat(w.id, worker_heartbeat_fields(w.state, w.current_job), ttl_ms)
            if s.loaded_models_every_beat:
                beat.set_loaded_models(w.id, RUNTIME, [], ttl_ms)
            heapq.heappush(due, (at + s.heartbeat_s, i, what))
        else:
            beat.reap(every_ms=int(s.reap_every_s * 900))  # one scan a fleet interval
            heapq.heappush(due, (at + s.reap_every_s, i, what))


def run_fleet_process(
    worker_ids: list[str], s: FleetSettings, phase: Any, stop: Any, results: Any
) -> None:
    """A process of the fleet: registers its workers, runs them until ``stop``, then puts
    ``{phase: PhaseStats}`` summed over its workers on ``results``."""
    thread_stop = threading.Event()
    workers = [_Worker(wid, s, phase, thread_stop) for wid in worker_ids]
    reg = JobQueue(connect(s.url), KeySchema(s.namespace))
    for w in workers:  # registered before the first claim, as the supervisor does
        reg.heartbeat(w.id, worker_heartbeat_fields("idle", None), int(s.worker_ttl_s * 1000))
    reg.redis.close()
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    threads.append(threading.Thread(target=_beats, args=(workers, s, thread_stop), daemon=True))
    for t in threads:
        t.start()
    stop.wait()
    thread_stop.set()
    total: dict[int, PhaseStats] = defaultdict(PhaseStats)
    for w in workers:
        for ph, st in list(w.stats.items()):
            total[ph].add(st)
    results.put(dict(total))
    # Threads blocked in BLPOP end with the process (daemon threads).
