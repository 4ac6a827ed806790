"""The system under fault, as real processes: a Valkey server the harness owns (never the
machine's Redis), the backend (uvicorn) and N workers (``python src/worker.py``), each
with its log in the run's folder, and the ledger (``ledger/sitecustomize.py``) on the
``PYTHONPATH`` of the backend and of every worker (which passes it on to its children).

Persistence: the server runs with ``appendfsync always``, for every run. Valkey appends a
command to its AOF (write and fsync) in its event loop *before* it sends the replies of
that loop iteration, so once the backend has the reply of an enqueue (and answers 202),
the job is in the file: a SIGKILL of the server (``restart_redis``, every other time) cannot
lose it, and neither could a crash of the machine. With ``everysec`` (the shipped default)
the write may be postponed while a background fsync runs, so a kill -9 can lose about the
last second or two of acknowledged writes; a graceful stop (SIGTERM) flushes in both modes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer, free_port
from trainyard.engine import JobQueue
from trainyard.routing import RUNTIMES

__all__ = [
    "LEDGER_DIR",
    "REPO_ROOT",
    "Pythons",
    "System",
    "WorkerProc",
    "inference_hosts",
    "pid_alive",
    "pids_matching",
    "process_state",
]

FAULTS_DIR = Path(__file__).resolve().parent
LEDGER_DIR = FAULTS_DIR / "ledger"
REPO_ROOT = FAULTS_DIR.parents[1]

# Short leases, so a lost worker's job comes back within seconds (as the worker tests do).
WORKER_ENV = {
    "LEASE_S": "3",
    "RENEW_EVERY_S": "0.5",
    "HEARTBEAT_S": "0.5",
    "WORKER_TTL_S": "10",
    "REAP_EVERY_S": "0.5",
    "BLOCK_S": "1",
    "KILL_GRACE_S": "2",
    "SHUTDOWN_GRACE_S": "0",  # SIGTERM hands the running job back at once
    "BACKOFF_BASE_S": "0.2",
    "BACKOFF_CAP_S": "2",
    "JOB_THREADS": "1",
    "LOG_FORMAT": "text",
    # An inference batch waits this long for more jobs of its model (tabular's default is
    # no wait): a burst's jobs are then claimed as batches and held a moment, long enough
    # for kill9_batch to find one; a lone inference job pays the wait.
    "MAX_BATCH_WAIT_MS": "500",
    "MAX_BATCH_SIZE": "8",
}


@dataclass(frozen=True)
class Pythons:
    """The interpreters of the backend and of each runtime's worker environment."""

    backend: str
    runtimes: dict[str, str]

    @classmethod
    def from_env(cls) -> Pythons | None:
        """From TRAINYARD_BACKEND_PYTHON, TRAINYARD_WORKER_PYTHON (sklearn) and
        TRAINYARD_RUNTIME_PYTHONS (``runtime=python,...``); None when the first two are unset."""
        backend = os.environ.get("TRAINYARD_BACKEND_PYTHON")
        worker = os.environ.get("TRAINYARD_WORKER_PYTHON")
        if not backend or not worker:
            return None
        runtimes = {"sklearn": worker}
        for item in os.environ.get("TRAINYARD_RUNTIME_PYTHONS", "").split(","):
            name, _, python = item.strip().partition("=")
            if name and python:
                runtimes[name] = python
        runtimes["sklearn"] = worker
        return cls(backend, runtimes)


def pids_matching(*needles: str) -> list[int]:
    """Live processes whose command line contains every needle."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def inference_hosts(supervisor_pid: int) -> list[int]:
    """Live inference processes of a supervisor (``inference_host FRAMEWORK N PID``)."""
    found = []
    for pid in pids_matching("trainyard_worker.inference_host", str(supervisor_pid)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(supervisor_pid).encode() in argv:
            found.append(pid)
    return found


def process_state(pid: int) -> str | None:
    """The one-letter state in /proc/PID/stat (R, S, T, Z, ...); None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def pid_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


