"""The training fork server on a real NVIDIA GPU: what docs/PERFORMANCE.md claims for
PyTorch, measured where CUDA exists. CI has no GPU; run this where one is.

    python bench/gpu_forkserver_check.py [--jobs 3] [--out DIR]

It runs the worker's own ``TrainingLauncher`` (framework ``pytorch``: the fork server
imports torch, torchvision and the runtimes, never CUDA) with a probe job
(``_gpu_fork_probe.py``) in place of the training child, and checks:

1. the fork server became ready, so torch's import did not initialise CUDA in it (the
   server refuses to fork after that: a forked child could not use the GPU);
2. every forked job is the server's child, found torch already imported, used CUDA (a bf16
   matmul, then it holds memory) and exited 0;
3. the same job started fresh (``python -m``), for the time from start to first CUDA
   result, forked against fresh;
4. after the jobs, the GPU's memory is back to where it was (the jobs' CUDA contexts went
   with their processes), read from ``nvidia-smi``.

Prints one JSON report (also ``DIR/gpu_forkserver_check.json``); exit 1 if a check failed.
Needs torch and the worker's small dependencies (redis, pydantic, setproctitle) on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO / "core" / "src"), str(REPO / "ai-worker" / "src")]

from trainyard_worker.launcher import TrainingLauncher  # noqa: E402
from trainyard_worker.processes import spawn_group  # noqa: E402

PROBE = "_gpu_fork_probe"


def gpu_memory_used_mb() -> int:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return sum(int(line) for line in out.split())


def run_job(proc: Any, started: float) -> dict[str, Any]:
    """The probe's JSON line, when it came (seconds since spawn) and how it ended."""
    line = proc.stdout.readline()
    seen_s = time.monotonic() - started
    code = proc.wait(timeout=120)
    report: dict[str, Any] = json.loads(line) if line.strip() else {"no_output": True}
    report.update(returncode=code, spawn_to_result_s=round(seen_s, 3))
    if code != 0:
        report["stderr"] = proc.stderr.read()[-2000:]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--hold-mb", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), str(REPO / "core" / "src"), str(REPO / "ai-worker" / "src"),
         env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)  # fmt: skip
    env["PYTHONUNBUFFERED"] = "1"
    baseline_mb = gpu_memory_used_mb()
    report: dict[str, Any] = {"baseline_memory_mb": baseline_mb, "problems": []}
    problems: list[str] = report["problems"]

    launcher = TrainingLauncher("pytorch", env, os.getpid(), True, child_module=PROBE)
    started = time.monotonic()
    launcher.start()
    ready = launcher.wait_ready(180)
    report["fork_server"] = {"ready": ready, "warm_up_s": round(time.monotonic() - started, 1),
                             "pid": launcher.server_pid}  # fmt: skip
    if not ready:
        problems.append("the fork server never became ready (CUDA touched by the imports?)")
    forked: list[dict[str, Any]] = []
    for _ in range(args.jobs if ready else 0):
        t0 = time.monotonic()
        proc = launcher.spawn(Path(str(args.hold_mb)), env)
        job = run_job(proc, t0)
        job["forked"] = job.get("ppid") == launcher.server_pid
        forked.append(job)
        if job["returncode"] != 0 or not job["forked"] or not job.get("torch_was_imported"):
            problems.append(f"forked job not as expected: {job}")
    fresh: list[dict[str, Any]] = []
    for _ in range(max(1, args.jobs - 1)):
        t0 = time.monotonic()
        proc = spawn_group([sys.executable, "-m", PROBE, str(args.hold_mb)], env)
        job = run_job(proc, t0)
        fresh.append(job)
        if job["returncode"] != 0:
            problems.append(f"fresh job failed: {job}")
    launcher.close()
    report["forked_jobs"], report["fresh_jobs"] = forked, fresh

    deadline = time.monotonic() + 30
    after = gpu_memory_used_mb()
    while after > baseline_mb + 256 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = gpu_memory_used_mb()
    report["memory_after_mb"] = after
    if after > baseline_mb + 256:
        problems.append(f"GPU memory not freed: {baseline_mb} MiB before, {after} MiB after")

    def median(jobs: list[dict[str, Any]], key: str) -> float | None:
        values = sorted(j[key] for j in jobs if key in j)
        return values[len(values) // 2] if values else None

    report["summary"] = {
        "forked_spawn_to_first_cuda_result_s": median(forked, "spawn_to_result_s"),
        "fresh_spawn_to_first_cuda_result_s": median(fresh, "spawn_to_result_s"),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_forkserver_check.json").write_text(text + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
