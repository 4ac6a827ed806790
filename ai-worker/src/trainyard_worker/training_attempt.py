"""One training attempt: its folders, its spec, its child process (forked by the fork
server or a fresh interpreter), its log lines and its result."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis

from trainyard.engine import JobQueue
from trainyard.routing import MODEL_TYPES, Runtime
from trainyard.types import FailureKind

from .attempts import Ending, JobAttempt
from .config import WorkerSettings
from .processes import ChildProcess, LineForwarder, describe_exit, kill_group
from .protocol import EXIT_USER_ERROR, TrainingJobRequest, TrainingResult, TrainingSpec
from .runtimes.base import DEVICE_ENV
from .training import TrainingPaths, model_record
from .wakeups import ChildExited, Wake, Wakeups

__all__ = ["Launcher", "TrainingAttempt"]


class Launcher(Protocol):
    """How a training child starts (``launcher.TrainingLauncher``)."""

    def spawn(self, spec_path: Path, env: dict[str, str]) -> ChildProcess: ...


class TrainingAttempt:
    def __init__(
        self,
        job: JobAttempt,
        request: TrainingJobRequest,
        settings: WorkerSettings,
        runtime: Runtime,
        queue: JobQueue,
        supervisor_pid: int,
    ) -> None:
        self.job = job
        self.request = request
        self._settings = settings
        self._runtime = runtime
        self._queue = queue
        self._supervisor_pid = supervisor_pid
        self.paths = TrainingPaths.for_attempt(
            settings.model_store, settings.work_dir, request, job.job_id, job.number
        )
        self._proc: ChildProcess | None = None
        self._pipes: list[LineForwarder] = []
        self._starter: threading.Thread | None = None
        self._lock = threading.Lock()
        self._killed = False
        self._spawn_error = ""

    @property
    def jobs(self) -> list[JobAttempt]:
        return [self.job]

    @property
    def result_path(self) -> Path:
        return (self.paths.work / "result.json").resolve()

    def start(self, launcher: Launcher, env: dict[str, str], wakeups: Wakeups) -> None:
        """Write the spec and start the child; its exit comes as a ChildExited wake-up."""
        self.paths.create()
        settings = self._settings
        spec = TrainingSpec(
            job_id=self.job.job_id,
            attempt_id=self.job.attempt_id,
            supervisor_pid=self._supervisor_pid,
            redis_url=settings.redis_url,
            namespace=settings.trainyard_namespace,
            data_root=str(settings.data_root.resolve()),
            framework=self._runtime.framework,
            task=MODEL_TYPES[self.request.model_type].task,
            device=env[DEVICE_ENV],
            model_store=str(settings.model_store.resolve()),
            request=self.request,
            out_dir=str(self.paths.out_dir.resolve()),
            result_path=str(self.result_path),
            memory_limit_mb=settings.job_memory_mb,
        )
        spec_path = (self.paths.work / "spec.json").resolve()
        spec.write(spec_path)
        self._starter = threading.Thread(target=self._spawn_and_wait,
                                         args=(launcher, spec_path, env, wakeups),
                                         name="training-child", daemon=True)  # fmt: skip
        self._starter.start()

    def _spawn_and_wait(
        self, launcher: Launcher, spec_path: Path, env: dict[str, str], wakeups: Wakeups
    ) -> None:
        """On its own thread: a spawn waits while the fork server warms up (after the
        worker starts, or a restart), and the supervisor renews the lease meanwhile."""
        try:
            proc = launcher.spawn(spec_path, env)
        except Exception as exc:  # noqa: BLE001  # e.g. OSError: reported as the job's end
            self._spawn_error = f"{type(exc).__name__}: {exc}"
            wakeups.post(ChildExited(self))
            return
        assert proc.stdout is not None and proc.stderr is not None
        self._pipes = [
            LineForwarder(proc.stdout, "stdout", self._log_line),
            LineForwarder(proc.stderr, "stderr", self._log_line),
        ]
        with self._lock:
            self._proc = proc
            killed = self._killed
        if killed:  # stopped while it was starting
            kill_group(proc, 0)
        proc.wait()
        wakeups.post(ChildExited(self))

    def _log_line(self, stream: str, line: str) -> None:
        # A log line lost to a Redis outage is not worth stalling the job for.
        with contextlib.suppress(redis.RedisError):
            self._queue.report(self.job.job_id, self.job.attempt_id, "log",
                               {"stream": stream, "line": line[:4000]})  # fmt: skip

    def ended_by(self, wake: Wake) -> bool:
        return isinstance(wake, ChildExited) and wake.token is self

    def kill(self, grace_s: float) -> None:
        """Stop the child's whole group; one still starting is stopped as it starts."""
        with self._lock:
            self._killed = True
            proc = self._proc
        if proc is not None:
            kill_group(proc, grace_s)
        elif self._starter is not None:
            self._starter.join()

    def settle(self, ended_by_itself: bool) -> None:
        """After the child ended: take any stray grandchildren with it, and let its last
        log lines land before the final state."""
        if ended_by_itself:
            self.kill(0)  # the leader is gone; its group may not be
        if self._starter is not None:
            self._starter.join(timeout=5.0)
        for pipe in self._pipes:
            pipe.join(timeout_s=5.0)

    def ending(self, created_ms: Callable[[], int]) -> Ending:
        """How the attempt ends, from how its child ended (it ended by itself)."""
        if self._proc is None:
            return Ending("retry", error=f"the job's process did not start: {self._spawn_error}",
                          error_kind=FailureKind.INFRASTRUCTURE)  # fmt: skip
        returncode = self._proc.returncode
        assert returncode is not None
        result = TrainingResult.read(self.result_path)
        if returncode == EXIT_USER_ERROR and result is not None and not result.ok:
            return Ending("failed", error=result.error, error_kind=FailureKind.USER_ERROR)
        if returncode != 0 or result is None or not result.ok:
            kind, message = describe_exit(returncode)
            if returncode == 0:
                message = "the job's process exited without a result"
            tail = "\n".join(list(self._pipes[1].tail)[-5:]) if self._pipes else ""
            return Ending("retry", error=f"{message}\n{tail}".strip(), error_kind=kind)
        model = model_record(
            self.paths,
            framework=self._runtime.framework,
            runtime=self._runtime.name,
            job_id=self.job.job_id,
            request=self.request,
            result=result,
            created_ms=created_ms(),
        )
        summary = {"model_id": self.paths.model_id, "metrics": result.metrics}
        return Ending("succeeded", model=model, result=summary)

    def cleanup(self, registered: bool) -> None:
        """Remove the scratch folder, and the artifact folder unless a model uses it."""
        shutil.rmtree(self.paths.work, ignore_errors=True)
        if not registered:
            shutil.rmtree(self.paths.out_dir, ignore_errors=True)  # no orphan artifact files
            with contextlib.suppress(OSError):  # nor an empty model folder
                self.paths.out_dir.parent.rmdir()
