"""The GPUs a GPU worker owns: discovery, per-job visibility, and the after-job check.

The supervisor never imports a framework, so it sees GPUs through ``nvidia-smi``:

- at start, the GPUs (all visible ones, or ``GPU_DEVICES``); none -> the worker refuses to
  start (a ``-gpu`` runtime never runs its jobs on CPU);
- each job's child gets exactly the healthy GPUs through ``CUDA_VISIBLE_DEVICES`` (by UUID,
  which, unlike an index, cannot silently point at another card);
- after each training job, the job's processes
  must be gone from the GPUs and their memory back to what it was before the job (within a
  tolerance, after a bounded wait). A GPU that stays dirty is taken out of service: no
  later job sees it, and the worker's registration reports it with the reason.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "Gpu",
    "GpuSet",
    "GpuSnapshot",
    "GpuUnavailable",
    "GpuUsage",
    "nvidia_smi_query",
    "parse_csv_rows",
]

log = logging.getLogger("trainyard.worker")

Query = Callable[[Sequence[str]], str]  # nvidia-smi arguments -> its stdout
# Before a job: memory used per GPU UUID (MiB), and the compute processes on each.
GpuSnapshot = tuple[dict[str, int], dict[str, set[int]]]


class GpuUnavailable(RuntimeError):
    """No usable NVIDIA GPU (no driver, no nvidia-smi, none of GPU_DEVICES present)."""


@dataclass
class Gpu:
    index: str
    uuid: str
    name: str
    memory_total_mb: int
    in_service: bool = True
    problem: str | None = None


@dataclass(frozen=True)
class GpuUsage:
    """One GPU's memory and utilisation now (for the worker's metrics port)."""

    index: str
    uuid: str
    memory_used_mb: int
    memory_total_mb: int
    utilization: float | None  # 0..1; None where the board does not say ("[N/A]", MIG)


def nvidia_smi_query(binary: str = "nvidia-smi", timeout_s: float = 20.0) -> Query:
    def run(args: Sequence[str]) -> str:
        try:
            done = subprocess.run(
                [binary, *args], capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except FileNotFoundError as exc:
            raise GpuUnavailable(f"{binary} not found: no NVIDIA driver on this machine") from exc
        except subprocess.TimeoutExpired as exc:
            raise GpuUnavailable(f"{binary} did not answer within {timeout_s:g} s") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise GpuUnavailable(
                f"{binary} failed (exit {done.returncode}): {detail[0] if detail else ''}"
            )
        return done.stdout

    return run


def parse_csv_rows(text: str, columns: int) -> list[list[str]]:
    """``--format=csv,noheader,nounits`` output as rows of stripped cells."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != columns:
            raise GpuUnavailable(f"unexpected nvidia-smi line: {line!r}")
        rows.append(cells)
    return rows


def _mb(cell: str) -> int:
    try:
        return int(float(cell))
    except ValueError:
        return 0  # "[N/A]" on some boards


