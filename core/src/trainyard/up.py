"""``trainyard up``: the whole system on one machine, in the foreground.

Starts an embedded Valkey (unless ``REDIS_URL`` is set), the backend and one worker per
requested runtime, writes the sample data, prints where the API is, and stops everything
it started on Ctrl-C (or SIGTERM). A child that dies takes the others down with it, so a
broken start never looks like a running system.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .embedded import EmbeddedServer
from .paths import default_paths
from .sample_data import ensure_samples

__all__ = ["UpConfig", "run_up"]


@dataclass
class UpConfig:
    repo_root: Path
    backend_python: Path
    # (runtime, its environment's python), one entry per worker process
    workers: list[tuple[str, Path]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    redis_port: int = 6390
    var_dir: Path | None = None
    data_root: Path | None = None


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the backend exited with code {proc.returncode} at start")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the backend did not answer {url} within {timeout_s}s")


def run_up(cfg: UpConfig) -> int:
    # The same defaults as the backend's and the worker's own (trainyard.paths): under the
    # checkout, or $TRAINYARD_HOME when set; the children then get them explicitly.
    defaults = default_paths(checkout=cfg.repo_root)
    paths = dataclasses.replace(
        defaults,
        data_root=(cfg.data_root or defaults.data_root).resolve(),
        var_dir=(cfg.var_dir or defaults.var_dir).resolve(),
    )
    var_dir, data_root = paths.var_dir, paths.data_root
    written = ensure_samples(data_root)
    print(f"data root: {data_root}" + (f" (wrote {len(written)} sample files)" if written else ""))

    server: EmbeddedServer | None = None
    redis_url = cfg.redis_url
    if not redis_url:
        server = EmbeddedServer(var_dir / "valkey", port=cfg.redis_port).start()
        redis_url = server.url
        print(f"redis: embedded Valkey at {redis_url} (AOF in {var_dir / 'valkey'})")
    else:
        print(f"redis: {redis_url}")

    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_ROOT": str(data_root),
        "MODEL_STORE": str(paths.model_store),
        "WORK_DIR": str(paths.work_dir),
        "HF_HUB_OFFLINE": "1",
    }
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        backend = subprocess.Popen(
            [str(cfg.backend_python), "-m", "uvicorn", "src.main:app", "--host", cfg.host,
             "--port", str(cfg.port),
             # Open event streams (dashboard tabs) would hold a graceful stop forever.
             "--timeout-graceful-shutdown", "10"],
            cwd=cfg.repo_root / "backend", env=env,
        )  # fmt: skip
        procs.append(("backend", backend))
        for runtime, python in cfg.workers:
            worker_env = {
                **env,
                "WORKER_TYPE": runtime,
                "USE_GPU": "true" if runtime.endswith("-gpu") else "false",
            }
            worker = subprocess.Popen(
                [str(python), "src/worker.py"], cwd=cfg.repo_root / "ai-worker", env=worker_env
            )
            procs.append((f"worker {runtime}", worker))
        base = f"http://{cfg.host}:{cfg.port}"
        _wait_http(f"{base}/health", backend, 60)
        names = ", ".join(runtime for runtime, _ in cfg.workers)
        print(f"\nTrainyard is up: API {base}  docs {base}/docs  workers: {names}")
        print("Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if server is not None:
            server.stop()
        print("stopped")
