"""The faults, each injected into a running system at a moment the run's seeded RNG picks:
signals to real processes and restarts of real servers. Each returns a ``Fault`` that says
what it hit (so the checks can follow that job's attempt through the ledger), or that it
found nothing to hit in time (``missed``: not counted as injected).

``FAULT_KINDS`` are the faults any run may draw; ``kill9_batch`` (kill -9 of a supervisor
that holds an inference batch) needs a burst of inference jobs to find its target, so
only the runs that send one use it (``BATCH_FAULTS``)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from harness import WORKER_ENV, System, WorkerProc, inference_hosts, pid_alive, process_state

from trainyard.engine import JobQueue

__all__ = ["BATCH_FAULTS", "FAULT_KINDS", "Fault", "Injector"]

FAULT_KINDS = (
    "kill9_supervisor",
    "kill9_child",
    "sigterm_worker",
    "restart_redis",
    "restart_backend",
    "sigstop_supervisor",
)
BATCH_FAULTS = ("kill9_batch",)


@dataclass
class Fault:
    kind: str
    at: float  # time.monotonic() when it struck: the ledger's clock
    missed: str | None = None  # why nothing was hit
    job_id: str | None = None
    attempt_id: str | None = None
    worker_id: str | None = None
    detail: str = ""
    problems: list[str] = field(default_factory=list)  # what went wrong while injecting
    # kill9_batch: every (job_id, attempt_id) the killed supervisor held
    batch: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.kind if not self.detail else f"{self.kind}({self.detail})"


@dataclass
class _Target:
    job_id: str
    attempt_id: str
    worker: WorkerProc
    children: list[int]


class Injector:
    """Finds targets in ``system`` and strikes them; ``lease_s`` bounds the waits."""

    def __init__(self, system: System, rng: random.Random, lease_s: float, target_wait_s: float):
        self.system = system
        self.rng = rng
        self.lease_s = lease_s
        self.target_wait_s = target_wait_s
        self._queue: JobQueue | None = None

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = self.system.queue()
        return self._queue

    def inject(self, kind: str) -> Fault:
        strike: Callable[[], Fault] = getattr(self, f"_{kind}")
        return strike()

    # -- finding a target ----------------------------------------------------------------

    def _running(self, training_only: bool, need_child: bool) -> list[_Target]:
        """Jobs running right now, each with its live worker (and its training child)."""
        by_id = {w.worker_id: w for w in self.system.workers if w.alive()}
        targets = []
        try:
            running = self.queue.redis.zrange(self.queue.keys.index_state("running"), 0, -1)
            jobs = self.queue.get_jobs(str(job_id) for job_id in running)
        except redis.RedisError:
            return []
        for job in jobs:
            worker = by_id.get(job.get("worker_id", ""))
            if job.get("state") != "running" or worker is None:
                continue
            if process_state(worker.pid) == "T":
                continue  # already stopped by another fault
            if training_only and job.get("type") != "training":
                continue
            children = self.system.child_pids(job["id"]) if job.get("type") == "training" else []
            if need_child and not children:
                continue
            targets.append(_Target(job["id"], job.get("attempt_id", ""), worker, children))
        return targets

    def _wait_target(self, training_only: bool, need_child: bool) -> _Target | None:
        deadline = time.monotonic() + self.target_wait_s
        while time.monotonic() < deadline:
            targets = self._running(training_only, need_child)
            if targets:
                return self.rng.choice(sorted(targets, key=lambda t: t.job_id))
            time.sleep(0.1)
        return None

    def _replace(self, worker: WorkerProc, fault: Fault) -> None:
        try:
            self.system.start_worker(worker.runtime, wait=True, timeout_s=90)
        except RuntimeError as exc:
            fault.problems.append(f"the replacement worker did not start: {exc}")

    # -- the faults ----------------------------------------------------------------------

    def _kill9_supervisor(self) -> Fault:
        target = self._wait_target(training_only=False, need_child=False)
        if target is None:
            return Fault("kill9_supervisor", time.monotonic(), missed="no running job")
        fault = Fault("kill9_supervisor", time.monotonic(), job_id=target.job_id,
                      attempt_id=target.attempt_id, worker_id=target.worker.worker_id)  # fmt: skip
        hosts = inference_hosts(target.worker.pid)
        target.worker.process.kill()
        target.worker.process.wait()
        # Its training child and its inference process get SIGKILL from the kernel
        # (PR_SET_PDEATHSIG): no orphan keeps a CPU or a GPU's memory.
        orphans = [*target.children, *hosts]
        if not _until(lambda: not any(pid_alive(p) for p in orphans), 10):
            fault.problems.append(f"the killed worker's children outlived it: {orphans}")
        self._replace(target.worker, fault)
        return fault

    def _batches(self) -> list[tuple[WorkerProc, list[tuple[str, str]]]]:
        """Live, unstopped workers that hold two or more running inference jobs (a batch:
        claim_batch), each with those jobs' (job_id, attempt_id)."""
        by_id = {w.worker_id: w for w in self.system.workers if w.alive()}
        held: dict[str, list[tuple[str, str]]] = {}
        try:
            running = self.queue.redis.zrange(self.queue.keys.index_state("running"), 0, -1)
            jobs = self.queue.get_jobs(str(job_id) for job_id in running)
        except redis.RedisError:
            return []
        for job in jobs:
            if job.get("state") == "running" and job.get("type") == "inference":
                held.setdefault(job.get("worker_id", ""), []).append(
                    (job["id"], job.get("attempt_id", ""))
                )
        return [
            (by_id[worker_id], sorted(pairs))
            for worker_id, pairs in sorted(held.items())
            if len(pairs) > 1 and worker_id in by_id and process_state(by_id[worker_id].pid) != "T"
        ]

    def _kill9_batch(self) -> Fault:
        """kill -9 of a supervisor while it holds an inference batch (its jobs claimed, the
        batch filling or running): every job of it must come back through the reaper (or
        have ended just before) and end exactly once."""
        deadline = time.monotonic() + self.target_wait_s
        found = self._batches()
        while not found and time.monotonic() < deadline:
            time.sleep(0.02)  # a batch lives for its wait and one model call: look often
            found = self._batches()
        if not found:
            return Fault("kill9_batch", time.monotonic(), missed="no worker held a batch")
        worker, batch = self.rng.choice(found)
        hosts = inference_hosts(worker.pid)
        fault = Fault("kill9_batch", time.monotonic(), job_id=batch[0][0],
                      attempt_id=batch[0][1], worker_id=worker.worker_id,
                      detail=f"{len(batch)} jobs", batch=batch)  # fmt: skip
        worker.process.kill()
        worker.process.wait()
        if not _until(lambda: not any(pid_alive(p) for p in hosts), 10):
            fault.problems.append(f"the killed worker's inference process outlived it: {hosts}")
        self._replace(worker, fault)
        return fault

    def _kill9_child(self) -> Fault:
        target = self._wait_target(training_only=True, need_child=True)
        if target is None:
            return Fault("kill9_child", time.monotonic(), missed="no running training child")
        fault = Fault("kill9_child", time.monotonic(), job_id=target.job_id,
                      attempt_id=target.attempt_id, worker_id=target.worker.worker_id)  # fmt: skip
        for pid in target.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # what the OOM killer does
        return fault

    def _sigterm_worker(self) -> Fault:
        target = self._wait_target(training_only=False, need_child=False)
        if target is None:
            return Fault("sigterm_worker", time.monotonic(), missed="no running job")
        fault = Fault("sigterm_worker", time.monotonic(), job_id=target.job_id,
                      attempt_id=target.attempt_id, worker_id=target.worker.worker_id)  # fmt: skip
        target.worker.process.send_signal(signal.SIGTERM)
        try:
            code = target.worker.process.wait(timeout=self.lease_s + 30)
            if code != 0:
                fault.problems.append(f"worker {target.worker.worker_id} exited with {code}")
        except Exception:  # noqa: BLE001  # subprocess.TimeoutExpired
            fault.problems.append(f"worker {target.worker.worker_id} did not exit on SIGTERM")
            target.worker.process.kill()
            target.worker.process.wait()
        self._replace(target.worker, fault)
        return fault

    def _restart_redis(self) -> Fault:
        # Graceful and SIGKILL in turn over the system's life (appendfsync always: see
        # harness.py for why a SIGKILL loses nothing acknowledged).
        self.system.server_restarts += 1
        kill = self.system.server_restarts % 2 == 0
        fault = Fault("restart_redis", time.monotonic(), detail="kill -9" if kill else "SIGTERM")
        self.system.server.stop(kill=kill)
        time.sleep(self.rng.uniform(0, 1.0))  # down for a random moment
        try:
            self.system.server.start(timeout_s=30)
        except RuntimeError as exc:
            fault.problems.append(f"the server did not come back: {exc}")
        return fault

    def _restart_backend(self) -> Fault:
        fault = Fault("restart_backend", time.monotonic(), detail="kill -9")
        self.system.kill_backend()
        time.sleep(self.rng.uniform(0, 1.0))
        try:
            self.system.start_backend(wait=True, timeout_s=60)
        except RuntimeError as exc:
            fault.problems.append(f"the backend did not come back: {exc}")
        return fault

    def _sigstop_supervisor(self) -> Fault:
        """Freeze a supervisor past its lease: another worker reaps the job and reruns it;
        thawed, the old attempt must be refused everything and must kill its child."""
        target = None
        deadline = time.monotonic() + self.target_wait_s
        while target is None and time.monotonic() < deadline:
            target = self._wait_target(training_only=True, need_child=True)
            if target is not None and not any(
                w is not target.worker and w.runtime == target.worker.runtime
                for w in self.system.live()
            ):
                # Nobody else could reap and rerun it: bring in a second worker first.
                self.system.start_worker(target.worker.runtime, wait=True, timeout_s=90)
                target = None
        if target is None:
            return Fault("sigstop_supervisor", time.monotonic(), missed="no running training child")
        worker = target.worker
        fault = Fault("sigstop_supervisor", time.monotonic(), job_id=target.job_id,
                      attempt_id=target.attempt_id, worker_id=worker.worker_id)  # fmt: skip
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            if not _until(lambda: process_state(worker.pid) == "T", 5):
                fault.problems.append("the supervisor did not stop")
            if not self._holds(target):
                # The supervisor ended the attempt itself just before it froze.
                fault.missed = "the job ended before the supervisor stopped"
                return fault
            # Now only the reaper can move the job: wait for it (bounded), not a fixed time.
            if not _until(lambda: not self._holds(target), self.lease_s * 3 + 10):
                fault.problems.append(
                    f"job {target.job_id} was not reaped while its supervisor was stopped"
                )
            ran = "while its child ran"
            if self.rng.random() < 0.5:
                # Frozen until its child ended by itself (its progress report refused, or
                # its training done): thawed, the supervisor's finish must be refused (or
                # not made: a renewal first says the lease is lost).
                if not _until(lambda: not any(pid_alive(p) for p in target.children), 90):
                    fault.problems.append("the stale child did not end while frozen")
                ran = "after its child ended"
            # Thawed once another worker reran the job (bounded: it may be busy), so a
            # write the fence let through would land on the newer attempt.
            rerun = _until(lambda: self._rerun(target), 40)
            fault.detail = f"thawed {ran}" + ("" if rerun else ", before a rerun")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        # Thawed, it must see the lost lease and kill its child (or find it ended).
        grace = float({**WORKER_ENV, **self.system.worker_env}["KILL_GRACE_S"]) + 15
        if not _until(lambda: not any(pid_alive(p) for p in target.children), grace):
            fault.problems.append(
                f"the stale attempt's child {target.children} still runs {grace:g}s after SIGCONT"
            )
        return fault

    def _rerun(self, target: _Target) -> bool:
        """A newer attempt claimed the job (or it ended without one: a cancel)."""
        job = self.queue.get_job(target.job_id) or {}
        return job.get("attempt_id") not in ("", target.attempt_id) or job.get("state") in (
            "cancelled",
            "dead",
            "failed",
            "succeeded",
        )

    def _holds(self, target: _Target) -> bool:
        """Whether the target attempt still holds its job."""
        deadline = time.monotonic() + 60
        while True:
            try:
                job = self.queue.get_job(target.job_id) or {}
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # a server restart: ask again
                continue
            return job.get("state") == "running" and job.get("attempt_id") == target.attempt_id


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
