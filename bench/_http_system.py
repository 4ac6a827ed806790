"""The harness the user-facing benchmarks share (bench_serving.py, bench_affinity.py,
bench_training_start.py): a private Valkey, the backend under uvicorn and workers from the
runtime environments on free ports in a temporary folder (``BenchSystem``), HTTP clients
that time requests sequentially or concurrently, and table printing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from trainyard.embedded import EmbeddedServer, free_port
from trainyard.sample_data import SENTIMENT_ROWS, write_tabular, write_text

__all__ = [
    "ENV_ROOT",
    "REPO_ROOT",
    "TERMINAL",
    "Answer",
    "BenchSystem",
    "Event",
    "RunStats",
    "Worker",
    "add_common_args",
    "bare_check",
    "bench_root",
    "compare_row",
    "env_python",
    "print_load",
    "print_table",
    "ratio",
    "record",
    "report_errors",
    "run_concurrent",
    "run_sequential",
    "stop_process",
    "tail",
    "threads_per_worker",
    "trainyard_check",
    "verdict",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
ENV_ROOT = Path(os.environ.get("TRAINYARD_ENV_ROOT") or _CACHE / "trainyard" / "envs")


# ------------------------------------------------------------------------- environments


def env_python(name: str) -> str:
    """The Python of the backend's environment (``"backend"``) or of a runtime's worker
    environment (``"sklearn"``, ``"pytorch-2.1"``): from TRAINYARD_BACKEND_PYTHON /
    TRAINYARD_RUNTIME_PYTHONS (``runtime=path,...``, as scripts/test.sh exports them), else
    this clone's newest matching environment under the env root (``scripts/env.sh``)."""
    if name == "backend":
        explicit, prefix = os.environ.get("TRAINYARD_BACKEND_PYTHON"), "backend-none"
    else:
        pairs = os.environ.get("TRAINYARD_RUNTIME_PYTHONS", "")
        given = dict(p.split("=", 1) for p in pairs.split(",") if "=" in p)
        explicit = given.get(name)
        if name == "sklearn":
            explicit = explicit or os.environ.get("TRAINYARD_WORKER_PYTHON")
        prefix = "ai-worker-" + name.replace("-", "_").replace(".", "_")
    if explicit:
        return explicit
    found = sorted(
        (p for p in ENV_ROOT.glob(f"{prefix}-*/bin/python") if _of_this_clone(p.parents[1])),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        sys.exit(f"no environment {prefix}-* of this clone under {ENV_ROOT}: run "
                 "./scripts/test.sh lint once")  # fmt: skip
    return str(found[-1])


def _of_this_clone(env: Path) -> bool:
    # scripts/lib/envs.sh writes the clone's path into each environment it builds.
    try:
        return (env / ".trainyard-clone").read_text().strip() == str(REPO_ROOT)
    except OSError:
        return False


def threads_per_worker(workers: int) -> int:
    """OMP threads per job process, as scripts/run_local.sh splits the cores (unless
    OMP_NUM_THREADS is set)."""
    given = os.environ.get("OMP_NUM_THREADS")
    if given:
        return int(given)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def print_load(title: str) -> None:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"{title}\nload at start: {uptime.strip()}  ({os.cpu_count()} cores)\n", flush=True)


# ------------------------------------------------------------------------------ system


@dataclass(frozen=True)
class Event:
    at_ms: int  # server time of the stream entry
    kind: str
    data: dict[str, Any]


@dataclass
class Worker:
    worker_id: str
    runtime: str
    process: subprocess.Popen[bytes]
    log_path: Path
    model_store: Path
    env: dict[str, str]