@dataclass
class WorkerProc:
    worker_id: str
    runtime: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class System:
    """One run's processes. ``start()`` brings up the server, the backend and the
    workers; ``close()`` stops whatever is left (and is safe to call twice)."""

    root: Path
    pythons: Pythons
    data_root: Path
    appendfsync: str = "always"
    worker_env: dict[str, str] = field(default_factory=dict)
    canary: str | None = None  # a deliberate bug (ledger/sitecustomize.py): run_faults --canary
    server: EmbeddedServer = field(init=False)
    backend: subprocess.Popen[bytes] | None = field(init=False, default=None)
    backend_port: int = field(init=False)
    workers: list[WorkerProc] = field(init=False, default_factory=list)
    _logs: list[IO[bytes]] = field(init=False, default_factory=list)
    server_restarts: int = field(init=False, default=0)
    _worker_seq: int = field(init=False, default=0)
    _backend_starts: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.server = EmbeddedServer(self.root / "valkey", appendfsync=self.appendfsync)
        self.backend_port = free_port()

    # -- paths and handles -------------------------------------------------------------

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def model_store(self) -> Path:
        return self.root / "models"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    def queue(self) -> JobQueue:
        """A fresh connection (redis-py reconnects by itself after a server restart)."""
        return JobQueue(connect(self.server.url, socket_timeout=10))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_FAULT")}
        for name in ("REDIS_URL", "API_KEYS_FILE"):
            env.pop(name, None)
        env.update(
            REDIS_URL=self.server.url,
            DATA_ROOT=str(self.data_root),
            MODEL_STORE=str(self.model_store),
            WORK_DIR=str(self.work_dir),
            TRAINYARD_FAULT_LEDGER=str(self.ledger),
            TRAINYARD_NAMESPACE="trainyard",
            # Over any .env in the services' folders: an open API (no keys) on this system.
            API_KEYS="",
            REQUIRE_API_KEYS="false",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(LEDGER_DIR), os.environ.get("PYTHONPATH")) if p
            ),
            **({"TRAINYARD_FAULT_CANARY": self.canary} if self.canary else {}),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def _log(self, name: str) -> tuple[Path, IO[bytes]]:
        path = self.root / "logs" / f"{name}.log"
        handle = path.open("ab")
        self._logs.append(handle)
        return path, handle

    # -- the whole system --------------------------------------------------------------

    def start(self, workers: dict[str, int], timeout_s: float = 120) -> None:
        """Server first, then the backend and the workers together; back when the API
        answers and every worker has registered."""
        self.server.start()
        self.start_backend(wait=False)
        for runtime, count in workers.items():
            for _ in range(count):
                self.start_worker(runtime, wait=False)
        self.wait_backend(timeout_s)
        self.wait_workers_registered(timeout_s)

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)  # a stopped worker cannot stop
                    worker.process.send_signal(signal.SIGTERM)
                    worker.process.send_signal(signal.SIGTERM)  # second one: hand back now
        for worker in self.workers:
            _wait_or_kill(worker.process, 20)
        if self.backend is not None:
            self.backend.terminate()
            _wait_or_kill(self.backend, 20)
        self.server.stop()
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the backend ---------------------------------------------------------------------

    def start_backend(self, wait: bool = True, timeout_s: float = 60) -> None:
        self._backend_starts += 1
        _, log = self._log("backend")
        env = self._env()
        env["WORKER_TTL_S"] = self.worker_env.get("WORKER_TTL_S", WORKER_ENV["WORKER_TTL_S"])
        self.backend = subprocess.Popen(
            [self.pythons.backend, "-m", "uvicorn", "src.main:app", "--host", "127.0.0.1",
             "--port", str(self.backend_port), "--log-level", "warning"],
            cwd=REPO_ROOT / "backend", env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait:
            self.wait_backend(timeout_s)

    def wait_backend(self, timeout_s: float) -> None:
        """Until the API answers at all (a 503 while the server restarts is an answer)."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2) as http:
            while True:
                if self.backend is None or self.backend.poll() is not None:
                    raise RuntimeError(f"the backend exited: see {self.root / 'logs'}")
                with contextlib.suppress(httpx.HTTPError):
                    http.get("/health")
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the backend did not answer within {timeout_s}s")
                time.sleep(0.1)

    def kill_backend(self) -> None:
        assert self.backend is not None
        self.backend.kill()
        self.backend.wait()

    # -- workers -------------------------------------------------------------------------

    def start_worker(self, runtime: str, wait: bool = True, timeout_s: float = 60) -> WorkerProc:
        self._worker_seq += 1
        worker_id = f"w{self._worker_seq}-{runtime}"
        log_path, log = self._log(worker_id)
        env = {
            **self._env(),
            **WORKER_ENV,
            **self.worker_env,
            "WORKER_TYPE": runtime,
            "MODEL_FRAMEWORK": RUNTIMES[runtime].framework,
            "USE_GPU": "false",
            "WORKER_ID": worker_id,
        }
        process = subprocess.Popen(
            [self.pythons.runtimes[runtime], "src/worker.py"],
            cwd=REPO_ROOT / "ai-worker", env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        worker = WorkerProc(worker_id, runtime, process, log_path)
        self.workers.append(worker)
        if wait:
            self.wait_workers_registered(timeout_s, [worker])
        return worker

    def live(self, runtime: str | None = None) -> list[WorkerProc]:
        """Worker processes not exited (a stopped one counts)."""
        return [w for w in self.workers if w.alive() and runtime in (None, w.runtime)]

    def wait_workers_registered(
        self, timeout_s: float, workers: list[WorkerProc] | None = None
    ) -> None:
        wanted = workers if workers is not None else self.live()
        queue = self.queue()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                for worker in wanted:
                    if not worker.alive():
                        tail = worker.log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"worker {worker.worker_id} exited:\n{tail}")
                with contextlib.suppress(redis.RedisError):
                    ids = {w.get("id") for w in queue.live_workers(60_000)}
                    if all(w.worker_id in ids for w in wanted):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not register within {timeout_s}s")
                time.sleep(0.1)
        finally:
            queue.redis.close()

    def child_pids(self, job_id: str | None = None) -> list[int]:
        """This run's training children (``trainyard_worker.child WORK_DIR/JOB-N/spec.json``)."""
        needle = str(self.work_dir / (f"{job_id}-" if job_id else ""))
        return pids_matching("trainyard_worker.child", needle)

    def tails(self, lines: int = 30) -> Iterator[str]:
        """The last lines of every process log, for a failure message."""
        for path in sorted((self.root / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            yield f"--- {path.name}\n" + "\n".join(text)


def _wait_or_kill(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