class GpuSet:
    def __init__(self, gpus: list[Gpu], query: Query) -> None:
        self.gpus = gpus
        self._query = query

    @classmethod
    def discover(cls, query: Query, devices: str | None = None) -> GpuSet:
        out = query(
            ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
        )
        found = [Gpu(i, u, n, _mb(m)) for i, u, n, m in parse_csv_rows(out, 4)]
        if devices:
            wanted = [d.strip() for d in devices.split(",") if d.strip()]
            chosen = [g for g in found if g.index in wanted or g.uuid in wanted]
            missing = sorted(set(wanted) - {g.index for g in chosen} - {g.uuid for g in chosen})
            if missing:
                raise GpuUnavailable(
                    f"GPU_DEVICES names GPUs this machine does not have: {', '.join(missing)}"
                )
            found = chosen
        if not found:
            raise GpuUnavailable("nvidia-smi lists no GPU")
        return cls(found, query)

    @property
    def in_service(self) -> list[Gpu]:
        return [g for g in self.gpus if g.in_service]

    def visible_devices(self) -> str:
        """``CUDA_VISIBLE_DEVICES`` for a job: the GPUs still in service."""
        return ",".join(g.uuid for g in self.in_service)

    def memory_used(self) -> dict[str, int]:
        out = self._query(["--query-gpu=uuid,memory.used", "--format=csv,noheader,nounits"])
        return {u: _mb(m) for u, m in parse_csv_rows(out, 2)}

    def usage(self) -> list[GpuUsage]:
        """Memory and utilisation of this worker's GPUs (in service or not), one query."""
        fields = "uuid,memory.used,memory.total,utilization.gpu"
        out = self._query([f"--query-gpu={fields}", "--format=csv,noheader,nounits"])
        rows = {u: (used, total, util) for u, used, total, util in parse_csv_rows(out, 4)}
        usage = []
        for gpu in self.gpus:
            if gpu.uuid not in rows:
                continue  # gone from the bus: nothing to report
            used, total, util = rows[gpu.uuid]
            try:
                ratio: float | None = float(util) / 100
            except ValueError:
                ratio = None
            total_mb = _mb(total) or gpu.memory_total_mb  # "[N/A]": the size found at start
            usage.append(GpuUsage(gpu.index, gpu.uuid, _mb(used), total_mb, ratio))
        return usage

    def compute_pids(self) -> dict[str, set[int]]:
        out = self._query(
            ["--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader,nounits"]
        )
        pids: dict[str, set[int]] = {}
        for pid, uuid in parse_csv_rows(out, 2):
            pids.setdefault(uuid, set()).add(int(pid))
        return pids

    def snapshot(self) -> GpuSnapshot:
        """What the GPUs hold before a job: memory used and compute processes."""
        return self.memory_used(), self.compute_pids()

    def check_clean(
        self,
        before: GpuSnapshot,
        *,
        tolerance_mb: int,
        timeout_s: float,
        poll_s: float = 0.5,
    ) -> list[Gpu]:
        """Wait (bounded) until every in-service GPU is back to ``before``; take the ones
        that are not out of service and return them."""
        mem_before, pids_before = before
        deadline = time.monotonic() + timeout_s
        while True:
            dirty = self._dirty(mem_before, pids_before, tolerance_mb)
            if not dirty or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)  # the driver frees a killed process's memory asynchronously
        for gpu, reason in dirty:
            gpu.in_service, gpu.problem = False, reason
        return [g for g, _ in dirty]

    def _dirty(
        self, mem_before: dict[str, int], pids_before: dict[str, set[int]], tolerance_mb: int
    ) -> list[tuple[Gpu, str]]:
        mem_now, pids_now = self.snapshot()
        dirty = []
        for gpu in self.in_service:
            stray = sorted(pids_now.get(gpu.uuid, set()) - pids_before.get(gpu.uuid, set()))
            grown = mem_now.get(gpu.uuid, 0) - mem_before.get(gpu.uuid, 0)
            if stray:
                dirty.append((gpu, f"processes still on the GPU after the job: {stray}"))
            elif grown > tolerance_mb:
                dirty.append((gpu, f"{grown} MiB still in use after the job"))
        return dirty

    def safe_snapshot(self) -> GpuSnapshot | None:
        try:
            return self.snapshot()
        except GpuUnavailable as exc:
            log.error("GPU snapshot failed: %s", exc)
            return None

    def verify_clean(
        self, before: GpuSnapshot, *, tolerance_mb: int, timeout_s: float
    ) -> list[Gpu]:
        """``check_clean``, where a failing nvidia-smi takes every GPU out of service (the
        worker cannot vouch for them any more)."""
        try:
            return self.check_clean(before, tolerance_mb=tolerance_mb, timeout_s=timeout_s)
        except GpuUnavailable as exc:
            dirty = self.in_service
            for gpu in dirty:
                gpu.in_service, gpu.problem = False, f"nvidia-smi failed after a job: {exc}"
            return dirty

    def describe(self) -> list[dict[str, object]]:
        return [asdict(g) for g in self.gpus]