@dataclass
class BenchSystem:
    """A private Valkey, the backend under uvicorn, and the workers a bench starts."""

    root: Path
    threads: int = 1
    repo: Path = REPO_ROOT  # the checkout whose backend and worker run (see --repo)
    workers: list[Worker] = field(default_factory=list)
    _server: EmbeddedServer | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _count: int = 0

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def model_store(self) -> Path:
        return self.root / "models"

    def __enter__(self) -> BenchSystem:
        try:
            self._start()
        except BaseException:
            self.__exit__()  # a start that failed half-way leaves nothing running
            raise
        return self

    def _start(self) -> None:
        write_tabular(self.data_root / "tabular_data.csv")
        write_text(self.data_root / "sentiment_analysis.csv", rows=SENTIMENT_ROWS)
        self._server = EmbeddedServer(self.root / "valkey").start()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        backend = self._spawn(
            "backend",
            [env_python("backend"), "-m", "uvicorn", "src.main:app", "--host", "127.0.0.1",
             "--port", str(port)],
            self.repo / "backend", self.env(),
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.base_url, timeout=120)
        self.wait_http(f"{self.base_url}/health", backend, self.root / "logs" / "backend.log")

    def __exit__(self, *_: object) -> None:
        for worker in list(self.workers):
            self.stop_worker(worker)
        for proc in self._procs:
            stop_process(proc)
        for log in self._logs:
            log.close()
        if self._server is not None:
            self._server.stop()
        with contextlib.suppress(AttributeError):
            self.http.close()

    def env(self, **extra: str) -> dict[str, str]:
        assert self._server is not None
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "VIRTUAL_ENV")}
        threads = str(self.threads)
        env.update(
            REDIS_URL=self._server.url,
            DATA_ROOT=str(self.data_root),
            MODEL_STORE=str(self.model_store),
            WORK_DIR=str(self.root / "work"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            OPENBLAS_NUM_THREADS=threads,
        )
        if self.repo.resolve() != REPO_ROOT:
            # The environments install this checkout's packages as plain path entries
            # (.pth): PYTHONPATH comes before them, so the other tree's code runs.
            srcs = [self.repo / part / "src" for part in ("core", "backend", "ai-worker")]
            env["PYTHONPATH"] = os.pathsep.join(str(p.resolve()) for p in srcs)
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], cwd: Path, env: dict[str, str]) -> Any:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        log = (self.root / "logs" / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        return proc

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Any other process of the bench (stopped with the system)."""
        proc: subprocess.Popen[bytes] = self._spawn(name, args, self.repo, env)
        return proc

    @staticmethod
    def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"{url}: the process exited ({proc.returncode}):\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        sys.exit(f"{url} did not answer within 90 s:\n{tail(log)}")

    def start_worker(
        self, runtime: str, settings: Mapping[str, str] | None = None,
        model_store: Path | None = None,
    ) -> Worker:  # fmt: skip
        """A worker of ``runtime`` with these worker settings (environment variables);
        returns once it is registered (GET /workers lists it)."""
        self._count += 1
        worker_id = f"bench-{runtime}-{self._count}"
        store = model_store or self.model_store
        env = self.env(
            WORKER_TYPE=runtime, USE_GPU="false", WORKER_ID=worker_id, MODEL_STORE=str(store),
            **dict(settings or {}),
        )  # fmt: skip
        proc = self._spawn(worker_id, [env_python(runtime), "src/worker.py"],
                           self.repo / "ai-worker", env)  # fmt: skip
        worker = Worker(worker_id, runtime, proc, self.root / "logs" / f"{worker_id}.log",
                        store, env)  # fmt: skip
        self.workers.append(worker)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"worker {worker_id} exited ({proc.returncode}):\n{tail(worker.log_path)}")
            if any(w["worker_id"] == worker_id for w in self.list_workers()):
                return worker
            time.sleep(0.2)
        sys.exit(f"worker {worker_id} did not register within 120 s:\n{tail(worker.log_path)}")

    def stop_worker(self, worker: Worker) -> None:
        stop_process(worker.process)
        self.workers.remove(worker)
        # Its record may outlive it for a moment; wait until GET /workers drops it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(w["worker_id"] != worker.worker_id for w in self.list_workers()):
                    return
            except httpx.HTTPError:  # the backend is gone too (a failed run): nothing to wait for
                return
            time.sleep(0.2)

    def list_workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.http.get("/workers").json()["workers"]
        return workers

    def submit_training(self, body: dict[str, Any], wait_s: float = 600) -> dict[str, Any]:
        """POST /jobs/training?wait= and, where the backend answered before the job ended
        (a backend that ignores ?wait= on training), follow its events to the end."""
        # 300 s: the backend's default MAX_WAIT_S; a longer job is followed below.
        reply = self.http.post("/jobs/training", params={"wait": min(wait_s, 300)}, json=body)
        if reply.status_code not in (200, 202):
            sys.exit(f"training refused: {reply.status_code} {reply.text}")
        status: dict[str, Any] = reply.json()
        if status["status"] not in TERMINAL:
            self.events(status["job_id"])
            status = self.http.get(f"/jobs/{status['job_id']}/status").json()
        return status

    def train(self, body: dict[str, Any]) -> dict[str, Any]:
        status = self.submit_training(body)
        if status["status"] != "succeeded":
            logs = "\n".join(tail(w.log_path) for w in self.workers)
            sys.exit(f"training failed: {json.dumps(status)[:2000]}\n{logs}")
        return status

    def events(self, job_id: str, timeout_s: float = 600) -> list[Event]:
        """The job's events, following the stream until its final state."""
        out: list[Event] = []
        with self.http.stream("GET", f"/jobs/{job_id}/events", timeout=timeout_s) as stream:
            fields: dict[str, str] = {}
            for line in stream.iter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "id" in fields and "event" in fields:
                    out.append(Event(int(fields["id"].split("-")[0]), fields["event"],
                                     json.loads(fields.get("data", "{}"))))  # fmt: skip
                fields = {}
        return out


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return f"--- {path.name}\n" + path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"--- {path.name}: no log"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, models)")
    parser.add_argument(
        "--repo", type=Path, default=REPO_ROOT,
        help="run the backend and workers of this checkout (e.g. an unpacked `git archive` of "
        "an older commit, for before/after figures); default: this one",
    )  # fmt: skip


