"""One fault run: a mixed stream of jobs submitted over HTTP while faults strike at random
moments, then (once every acknowledged job has ended) the invariants. A run with a batch
fault (``kill9_batch``) sends a burst of inference jobs for one model instead, in waves
of concurrent requests, so that workers claim them as batches.

A ``Session`` is one system (server, backend, workers of one runtime) that serves several
runs in a row: starting it (and training the model the inference jobs use) costs more
than a short run, and a system that has already been through faults is the harder test.
Every run's jobs are checked again when the session ends: nothing a later fault did may
change an earlier job's end.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from harness import WORKER_ENV, Pythons, System
from injectors import BATCH_FAULTS, FAULT_KINDS, Fault, Injector
from invariants import Findings, check_run, index_problems, read_ledger, terminal_snapshot
from workload import Client, JobPlan, base_model_plan, burst_plans, dl_plans, sklearn_plans

from trainyard.engine import JobQueue
from trainyard.types import TERMINAL_STATES

__all__ = ["RunResult", "RunSpec", "Session"]

TERMINAL = {str(s) for s in TERMINAL_STATES}
DL_FAULTS = ("kill9_child", "kill9_supervisor")
BURST_WAVE = 6  # concurrent requests per wave of a burst
WORKER_EXITS = ("kill9_supervisor", "kill9_batch", "sigterm_worker")  # faults a worker ends by


@dataclass(frozen=True)
class RunSpec:
    # One of FAULT_KINDS or BATCH_FAULTS (``faults`` times), "mixed" (``faults`` drawn at
    # random from FAULT_KINDS), "dl" (DL_FAULTS), or kinds joined by "+" (each once, in
    # that order). With a batch fault the run sends a burst (``burst_plans``).
    kind: str
    seed: int
    jobs: int
    faults: int


@dataclass
class RunResult:
    spec: RunSpec
    runtime: str
    jobs: int
    faults: list[Fault]
    findings: Findings
    wall_s: float
    client: dict[str, int] = field(default_factory=dict)

    @property
    def injected(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults if not f.missed)

    @property
    def violations(self) -> list[str]:
        return self.findings.violations


class Session:
    """A system of ``workers`` workers of ``runtime`` for a series of runs."""

    def __init__(
        self,
        root: Path,
        pythons: Pythons,
        data_root: Path,
        runtime: str,
        workers: int,
        canary: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.workers = workers
        self.system = System(root, pythons, data_root, canary=canary)
        self.lease_s = float(WORKER_ENV["LEASE_S"])
        self.deep = runtime != "sklearn"
        self.base_model = f"base-{root.name}"
        self.snapshots: dict[str, dict[str, str]] = {}
        self.plans: list[JobPlan] = []
        self._runs = 0
        self._expected_exits: set[str] = set()

    def start(self) -> None:
        self.system.start({self.runtime: self.workers})
        if not self.deep:
            client = Client(self.system.base_url)
            try:
                base = base_model_plan(self.base_model)
                client.submit(base)
            finally:
                client.close()
            queue = self.system.queue()
            done = _wait(lambda: (queue.get_job(str(base.job_id)) or {}).get("state") in TERMINAL,
                         120)  # fmt: skip
            job = queue.get_job(str(base.job_id)) or {}
            if not done or job.get("state") != "succeeded":
                raise RuntimeError(f"the base model did not train: {job.get('error')}")

    def close(self) -> None:
        self.system.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one run -------------------------------------------------------------------------

    def run(self, spec: RunSpec) -> RunResult:
        started = time.monotonic()
        self._runs += 1
        name = f"{self.system.root.name}-{self._runs}"
        rng = random.Random(spec.seed)
        burst = not self.deep and any(k in BATCH_FAULTS for k in spec.kind.split("+"))
        if self.deep:
            plans = dl_plans(rng, name, self.runtime, spec.jobs)
        elif burst:
            plans = burst_plans(rng, name, spec.jobs, self.base_model)
        else:
            plans = sklearn_plans(rng, name, spec.jobs, self.base_model)
        kinds = self._fault_kinds(spec, rng)
        injector = Injector(self.system, random.Random(rng.random()), self.lease_s,
                            target_wait_s=120 if self.deep else 20)  # fmt: skip
        submit_rng, fault_rng = random.Random(rng.random()), random.Random(rng.random())
        client = Client(self.system.base_url)
        errors: list[str] = []
        faults: list[Fault] = []
        stop_watching = threading.Event()
        snapshots: dict[str, dict[str, str]] = {}
        watching = threading.Event()  # the first fault is being injected

        cancellers: list[threading.Thread] = []

        def submit_all() -> None:
            for plan in plans:
                time.sleep(submit_rng.uniform(0.1, 1.2))
                try:
                    client.submit(plan)
                    if plan.cancel == "queued":
                        plan.cancel_status = client.cancel(str(plan.job_id))
                except RuntimeError as exc:  # no answer within the client's patience
                    errors.append(str(exc))
                    continue
                if plan.cancel == "running":
                    cancellers.append(_thread(self._canceller(client, plan), errors))
                    cancellers[-1].start()

        def submit_burst() -> None:
            """Waves of concurrent requests, once the injector looks for a batch."""
            watching.wait(60)
            for start in range(0, len(plans), BURST_WAVE):
                time.sleep(submit_rng.uniform(0.3, 1.0))
                wave = [_thread(self._submitter(plan, client.stats), errors)
                        for plan in plans[start : start + BURST_WAVE]]  # fmt: skip
                for thread in wave:
                    thread.start()
                for thread in wave:
                    thread.join()

        def inject_all() -> None:
            time.sleep(fault_rng.uniform(2, 8) if self.deep else fault_rng.uniform(0.3, 2.5))
            watching.set()
            for kind in kinds:
                fault = injector.inject(kind)
                faults.append(fault)
                if kind in WORKER_EXITS and fault.worker_id:
                    self._expected_exits.add(fault.worker_id)
                time.sleep(fault_rng.uniform(0.5, 3.0))

        watcher = _thread(lambda: self._watch(plans, snapshots, stop_watching), errors)
        watcher.start()
        threads = [_thread(submit_burst if burst else submit_all, errors),
                   _thread(inject_all, errors)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Every acknowledged job must end (bounded: a stuck job is a finding, not a hang).
        acked = [p for p in plans if p.job_id]
        limit = 300 if self.deep else 150
        ended = _wait(lambda: all(p.job_id in snapshots for p in acked), limit)
        stop_watching.set()
        for thread in [watcher, *cancellers]:
            thread.join()
        findings = Findings()
        for error in errors:
            findings.add(f"harness: {error}")
        if not ended:
            findings.add(f"jobs still not ended after {limit}s: "
                         f"{[p.job_id for p in acked if p.job_id not in snapshots]}")  # fmt: skip
        # Quiet: no training child left behind by any attempt.
        if not _wait(lambda: not self.system.child_pids(), 30):
            findings.add(f"training children still running after the run: "
                         f"{self.system.child_pids()}")  # fmt: skip
        self._check_workers(findings)
        queue = self.system.queue()
        try:
            result = check_run(queue, acked, read_ledger(self.system.ledger), faults, snapshots,
                               self.system.model_store)  # fmt: skip
        finally:
            queue.redis.close()
            client.close()
        findings.violations.extend(result.violations)
        findings.counts.update(result.counts)
        findings.counts.update({f"client_{k}": n for k, n in client.stats.items()})
        self.snapshots.update(snapshots)
        self.plans.extend(acked)
        self._top_up()
        return RunResult(spec, self.runtime, len(acked), faults, findings,
                         time.monotonic() - started, dict(client.stats))  # fmt: skip

    def _fault_kinds(self, spec: RunSpec, rng: random.Random) -> list[str]:
        if spec.kind == "dl":
            return list(DL_FAULTS)
        if spec.kind == "mixed":
            return [rng.choice(FAULT_KINDS) for _ in range(spec.faults)]
        if "+" in spec.kind:
            return spec.kind.split("+")
        return [spec.kind] * spec.faults

    def _submitter(self, plan: JobPlan, stats: dict[str, int]) -> Callable[[], None]:
        """Submit one plan on a client of its own (a burst's requests run at once)."""

        def submit() -> None:
            client = Client(self.system.base_url)
            try:
                client.submit(plan)
            finally:
                client.close()
                for name, count in client.stats.items():
                    stats[name] = stats.get(name, 0) + count

        return submit

    def _canceller(self, client: Client, plan: JobPlan) -> Callable[[], None]:
        return lambda: self._cancel_when_running(client, plan)

    def _cancel_when_running(self, client: Client, plan: JobPlan) -> None:
        queue = self.system.queue()
        try:
            state = ""

            def started() -> bool:
                nonlocal state
                state = _state(queue, str(plan.job_id))
                return state == "running" or state in TERMINAL

            if _wait(started, 60) and state == "running":
                plan.cancel_status = client.cancel(str(plan.job_id))
        finally:
            queue.redis.close()

    def _watch(
        self, plans: list[JobPlan], snapshots: dict[str, dict[str, str]], stop: threading.Event
    ) -> None:
        """Records each job's record when it is first seen terminal (to prove later that
        it never changed); rides out server restarts."""
        queue = self.system.queue()
        try:
            while True:
                last = stop.is_set()
                pending = [p.job_id for p in plans if p.job_id and p.job_id not in snapshots]
                try:
                    for job_id, job in zip(pending, _get_jobs(queue, pending), strict=True):
                        if job.get("state") in TERMINAL:
                            snapshots[job_id] = terminal_snapshot(job)
                except redis.RedisError:
                    pass
                if last:
                    return
                stop.wait(0.1)
        finally:
            queue.redis.close()

    def _check_workers(self, findings: Findings) -> None:
        for worker in self.system.workers:
            if worker.alive() or worker.worker_id in self._expected_exits:
                continue
            self._expected_exits.add(worker.worker_id)  # reported once
            tail = worker.log.read_text(errors="replace")[-2000:]
            findings.add(f"worker {worker.worker_id} exited by itself "
                         f"({worker.process.returncode}):\n{tail}")  # fmt: skip
        if self.system.backend is None or self.system.backend.poll() is not None:
            findings.add("the backend exited by itself")
            self.system.start_backend()

    def _top_up(self) -> None:
        """Faults replace the workers they take; make sure the next run starts with all."""
        missing = self.workers - len(self.system.live(self.runtime))
        for _ in range(max(0, missing)):
            self.system.start_worker(self.runtime, wait=True, timeout_s=90)

    # -- the whole session ---------------------------------------------------------------

    def final_check(self) -> list[str]:
        """Every job of every run still ends as it was first seen ending, and the indexes
        agree, after all the faults of the later runs."""
        queue = self.system.queue()
        problems = []
        try:
            ids = [str(p.job_id) for p in self.plans]
            for job_id, job in zip(ids, _get_jobs(queue, ids), strict=True):
                if not job:
                    problems.append(f"{job_id}: LOST by the end of the session")
                elif job_id in self.snapshots and terminal_snapshot(job) != self.snapshots[job_id]:
                    problems.append(f"{job_id}: its terminal record changed in a later run")
            problems.extend(f"index: {p}" for p in index_problems(queue))
        finally:
            queue.redis.close()
        return problems


def _get_jobs(queue: JobQueue, ids: list[str]) -> list[dict[str, str]]:
    """The records of ``ids``, in order (an empty dict for a missing one)."""
    pipe = queue.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(queue.keys.job(job_id))
    return list(pipe.execute())


def _state(queue: JobQueue, job_id: str) -> str:
    try:
        return (queue.get_job(job_id) or {}).get("state", "")
    except redis.RedisError:
        return ""


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return True
        except redis.RedisError:
            pass  # a server restart in progress: ask again
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _thread(target: Callable[[], None], errors: list[str]) -> threading.Thread:
    """A thread whose exception becomes a finding instead of vanishing."""

    def body() -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")

    return threading.Thread(target=body, daemon=True)
