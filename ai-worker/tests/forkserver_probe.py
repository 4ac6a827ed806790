"""A stand-in for the training child in the fork server tests (``child_module``): its
``main()`` does what its spec (the JSON file in ``sys.argv[1]``) asks and first writes a
report of what it found at entry: its ids, parent, environment, modules, descriptors."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainyard_worker.processes import die_with_parent


def _fds() -> list[int]:
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    return sorted(fd for fd in listed if os.path.exists(f"/proc/self/fd/{fd}"))


def _pdeathsig() -> int:
    value = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
    return value.value


def _train_torch() -> dict[str, Any]:
    """A tiny linear regression, seeded: the same losses in any healthy process."""
    import torch

    unseeded = torch.rand(3).tolist()  # the default generator as the process found it
    torch.set_num_threads(2)  # an intra-op pool made after the fork
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = x @ torch.randn(16, 1) + 0.01 * torch.randn(512, 1)
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "unseeded": unseeded, "threads": torch.get_num_threads()}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    report: dict[str, Any] = {
        "loaded_at_entry": [m for m in spec.get("watch_modules", []) if m in sys.modules],
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "argv": sys.argv,
        "env": {key: os.environ.get(key) for key in spec.get("env_keys", [])},
        "fds": _fds(),
        "stdin": os.readlink("/proc/self/fd/0"),
        "cmdline": Path("/proc/self/cmdline").read_bytes().decode(),
        "comm": Path("/proc/self/comm").read_text().strip(),
        "pdeathsig": _pdeathsig(),
    }
    if "supervisor_pid" in spec:
        die_with_parent(int(spec["supervisor_pid"]))  # exits 1 if it does not see its parent
        report["survived_die_with_parent"] = True
    if spec.get("numpy"):
        import numpy as np

        report["numpy_draw"] = float(np.random.random())
    if spec.get("torch"):
        report["torch"] = _train_torch()
    if spec.get("grandchild"):
        report["grandchild"] = subprocess.Popen(["sleep", "600"]).pid
    tmp = Path(spec["report"] + ".tmp")
    tmp.write_text(json.dumps(report), encoding="utf-8")
    tmp.replace(spec["report"])
    for line in spec.get("stdout", []):
        print(line, flush=True)
    for line in spec.get("stderr", []):
        print(line, file=sys.stderr, flush=True)
    if spec.get("hold"):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until killed (bounded)
            time.sleep(0.5)
    if spec.get("raise"):
        raise RuntimeError(spec["raise"])
    return int(spec.get("exit", 0))


if __name__ == "__main__":  # a fresh process: python -m forkserver_probe SPEC
    raise SystemExit(main())


# -- for the tests that use it -----------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent
SRC_DIR = TESTS_DIR.parent / "src"


def probe_env(**extra: str) -> dict[str, str]:
    """A job environment in which this module imports (the test process's, less pytest's
    per-test variable, which the probe then must not see)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), str(TESTS_DIR)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_spec(folder: Path, name: str, **spec: Any) -> tuple[Path, Path]:
    """(spec path, report path) of one probe job in ``folder``/``name``."""
    work = folder / name
    work.mkdir(parents=True)
    report = work / "report.json"
    path = work / "spec.json"
    path.write_text(json.dumps({"report": str(report), **spec}), encoding="utf-8")
    return path, report


def read_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def training_spec(
    work: Path, redis_url: str, namespace: str, job: tuple[str, str], framework: str,
    task: str, data_root: Path, request: dict[str, Any],
) -> Path:  # fmt: skip
    """A real training child's spec for a claimed ``job`` (job id, attempt id), written as
    the supervisor writes it; the artifact goes to ``work``/out."""
    (work / "out").mkdir(parents=True)
    spec = {
        "job_id": job[0], "attempt_id": job[1], "supervisor_pid": os.getpid(),
        "redis_url": redis_url, "namespace": namespace, "data_root": str(data_root),
        "framework": framework, "task": task, "device": "cpu",
        "model_store": str(work / "models"), "memory_limit_mb": None, "request": request,
        "out_dir": str(work / "out"), "result_path": str(work / "result.json"),
    }  # fmt: skip
    path = work / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path