@contextlib.contextmanager
def bench_root(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- clients


@dataclass
class RunStats:
    latencies_ms: list[float]
    elapsed_s: float
    errors: list[str]
    batch_sizes: list[int] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0

    def merge(self, other: RunStats) -> RunStats:
        return RunStats(
            self.latencies_ms + other.latencies_ms,
            self.elapsed_s + other.elapsed_s,
            self.errors + other.errors,
            self.batch_sizes + other.batch_sizes,
        )

    @property
    def mean_batch(self) -> str:
        """Mean jobs per model call, as the results report it ("-" where they do not)."""
        if not self.batch_sizes:
            return "-"
        return f"{statistics.fmean(self.batch_sizes):.1f}"


@dataclass(frozen=True)
class Answer:
    problem: str | None = None  # None: a good answer; else what was wrong
    batch_size: int | None = None  # jobs that shared the model call, where the result says


Check = Callable[[httpx.Response], Answer]
BodyFor = Callable[[int], dict[str, Any]]


def record(
    answer: Answer, took: float, lat: list[float], errors: list[str], sizes: list[int]
) -> None:
    if answer.problem is not None:
        errors.append(answer.problem)
        return
    lat.append(took)
    if answer.batch_size is not None:
        sizes.append(answer.batch_size)


def run_sequential(url: str, body_for: BodyFor, n: int, check: Check) -> RunStats:
    lat: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    with httpx.Client(timeout=120) as client:
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            reply = client.post(url, json=body_for(i))
            took = (time.perf_counter() - t0) * 1000
            record(check(reply), took, lat, errors, sizes)
        elapsed = time.perf_counter() - start
    return RunStats(lat, elapsed, errors, sizes)


def run_concurrent(url: str, body_for: BodyFor, n: int, concurrency: int, check: Check) -> RunStats:
    return asyncio.run(_concurrent(url, body_for, n, concurrency, check))


async def _concurrent(
    url: str, body_for: BodyFor, n: int, concurrency: int, check: Check
) -> RunStats:
    lat: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    todo = iter(range(n))  # shared by the clients: each takes the next request number
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one_client() -> None:
            for i in todo:
                t0 = time.perf_counter()
                reply = await client.post(url, json=body_for(i))
                took = (time.perf_counter() - t0) * 1000
                record(check(reply), took, lat, errors, sizes)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return RunStats(lat, elapsed, errors, sizes)


def trainyard_check(reply: httpx.Response) -> Answer:
    if reply.status_code != 200:
        return Answer(f"HTTP {reply.status_code}: {reply.text[:300]}")
    status = reply.json()
    if status.get("status") != "succeeded":
        return Answer(f"job {status.get('status')}: {status.get('error')}")
    size = (status.get("result") or {}).get("batch_size")
    return Answer(batch_size=size if isinstance(size, int) else None)


def bare_check(reply: httpx.Response) -> Answer:
    ok = reply.status_code == 200
    return Answer(None if ok else f"HTTP {reply.status_code}: {reply.text[:300]}")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(header))  # fmt: skip
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                        for i, c in enumerate(row)))  # fmt: skip


def report_errors(name: str, stats: RunStats) -> None:
    if stats.errors:
        print(f"  {name}: {len(stats.errors)} failed requests, first: {stats.errors[0]}")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def compare_row(label: str, a: float, b: float) -> list[str]:
    """A table row: both figures and a/b."""
    return [label, f"{a:.1f}", f"{b:.1f}", f"{ratio(a, b):.2f}x"]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
