"""The worker's record in Redis, kept by the supervisor: a full heartbeat every
``heartbeat_s`` on its own thread (which also reaps expired leases and refreshes the
models it holds, for affinity), the small busy/idle write when a job starts or the worker
goes idle, and the loaded models at once when they change."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from trainyard.engine import JobQueue

from .config import WorkerSettings
from .gpu import GpuSet
from .runtime_check import RuntimeReport

__all__ = ["Registration"]

log = logging.getLogger("trainyard.worker")


class Registration:
    def __init__(
        self,
        settings: WorkerSettings,
        report: RuntimeReport,
        gpus: GpuSet | None,
        queues: tuple[JobQueue, JobQueue],  # (the main thread's, the heartbeat thread's)
        loaded: Callable[[], list[str]],  # the inference host's loaded model ids
        stopping: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._report = report
        self._gpus = gpus
        self._queue, self._beat_queue = queues
        self._loaded = loaded
        self._stopping = stopping
        self.state = "idle"
        self.current_job: str | None = None
        self._started_at_ms = 0
        self._closing = threading.Event()  # the heartbeat thread's end
        self._beat_now = threading.Event()  # a full heartbeat now (the loaded models changed)
        self._models_lock = threading.Lock()  # one writer of the loaded models at a time
        self._published_models: list[str] | None = None
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    @property
    def _ttl_ms(self) -> int:
        return int(self._settings.worker_ttl_s * 1000)

    def _ctx(self, **fields: Any) -> dict[str, Any]:
        return {"fields": {"worker_id": self._settings.worker_id, **fields}}

    def register(self) -> None:
        """The first heartbeat; raises ``redis.RedisError`` while Redis does not answer."""
        self._started_at_ms = self._beat_queue.server_time_ms()
        self._heartbeat()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeats, then remove the record (no heartbeat may come after)."""
        self._closing.set()
        self._beat_now.set()
        self._thread.join(timeout=5.0)
        with contextlib.suppress(redis.RedisError):
            self._beat_queue.unregister_worker(self._settings.worker_id)

    def set_state(self, state: str, job_id: str | None) -> None:
        """Record and publish at once (two fields, not a heartbeat), so GET /workers is
        not a heartbeat behind."""
        if (state, job_id) == (self.state, self.current_job):
            return
        self.state, self.current_job = state, job_id
        with contextlib.suppress(redis.RedisError):
            self._queue.set_worker_state(self._settings.worker_id, state, job_id)

    def claimed(self, job_id: str) -> None:
        """The claim script already marked this worker busy with the job (one write fewer
        per job): record it here so the next heartbeat says the same."""
        self.state, self.current_job = "busy", job_id

    def publish_loaded_models(self) -> None:
        """After the host's models changed: where affinity looks, at once, and the worker
        record (GET /workers) with a heartbeat, asked for now."""
        if self._loaded() == self._published_models:
            return
        with contextlib.suppress(redis.RedisError):
            self._record_loaded_models(self._queue)
        self._beat_now.set()

    def _record_loaded_models(self, queue: JobQueue) -> None:
        with self._models_lock:
            loaded = self._loaded()
            queue.set_loaded_models(self._settings.worker_id, self._report.runtime.name, loaded,
                                    self._ttl_ms)  # fmt: skip
            self._published_models = loaded

    def _heartbeat(self) -> None:
        runtime = self._report.runtime
        fields = {
            "runtime": runtime.name,
            "framework": runtime.framework,
            "framework_version": self._report.framework_version,
            "packages": json.dumps(self._report.packages),
            "device": runtime.device,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": "draining" if self._stopping() else self.state,
            "current_job": self.current_job or "",
            "loaded_models": json.dumps(self._loaded()),
            "gpus": json.dumps(self._gpus.describe() if self._gpus else []),
            "started_at": self._started_at_ms,
        }
        self._beat_queue.heartbeat(self._settings.worker_id, fields, self._ttl_ms)

    def _loop(self) -> None:
        next_reap = 0.0
        while True:
            self._beat_now.wait(self._settings.heartbeat_s)
            self._beat_now.clear()
            if self._closing.is_set():
                return
            try:
                self._heartbeat()
                if self._loaded() or self._published_models:  # refresh their lifetime;
                    self._record_loaded_models(self._beat_queue)  # an empty host: no call
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self._settings.reap_every_s
                    # One scan per interval for the whole fleet (a server-side gate); the
                    # gate is a little shorter than the interval, so a lone worker's scan
                    # never finds its own last gate still closed.
                    gate_ms = int(self._settings.reap_every_s * 900)
                    for job_id, state in self._beat_queue.reap(every_ms=gate_ms):
                        log.warning("reaped a job whose lease expired",
                                    extra=self._ctx(job_id=job_id, new_state=state))  # fmt: skip
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc, extra=self._ctx())
