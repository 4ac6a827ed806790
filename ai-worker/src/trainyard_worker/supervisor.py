"""The worker's supervisor: claims jobs, renews their leases, watches cancellation and
timeouts, and runs the work in child processes so that nothing a job does (a crash, an
OOM kill, a hang) can take the worker down or write after it lost the job.

What a job's run owns (its spec, processes and result) lives in :class:`TrainingAttempt`
and :class:`InferenceBatch`; the supervisor claims, watches and finishes. While work runs
it blocks on one queue of wake-ups (see ``wakeups``) with the time to its next deadline
as the timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from trainyard.connection import connect
from trainyard.engine import FinishItem, JobQueue, backoff_ms
from trainyard.keys import KeySchema
from trainyard.types import FailureKind

from .attempts import Ending, JobAttempt, Verdict, Work, verdict_ending
from .config import WorkerSettings, child_environment
from .data_guard import DataGuard
from .gpu import GpuSet, GpuSnapshot
from .inference import InferenceHost
from .inference_batch import InferenceBatch, batch_policy, resolve_model
from .launcher import TrainingLauncher
from .protocol import InferenceJobRequest, ModelRef
from .registration import Registration
from .runtime_check import RuntimeReport
from .training import UnreadableRequest, read_inference_request, read_training_request
from .training_attempt import TrainingAttempt
from .wakeups import CancelListener, CancelMessage, Resubscribed, Signalled, Wakeups
from .worker_metrics import WorkerMetrics

__all__ = ["BLPOP_RESOLUTION_S", "Supervisor"]

log = logging.getLogger("trainyard.worker")

T = TypeVar("T")

# Valkey/Redis time out blocked commands (BLPOP) from their cron, every 1/hz s (100 ms at
# the default hz 10): a block shorter than that lasts until the next tick.
BLPOP_RESOLUTION_S = 0.1


class Supervisor:
    def __init__(
        self, settings: WorkerSettings, report: RuntimeReport, gpus: GpuSet | None = None
    ) -> None:
        self.settings = settings
        self.gpus = gpus  # a GPU runtime's cards; None on a CPU runtime
        self.runtime = report.runtime
        self._report = report
        keys = KeySchema(settings.trainyard_namespace)
        # Blocking waits (BLPOP) need a socket timeout longer than the block.
        self.queue = JobQueue(
            connect(settings.redis_url, socket_timeout=settings.block_s + 10), keys
        )
        # Set by the signal handler, only read elsewhere (see request_stop).
        self._stop = threading.Event()  # first SIGTERM/SIGINT: claim nothing more
        self._abort = threading.Event()  # second one: hand the running job back now
        self._stop_since = 0.0
        self._env = child_environment(settings, gpus)
        self.wakeups = Wakeups()
        self.inference = InferenceHost(self.runtime.framework, settings.inference_cache_models,
                                       self._env, self.wakeups)  # fmt: skip
        self.record = Registration(settings, report, gpus,
                                   (self.queue, JobQueue(connect(settings.redis_url), keys)),
                                   lambda: self.inference.loaded, self._stop.is_set)  # fmt: skip
        # Training data not visible here: retried elsewhere, and out of service if it goes on.
        self.data_guard = DataGuard(settings, self.runtime.name, self.record, self.queue)
        self._launcher = self._new_launcher()
        self._open: dict[str, JobAttempt] = {}  # claimed and not yet finished or released
        # Served by main() when METRICS_PORT is set; read from the server's thread.
        self.metrics = WorkerMetrics(settings.worker_id, self.runtime, gpus,
                                     busy=lambda: bool(self._open),
                                     loaded_models=lambda: len(self.inference.loaded))  # fmt: skip

    def _new_launcher(self) -> TrainingLauncher:
        # ready_timeout_s=0: a job claimed while the server still imports starts in a fresh
        # process at once (it would pay the same import), instead of waiting on the warm-up
        # with its run timeout already counting.
        return TrainingLauncher(self.runtime.framework, dict(self._env), os.getpid(),
                                self.settings.fork_server, ready_timeout_s=0)  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """The signal handler. It only sets flags the main thread never waits on and posts
        to the wake-up queue (reentrant), so it cannot deadlock the code it interrupts."""
        if self._stop.is_set():
            self._abort.set()
        else:
            self._stop_since = time.monotonic()
            self._stop.set()
            log.info("stopping: no new jobs; the running job may finish", extra=self._ctx())
        self.wakeups.post(Signalled())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if not self._register():
            return 0  # stopped before Redis ever answered
        self._launcher.start()  # from the main thread, as the launcher requires
        self.record.start()
        cancels = CancelListener(self.settings.redis_url,
                                 self.queue.cancel_channel(self.settings.worker_id),
                                 self.wakeups)  # fmt: skip
        cancels.start()
        log.info("worker ready", extra=self._ctx(runtime=self.runtime.name,
                                                 framework_version=self._report.framework_version))
        try:
            while not self._stop.is_set():
                self._next_job()
        finally:
            cancels.close()
            self.inference.close()
            self._launcher.close()
            self.record.close()
            log.info("worker stopped", extra=self._ctx())
        return 0

    def _next_job(self) -> None:
        """Claim a job and run it, or wait for one (a wake-up token, or the time after
        which a job skipped for model affinity may be taken)."""
        if self.gpus is not None and not self.gpus.in_service:
            # Every GPU is out of service: stay registered (and reported) but idle.
            self.record.set_state("no_gpu", None)
            self.wakeups.next(self.settings.block_s)
            return
        if self.data_guard.paused():  # out of service: its jobs' data is not visible here
            self.wakeups.next(self.settings.block_s)
            return
        try:
            found = self.queue.claim_work(
                self.settings.worker_id,
                [self.runtime.name],
                self._lease_ms,
                loaded_models=self.inference.loaded,
                affinity_ms=self.settings.affinity_ms,
                holder_ttl_ms=int(self.settings.worker_ttl_s * 1000),
            )
            if found.claim is None:
                self.record.set_state("idle", None)
                wait_s = self.settings.block_s
                if found.recheck_ms is not None:
                    wait_s = min(wait_s, found.recheck_ms / 1000)
                if wait_s < BLPOP_RESOLUTION_S:
                    # A recheck due sooner than the server's clock tick (an affinity wait,
                    # 50 ms by default): a BLPOP this short would end on the tick (100 ms
                    # at Valkey's default hz), not on time. A local timer; a job that
                    # arrives meanwhile is claimed when it ends.
                    self.wakeups.next(wait_s)
                    return
                # Its own list too: a worker that skipped a job of a model this one holds
                # wakes it there.
                self.queue.wait_for_work([self.runtime.name], wait_s,
                                         worker_id=self.settings.worker_id)  # fmt: skip
                return
        except redis.RedisError as exc:
            log.warning("queue unavailable: %s", exc, extra=self._ctx())
            self.wakeups.next(1.0)  # a signal ends this pause early
            return
        self._run(JobAttempt.of(found.claim))

    def _register(self) -> bool:
        """First registration. Redis may not be up yet (a host or a compose stack starting
        in any order): wait for it, saying so, until it answers or the worker is stopped."""
        warned = 0.0
        while not self._stop.is_set():
            try:
                self.record.register()
                return True
            except redis.RedisError as exc:
                if time.monotonic() - warned > 10:
                    warned = time.monotonic()
                    # Not the URL: it may carry a password.
                    log.warning("waiting for the queue (Redis): %s", exc, extra=self._ctx())
                self.wakeups.next(1.0)
        return False

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

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
            self.record.publish_loaded_models()
            # The fork server's children inherit its environment: a new one, new set.
            self._launcher.close()
            self._launcher = self._new_launcher()
            self._launcher.start()

    def _ctx(self, **fields: Any) -> dict[str, Any]:
        return {"fields": {"worker_id": self.settings.worker_id, **fields}}

    # -- one job -----------------------------------------------------------------------

    def _run(self, job: JobAttempt) -> None:
        self._open = {job.job_id: job}
        self.record.claimed(job.job_id)
        log.info("job started", extra=self._ctx(job_id=job.job_id, attempt=job.number,
                                                job_type=job.job["type"]))  # fmt: skip
        try:
            if job.job["type"] == "training":
                self._run_training(job)
            else:
                self._run_inference(job)
        except Exception as exc:  # a supervisor-side fault must not lose the jobs
            log.exception("job failed inside the worker", extra=self._ctx(job_id=job.job_id))
            error = f"worker error: {type(exc).__name__}: {exc}"
            self._finish([(j, Ending("retry", error=error, error_kind=FailureKind.INFRASTRUCTURE))
                          for j in self._open.values()])  # fmt: skip
        finally:
            self._open = {}

    def _watch(self, work: Work) -> dict[str, Verdict] | None:
        """Wait for ``work`` to end by itself (None), renewing its jobs' leases. A job whose
        lease is lost, that is cancelled or that runs past its timeout gets a verdict.
        While other jobs of the work go on (a batch), it is concluded at once; when none
        is left, or on a shutdown, the work is killed and the last verdicts are returned,
        to conclude after the kill."""
        pending = {job.job_id: job for job in work.jobs}
        renew_every = self.settings.renew_every_s
        next_renew = time.monotonic() + renew_every
        while True:
            now = time.monotonic()
            stop_at = self._stop_since + self.settings.shutdown_grace_s
            if self._abort.is_set() or (self._stop.is_set() and now >= stop_at):
                work.kill(self.settings.kill_grace_s)
                return dict.fromkeys(pending, Verdict.HANDBACK)
            verdicts = {j.job_id: Verdict.TIMEOUT for j in pending.values()
                        if j.deadline is not None and now >= j.deadline}  # fmt: skip
            if now >= next_renew:
                next_renew = now + renew_every
                verdicts.update(self._renew(pending))
            if verdicts:
                for job_id in verdicts:
                    pending.pop(job_id, None)
                if not pending:
                    work.kill(self.settings.kill_grace_s)
                    return verdicts
                self._finish(self._conclude(verdicts))  # the rest of the batch goes on
                continue
            deadlines = [next_renew, *(j.deadline for j in pending.values() if j.deadline)]
            if self._stop.is_set():
                deadlines.append(stop_at)
            wake = self.wakeups.next(min(deadlines) - now)
            if wake is None:
                continue
            if work.ended_by(wake):
                return None
            if (isinstance(wake, CancelMessage) and wake.job_id in pending) or isinstance(
                wake, Resubscribed
            ):
                # Renew now: the renewal reads the cancel flags, so it confirms the message
                # is about this attempt (claim clears the flag), or finds the cancels whose
                # messages were lost while the listener was away.
                next_renew = now

    def _renew(self, pending: dict[str, JobAttempt]) -> dict[str, Verdict]:
        jobs = list(pending.values())
        try:
            renewals = self.queue.renew_many([(j.job_id, j.attempt_id) for j in jobs],
                                             self._lease_ms)  # fmt: skip
        except redis.RedisError as exc:
            # Keep working; if the lease runs out meanwhile the next renew says so.
            log.warning("lease renew failed: %s", exc, extra=self._ctx())
            return {}
        verdicts = {}
        for job, renewal in zip(jobs, renewals, strict=True):
            if not renewal.held:
                verdicts[job.job_id] = Verdict.LOST
            elif renewal.cancel_requested:
                verdicts[job.job_id] = Verdict.CANCELLED
        return verdicts

    def _conclude(self, verdicts: dict[str, Verdict]) -> list[tuple[JobAttempt, Ending]]:
        """Act on the verdicts: a hand-back releases the job, a lost lease writes nothing;
        returns the endings of the others (cancelled, timed out), to finish."""
        endings = []
        for job_id, verdict in verdicts.items():
            job = self._open[job_id]
            if verdict is Verdict.LOST:
                log.warning("lease lost; the attempt was stopped and writes nothing",
                            extra=self._ctx(job_id=job_id))  # fmt: skip
                self._open.pop(job_id)
                self.metrics.job_finished(job.job["type"], "lost")
            elif verdict is Verdict.HANDBACK:
                self._release(job)
            else:
                ending = verdict_ending(job, verdict)
                assert ending is not None
                endings.append((job, ending))
        return endings

    def _release(self, job: JobAttempt) -> None:
        """Hand the job back to its queue without counting the attempt."""
        self._call(lambda: self.queue.release(job.job_id, job.attempt_id, "worker shutting down"))
        self._open.pop(job.job_id, None)
        self.metrics.job_finished(job.job["type"], "released")

    def _finish(self, endings: list[tuple[JobAttempt, Ending]]) -> list[bool]:
        """Finish attempts in one call, each with its own ending; which were applied."""
        if not endings:
            return []
        items = [
            FinishItem(
                job.job_id,
                job.attempt_id,
                e.outcome,
                result=e.result,
                error=e.error,
                error_kind=e.error_kind,
                model=e.model,
                retry_delay_ms=backoff_ms(job.number, self.settings.backoff_base_s,
                                          self.settings.backoff_cap_s)
                if e.outcome == "retry" else 0,
            )
            for job, e in endings
        ]  # fmt: skip
        outcomes = self._call(lambda: self.queue.finish_many(items))
        applied = []
        for i, (job, ending) in enumerate(endings):
            self._open.pop(job.job_id, None)
            outcome = outcomes[i] if outcomes is not None else None
            ok = outcome is not None and outcome.applied
            self.metrics.job_finished(job.job["type"], ending.outcome if ok else "lost")
            if outcome is None or not ok:
                log.warning("finish refused: this attempt no longer holds the job",
                            extra=self._ctx(job_id=job.job_id, outcome=ending.outcome))  # fmt: skip
                applied.append(False)
            else:
                log.info("job finished", extra=self._ctx(job_id=job.job_id, state=outcome.state))
                applied.append(True)
        return applied

    def _call(self, fn: Callable[[], T]) -> T | None:
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

    def _server_ms(self) -> int:
        # Through _call: a short Redis outage just as training ends must not cost the
        # attempt (past the lease the finish is refused anyway).
        return self._call(self.queue.server_time_ms) or int(time.time() * 1000)

    # -- training ----------------------------------------------------------------------

    def _run_training(self, job: JobAttempt) -> None:
        try:
            request = read_training_request(job.job)
        except UnreadableRequest as exc:
            # Not a fault of this worker: no worker could run it, so it is not retried.
            self._finish([(job, Ending("failed", error=str(exc),
                                       error_kind=FailureKind.USER_ERROR))])  # fmt: skip
            return
        refused = self.data_guard.check(request)  # before any process starts
        if refused is not None:
            self._finish([(job, refused)])
            return
        attempt = TrainingAttempt(job, request, self.settings, self.runtime, self.queue,
                                  os.getpid())  # fmt: skip
        gpu_before = self.gpus.safe_snapshot() if self.gpus else None
        registered = False
        try:
            attempt.start(self._launcher, self._env, self.wakeups)
            try:
                verdicts = self._watch(attempt)
            except BaseException:
                attempt.kill(0)  # it must not run on, unwatched, while the job is retried
                raise
            attempt.settle(ended_by_itself=verdicts is None)
            self._check_gpus(gpu_before, job.job_id)
            if verdicts is not None:
                self._finish(self._conclude(verdicts))
            else:
                ending = self.data_guard.after_run(request, attempt.ending(self._server_ms))
                (applied,) = self._finish([(job, ending)])
                registered = applied and ending.model is not None
        finally:
            attempt.cleanup(registered)

    # -- inference ---------------------------------------------------------------------

    def _run_inference(self, first: JobAttempt) -> None:
        try:
            request = read_inference_request(first.job)
        except UnreadableRequest as exc:
            self._finish([(first, Ending("failed", error=str(exc),
                                         error_kind=FailureKind.USER_ERROR))])  # fmt: skip
            return
        model = self._resolve(request.model_id)
        if not isinstance(model, ModelRef):
            self._finish([(first, model)])
            return
        runnable, models, refused = [(first, request)], {model.model_id: model}, []
        for job in self._claim_more(request.model_id, model.model_type):
            try:
                req = read_inference_request(job.job)
            except UnreadableRequest as exc:
                refused.append((job, Ending("failed", error=str(exc),
                                            error_kind=FailureKind.USER_ERROR)))  # fmt: skip
                continue
            if req.model_id not in models:  # only a record whose fields disagree
                other = self._resolve(req.model_id)
                if not isinstance(other, ModelRef):
                    refused.append((job, other))
                    continue
                models[req.model_id] = other
            runnable.append((job, req))
        self._finish(refused)  # now: nothing renews their leases while the batch runs
        self._run_batch(runnable, list(models.values()))

    def _resolve(self, model_id: str) -> ModelRef | Ending:
        record = self._call(lambda: self.queue.get_model(model_id))
        return resolve_model(record, model_id, self.settings.model_store)

    def _claim_more(self, model_id: str, model_type: str) -> list[JobAttempt]:
        """More queued jobs of the model, up to the batch size. When some were already
        waiting (a burst is arriving), the batch gets ``max_batch_wait_ms`` more to fill;
        a lone request never waits. The window is a local timer: a BLPOP that short would
        end on the server's clock tick (100 ms at Valkey's default hz), not on ours."""
        policy = batch_policy(self.settings, model_type)
        more: list[JobAttempt] = []

        def take() -> None:
            claims = self.queue.claim_batch(self.settings.worker_id, self.runtime.name,
                                            model_id, self._lease_ms,
                                            policy.max_size - 1 - len(more))  # fmt: skip
            more.extend(JobAttempt.of(c) for c in claims)
            self._open.update((j.job_id, j) for j in more)

        try:
            if policy.max_size > 1:
                take()
            burst = bool(more) and len(more) < policy.max_size - 1 and policy.wait_ms > 0
            if burst and not self._stop.wait(policy.wait_ms / 1000):
                take()
        except redis.RedisError as exc:
            log.warning("claiming more of a batch failed: %s", exc, extra=self._ctx())
        return more

    def _run_batch(
        self, runnable: list[tuple[JobAttempt, InferenceJobRequest]], models: list[ModelRef]
    ) -> None:
        batch = InferenceBatch(self.inference, runnable, models)
        if len(runnable) > 1:
            jobs = [job.job_id for job, _ in runnable]
            log.info("batch started", extra=self._ctx(batch_id=batch.request.batch_id, jobs=jobs))
        batch.start()
        verdicts = self._watch(batch)
        if verdicts is not None:
            self._finish(self._conclude(verdicts))
        else:  # each job still open (not concluded while the batch ran) by its own answer
            by_job = batch.endings()
            self._finish([(job, by_job[job.job_id]) for job in batch.jobs
                          if job.job_id in self._open])  # fmt: skip
        self.record.publish_loaded_models()
