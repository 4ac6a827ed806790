"""The worker's supervisor: claims jobs, renews their leases, watches cancellation and
timeouts, and runs the work in child processes so that nothing a job does (a crash, an
OOM kill, a hang) can take the worker down or write after it lost the job."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from trainyard.connection import connect
from trainyard.engine import Claim, JobQueue, backoff_ms
from trainyard.keys import KeySchema
from trainyard.routing import MODEL_TYPES
from trainyard.types import FailureKind

from .child import EXIT_USER_ERROR
from .config import WorkerSettings, child_environment
from .gpu import GpuSet, GpuSnapshot
from .inference import InferenceHost
from .processes import LineForwarder, describe_exit, kill_group, spawn_group
from .runtime_check import RuntimeReport
from .runtimes.base import DEVICE_ENV
from .training import TrainingPaths, UnreadableRequest, model_record, read_json, read_request

__all__ = ["Supervisor", "Verdict"]

log = logging.getLogger("trainyard.worker")

_TICK_S = 0.1


class Verdict(enum.Enum):
    """Why the watchdog stopped an attempt before it finished by itself."""

    LOST = "lost"  # the lease is gone: another attempt may own the job now
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    HANDBACK = "handback"  # the worker is shutting down


@dataclass(frozen=True)
class Attempt(Claim):
    """A claimed job as the supervisor runs it."""

    started: float = 0.0  # time.monotonic() at the start
    timeout_s: float | None = None

    @property
    def number(self) -> int:
        return int(self.job["attempt"])


class Supervisor:
    def __init__(
        self, settings: WorkerSettings, report: RuntimeReport, gpus: GpuSet | None = None
    ) -> None:
        self.settings = settings
        self.gpus = gpus  # a GPU runtime's cards; None on a CPU runtime
        self.runtime = report.runtime
        self.framework_version = report.framework_version
        self.packages = report.packages
        keys = KeySchema(settings.trainyard_namespace)
        # Blocking waits (BLPOP) need a socket timeout longer than the block.
        self.queue = JobQueue(
            connect(settings.redis_url, socket_timeout=settings.block_s + 10), keys
        )
        self._beat_queue = JobQueue(connect(settings.redis_url), keys)
        self.state = "idle"
        self.current_job: str | None = None
        self.started_at_ms = 0
        self._stop = threading.Event()  # first SIGTERM/SIGINT: claim nothing more
        self._abort = threading.Event()  # second one: hand the running job back now
        self._stop_since = 0.0
        self._env = child_environment(settings, gpus)
        self.inference = InferenceHost(self.runtime.framework, settings.inference_cache_models,
                                       self._env)  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------

    def _check_gpus(self, before: GpuSnapshot | None, job_id: str) -> None:
        """After a GPU job: its processes gone and its memory free, or the GPU leaves service."""
        if self.gpus is None or before is None:
            return
        dirty = self.gpus.verify_clean(
            before,
            tolerance_mb=self.settings.gpu_memory_tolerance_mb,
            timeout_s=self.settings.gpu_clean_timeout_s,
        )
        for gpu in dirty:
            log.error("GPU taken out of service: %s", gpu.problem,
                      extra=self._ctx(job_id=job_id, gpu=gpu.uuid))  # fmt: skip
        if dirty:
            self._env["CUDA_VISIBLE_DEVICES"] = self.gpus.visible_devices()
            self.inference.kill(self.settings.kill_grace_s)  # restarts with the new set

    def request_stop(self, *_: object) -> None:
        if self._stop.is_set():
            self._abort.set()
        else:
            self._stop_since = time.monotonic()
            self._stop.set()
            log.info("stopping: no new jobs; the running job may finish", extra=self._ctx())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if not self._register():
            return 0  # stopped before Redis ever answered
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info(
            "worker ready",
            extra=self._ctx(runtime=self.runtime.name, framework_version=self.framework_version),
        )
        try:
            while not self._stop.is_set():
                if self.gpus is not None and not self.gpus.in_service:
                    # Every GPU is out of service: stay registered (and reported) but idle.
                    self.state = "no_gpu"
                    self._stop.wait(self.settings.block_s)
                    continue
                try:
                    claim = self.queue.claim(
                        self.settings.worker_id,
                        [self.runtime.name],
                        int(self.settings.lease_s * 1000),
                    )
                    if claim is None:
                        self.queue.wait_for_work([self.runtime.name], self.settings.block_s)
                        continue
                except redis.RedisError as exc:
                    log.warning("queue unavailable: %s", exc, extra=self._ctx())
                    self._stop.wait(1.0)
                    continue
                self._run(claim)
        finally:
            self.inference.close()
            with contextlib.suppress(redis.RedisError):
                self._beat_queue.unregister_worker(self.settings.worker_id)
            log.info("worker stopped", extra=self._ctx())
        return 0

    def _register(self) -> bool:
        """First registration. Redis may not be up yet (a host or a compose stack starting
        in any order): wait for it, saying so, until it answers or the worker is stopped."""
        warned = 0.0
        while not self._stop.is_set():
            try:
                self.started_at_ms = self._beat_queue.server_time_ms()
                self._heartbeat()
                return True
            except redis.RedisError as exc:
                if time.monotonic() - warned > 10:
                    warned = time.monotonic()
                    # Not the URL: it may carry a password.
                    log.warning("waiting for the queue (Redis): %s", exc, extra=self._ctx())
                self._stop.wait(1.0)
        return False

    def _heartbeat(self) -> None:
        fields = {
            "runtime": self.runtime.name,
            "framework": self.runtime.framework,
            "framework_version": self.framework_version,
            "packages": json.dumps(self.packages),
            "device": self.runtime.device,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": "draining" if self._stop.is_set() else self.state,
            "current_job": self.current_job or "",
            "loaded_models": json.dumps(self.inference.loaded),
            "gpus": json.dumps(self.gpus.describe() if self.gpus else []),
            "started_at": self.started_at_ms,
        }
        self._beat_queue.heartbeat(
            self.settings.worker_id, fields, int(self.settings.worker_ttl_s * 1000)
        )

    def _heartbeat_loop(self) -> None:
        next_reap = 0.0
        while not self._abort.wait(self.settings.heartbeat_s):
            try:
                self._heartbeat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.settings.reap_every_s
                    for job_id, state in self._beat_queue.reap():
                        log.warning(
                            "reaped a job whose lease expired",
                            extra=self._ctx(job_id=job_id, new_state=state),
                        )
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc, extra=self._ctx())
            if self._stop.is_set() and self.current_job is None:
                return

    def _ctx(self, **fields: Any) -> dict[str, Any]:
        return {"fields": {"worker_id": self.settings.worker_id, **fields}}

    # -- one job -----------------------------------------------------------------------

    def _run(self, claim: Claim) -> None:
        job = claim.job
        timeout = float(job["timeout_s"]) if job.get("timeout_s") else None
        attempt = Attempt(job=job, started=time.monotonic(), timeout_s=timeout)
        self._set_state("busy", attempt.job_id)
        log.info(
            "job started",
            extra=self._ctx(job_id=attempt.job_id, attempt=attempt.number, job_type=job["type"]),
        )
        try:
            request = read_request(job)
        except UnreadableRequest as exc:
            # Not a fault of this worker: no worker could run it, so it is not retried.
            self._finish(attempt, "failed", error=str(exc), error_kind=FailureKind.USER_ERROR)
            self._set_state("idle", None)
            return
        try:
            if job["type"] == "training":
                self._run_training(attempt, request)
            else:
                self._run_inference(attempt, request)
        except Exception as exc:  # a supervisor-side fault must not lose the job
            log.exception("job failed inside the worker", extra=self._ctx(job_id=attempt.job_id))
            self._finish(
                attempt,
                "retry",
                error=f"worker error: {type(exc).__name__}: {exc}",
                error_kind=FailureKind.INFRASTRUCTURE,
            )
        finally:
            self._set_state("idle", None)

    def _set_state(self, state: str, job_id: str | None) -> None:
        """Record and publish at once, so GET /workers is not a heartbeat behind."""
        self.state, self.current_job = state, job_id
        with contextlib.suppress(redis.RedisError):
            self._heartbeat()

    def _watch(
        self, attempt: Attempt, done: Callable[[], bool], kill: Callable[[], None]
    ) -> Verdict | None:
        """Wait for ``done()``, renewing the lease; stop the work (``kill``) on a lost
        lease, a cancel, the run timeout or a shutdown. None: it finished by itself."""
        next_renew = time.monotonic() + self.settings.renew_every_s
        next_cancel_check = time.monotonic() + self.settings.cancel_poll_s
        while not done():
            now = time.monotonic()
            verdict = None
            if now >= next_cancel_check and now < next_renew:
                # Between renewals (which also report the flag) a cheap read keeps a cancel
                # from waiting a whole renewal interval.
                next_cancel_check = now + self.settings.cancel_poll_s
                with contextlib.suppress(redis.RedisError):
                    if self.queue.cancel_requested(attempt.job_id):
                        verdict = Verdict.CANCELLED
            if now >= next_renew:
                next_renew = now + self.settings.renew_every_s
                try:
                    renewal = self.queue.renew(
                        attempt.job_id, attempt.attempt_id, int(self.settings.lease_s * 1000)
                    )
                    if not renewal.held:
                        verdict = Verdict.LOST
                    elif renewal.cancel_requested:
                        verdict = Verdict.CANCELLED
                except redis.RedisError as exc:
                    # Keep working; if the lease runs out meanwhile the next renew says so.
                    log.warning("lease renew failed: %s", exc, extra=self._ctx())
            if verdict is None and attempt.timeout_s and now - attempt.started > attempt.timeout_s:
                verdict = Verdict.TIMEOUT
            if verdict is None and (
                self._abort.is_set()
                or (self._stop.is_set() and now - self._stop_since > self.settings.shutdown_grace_s)
            ):
                verdict = Verdict.HANDBACK
            if verdict is not None:
                kill()
                return verdict
            time.sleep(_TICK_S)
        return None

    def _conclude(self, attempt: Attempt, verdict: Verdict) -> None:
        if verdict is Verdict.LOST:
            log.warning(
                "lease lost; the attempt was stopped and writes nothing",
                extra=self._ctx(job_id=attempt.job_id),
            )
        elif verdict is Verdict.CANCELLED:
            self._finish(
                attempt, "cancelled", error="cancelled by user", error_kind=FailureKind.CANCELLED
            )
        elif verdict is Verdict.TIMEOUT:
            self._finish(
                attempt,
                "failed",
                error_kind=FailureKind.TIMEOUT,
                error=f"timed out: ran longer than timeout_s={attempt.timeout_s:g}",
            )
        else:
            self._call(
                lambda: self.queue.release(
                    attempt.job_id, attempt.attempt_id, "worker shutting down"
                )
            )

    def _finish(self, attempt: Attempt, outcome: Any, **kwargs: Any) -> bool:
        if outcome == "retry":
            kwargs["retry_delay_ms"] = backoff_ms(
                attempt.number, self.settings.backoff_base_s, self.settings.backoff_cap_s
            )
        result = self._call(
            lambda: self.queue.finish(attempt.job_id, attempt.attempt_id, outcome, **kwargs)
        )
        if result is None or not result.applied:
            log.warning(
                "finish refused: this attempt no longer holds the job",
                extra=self._ctx(job_id=attempt.job_id, outcome=str(outcome)),
            )
            return False
        log.info("job finished", extra=self._ctx(job_id=attempt.job_id, state=result.state))
        return True

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Retry a queue call through a short Redis outage (bounded by the lease: past it
        the job is reaped and this attempt's write would be refused anyway)."""
        deadline = time.monotonic() + self.settings.lease_s
        while True:
            try:
                return fn()
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    log.error("giving up on a queue write: %s", exc, extra=self._ctx())
                    return None
                time.sleep(0.5)

    # -- training ----------------------------------------------------------------------

    def _run_training(self, attempt: Attempt, request: dict[str, Any]) -> None:
        paths = TrainingPaths.for_attempt(
            self.settings.model_store,
            self.settings.work_dir,
            request,
            attempt.job_id,
            attempt.number,
        )
        paths.create()
        spec = {
            "job_id": attempt.job_id,
            "attempt_id": attempt.attempt_id,
            "supervisor_pid": os.getpid(),
            "redis_url": self.settings.redis_url,
            "namespace": self.settings.trainyard_namespace,
            "data_root": str(self.settings.data_root.resolve()),
            "framework": self.runtime.framework,
            "task": MODEL_TYPES[request["model_type"]].task,
            "device": self._env[DEVICE_ENV],
            "model_store": str(self.settings.model_store.resolve()),
            "memory_limit_mb": self.settings.job_memory_mb,
            "request": request,
            "out_dir": str(paths.out_dir.resolve()),
            "result_path": str((paths.work / "result.json").resolve()),
        }
        spec_path = (paths.work / "spec.json").resolve()
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        gpu_before = self.gpus.safe_snapshot() if self.gpus else None
        proc = spawn_group(
            [sys.executable, "-m", "trainyard_worker.child", str(spec_path)], self._env
        )

        def sink(stream: str, line: str) -> None:
            # A log line lost to a Redis outage is not worth stalling the job for.
            with contextlib.suppress(redis.RedisError):
                self.queue.report(
                    attempt.job_id,
                    attempt.attempt_id,
                    "log",
                    {"stream": stream, "line": line[:4000]},
                )

        assert proc.stdout is not None and proc.stderr is not None
        pipes = [
            LineForwarder(proc.stdout, "stdout", sink),
            LineForwarder(proc.stderr, "stderr", sink),
        ]
        verdict = self._watch(
            attempt,
            lambda: proc.poll() is not None,
            lambda: kill_group(proc, self.settings.kill_grace_s),
        )
        if verdict is None:
            kill_group(proc, 0)  # the leader is gone; take any stray grandchildren with it
        self._check_gpus(gpu_before, attempt.job_id)
        for pipe in pipes:
            pipe.join(timeout_s=5.0)  # log lines land before the final state
        registered = False
        try:
            if verdict is not None:
                self._conclude(attempt, verdict)
            else:
                registered = self._training_outcome(
                    attempt, proc.returncode, paths, request, pipes[1].tail
                )
        finally:
            shutil.rmtree(paths.work, ignore_errors=True)
            if not registered:
                shutil.rmtree(paths.out_dir, ignore_errors=True)  # no orphan artifact files
                with contextlib.suppress(OSError):  # nor an empty model folder
                    paths.out_dir.parent.rmdir()

    def _training_outcome(
        self,
        attempt: Attempt,
        returncode: int,
        paths: TrainingPaths,
        request: dict[str, Any],
        stderr_tail: Iterable[str],
    ) -> bool:
        """Finish the attempt from how its child ended; True when its model was registered."""
        result = read_json(paths.work / "result.json")
        if returncode == EXIT_USER_ERROR and result is not None:
            self._finish(
                attempt, "failed", error=str(result.get("error")), error_kind=FailureKind.USER_ERROR
            )
            return False
        if returncode != 0 or result is None or not result.get("ok"):
            kind, message = describe_exit(returncode)
            if returncode == 0:
                message = "the job's process exited without a result"
            tail = "\n".join(list(stderr_tail)[-5:])
            self._finish(attempt, "retry", error=f"{message}\n{tail}".strip(), error_kind=kind)
            return False
        model = model_record(
            paths,
            framework=self.runtime.framework,
            runtime=self.runtime.name,
            job_id=attempt.job_id,
            request=request,
            result=result,
            # Through _call: a short Redis outage just as training ends must not cost the
            # attempt (past the lease the finish is refused anyway).
            created_ms=self._call(self.queue.server_time_ms) or int(time.time() * 1000),
        )
        return self._finish(
            attempt,
            "succeeded",
            model=model,
            result={"model_id": paths.model_id, "metrics": result["metrics"]},
        )

    # -- inference ---------------------------------------------------------------------

    def _run_inference(self, attempt: Attempt, request: dict[str, Any]) -> None:
        model = self._call(lambda: self.queue.get_model(request["model_id"]))
        if model is None:
            self._finish(
                attempt,
                "failed",
                error_kind=FailureKind.USER_ERROR,
                error=f"model {request['model_id']!r} does not exist (deleted?)",
            )
            return
        model_dir = self.settings.model_store / model["artifact"]
        if not model_dir.is_dir():
            self._finish(
                attempt,
                "retry",
                error_kind=FailureKind.INFRASTRUCTURE,
                error=f"model artifact not found at {model_dir} on this worker; "
                "workers on several hosts need a shared MODEL_STORE",
            )
            return
        self.inference.submit(
            {
                "model_id": model["model_id"],
                "model_dir": str(model_dir.resolve()),
                "meta": {
                    "model_id": model["model_id"],
                    "model_type": model["model_type"],
                    "label_names": model["label_names"],
                    "details": model.get("details") or {},
                },
                "input_data": request["input_data"],
                "parameters": request.get("parameters") or {},
            }
        )
        replies: list[dict[str, Any]] = []

        def done() -> bool:
            reply = self.inference.poll()
            if reply is not None:
                replies.append(reply)
            return bool(replies)

        verdict = self._watch(
            attempt, done, lambda: self.inference.kill(self.settings.kill_grace_s)
        )
        if verdict is not None:
            self._conclude(attempt, verdict)
            return
        reply = replies[0]
        if reply.get("ok"):
            self._finish(
                attempt, "succeeded", result={"model_id": model["model_id"], **reply["result"]}
            )
        elif reply.get("kind") == "user_error":
            self._finish(attempt, "failed", error=reply["error"], error_kind=FailureKind.USER_ERROR)
        else:
            self._finish(attempt, "retry", error=reply["error"], error_kind=FailureKind.CRASHED)
