"""Model affinity: how often each of two workers loads each of four models.

    "$(./scripts/env.sh backend)"/bin/python bench/bench_affinity.py
    # options: --requests 400 --concurrency 2

(The harness is _http_system.py's: a private Valkey, the backend under uvicorn, workers
from the runtime environments; see there.) Two sklearn workers, each with
INFERENCE_CACHE_MODELS=2 (so that four models do not all fit in one worker), four random
forests trained on the sample data, then ``--requests`` inference requests (``?wait=30``)
for the four models in turn, from ``--concurrency`` clients. Run twice on the same models:
affinity on (the worker's default AFFINITY_MS, or ``--affinity-ms``) and off
(AFFINITY_MS=0), with fresh workers each time.

How loads are counted, from outside the worker: each worker gets its own model store (a
copy of the trained artifacts), and the bench watches every ``model.skops`` in both stores
with inotify (IN_OPEN). Nothing else opens an artifact after training, so the opens of one
worker's copy of a model, divided by the opens one load makes (measured on the run's first
request, which always loads), is how many times that worker loaded that model. Where a
worker record in GET /workers carries a ``model_loads`` field, it is printed beside.

Target (issue 9 section 3): in steady state no model is loaded more than once per worker.
The table shows loads over the whole run and over its second half, taken as the steady
state: the target is met when no worker loads any model more than once in that half.
Nothing asserts on these numbers; the script exits 0 when the target is missed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _http_system import (
    BenchSystem,
    RunStats,
    add_common_args,
    bench_root,
    print_load,
    print_table,
    run_concurrent,
    threads_per_worker,
    trainyard_check,
)

from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES

__all__ = ["OpenCounter", "main"]

MODELS = [f"affinity_rf_{i}" for i in range(4)]
_IN_OPEN = 0x20
_IN_CLOSE_NOWRITE = 0x10
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


@dataclass
class OpenCounter:
    """Counts IN_OPEN events per watched folder (Linux inotify, through libc)."""

    fd: int = -1
    labels: dict[int, tuple[str, str]] = field(default_factory=dict)  # wd -> (worker, model)
    opens: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            sys.exit(f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}")

    def watch(self, folder: Path, label: tuple[str, str]) -> None:
        # The kernel merges an event into an identical one still unread: two opens in a row
        # would count as one. Watching closes too puts a close between them.
        mask = _IN_OPEN | _IN_CLOSE_NOWRITE
        wd = self._libc.inotify_add_watch(self.fd, str(folder).encode(), mask)
        if wd < 0:
            sys.exit(f"inotify_add_watch {folder}: {os.strerror(ctypes.get_errno())}")
        self.labels[wd] = label

    def drain(self) -> Counter[tuple[str, str]]:
        """Reads what has arrived; returns the running totals."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.opens
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & _IN_OPEN and name == b"model.skops" and wd in self.labels:
                    self.opens[self.labels[wd]] += 1

    def close(self) -> None:
        os.close(self.fd)


def train_models(system: BenchSystem) -> dict[str, str]:
    """Trains the four models (different seeds); returns model id -> artifact path."""
    artifacts = {}
    base = TRAINING_BODIES["random_forest"]
    for i, name in enumerate(MODELS):
        hp = {**base["hyperparameters"], "random_state": 42 + i}
        system.train({**base, "hyperparameters": hp, "model_name": name})
        artifacts[name] = system.http.get(f"/models/{name}").json()["artifact"]
    return artifacts


def run_phase(
    system: BenchSystem, label: str, settings: dict[str, str], artifacts: dict[str, str],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], RunStats]:  # fmt: skip
    """Two fresh workers with these settings, each on its own copy of the model store;
    the requests; the loads per (worker, model), whole run and second half."""
    workers = []
    counter = OpenCounter()
    for n in range(2):
        store = system.root / f"store-{label}-{n}"
        shutil.copytree(system.model_store, store)
        worker = system.start_worker("sklearn", settings, model_store=store)
        workers.append(worker)
        for model_id, artifact in artifacts.items():
            counter.watch(store / artifact, (worker.worker_id, model_id))
    url = f"{system.base_url}/jobs/inference?wait=30"
    template = INFERENCE_BODIES["tabular"]

    def body_for(i: int) -> dict[str, Any]:
        return {**template, "model_id": MODELS[i % len(MODELS)], "input_data": "5.1,3.5,1.4,0.2"}

    # The first request always loads its model (both caches are empty): it calibrates.
    first = run_concurrent(url, body_for, 1, 1, trainyard_check)
    per_load = sum(counter.drain().values())
    half = max(0, args.requests // 2 - 1)
    stats = first.merge(
        run_concurrent(url, lambda i: body_for(i + 1), half, args.concurrency, trainyard_check)
    )
    at_half = Counter(counter.drain())
    rest = args.requests - 1 - half
    stats = stats.merge(
        run_concurrent(url, lambda i: body_for(i + 1 + half), rest, args.concurrency,
                       trainyard_check)
    )  # fmt: skip
    total = Counter(counter.drain())
    counter.close()
    exposed = {w["worker_id"]: w.get("model_loads") for w in system.list_workers()}
    for worker in workers:
        system.stop_worker(worker)
    per_load = max(per_load, 1)
    loads = {key: total[key] / per_load for key in total}
    late = {key: (total[key] - at_half[key]) / per_load for key in total}
    names = {w.worker_id: f"worker {chr(ord('A') + i)}" for i, w in enumerate(workers)}
    return {
        "loads": loads, "late": late, "names": names, "per_load": per_load,
        "exposed": {names[k]: v for k, v in exposed.items() if k in names and v is not None},
    }, stats  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=2, help="clients")
    parser.add_argument("--cache-models", type=int, default=2, help="INFERENCE_CACHE_MODELS")
    parser.add_argument("--affinity-ms", type=int, help="AFFINITY_MS when on (default: worker's)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    print_load("bench_affinity: two sklearn workers, four models")
    cache = {"INFERENCE_CACHE_MODELS": str(args.cache_models)}
    on = {**cache, **({"AFFINITY_MS": str(args.affinity_ms)} if args.affinity_ms else {})}
    phases = [("on", on), ("off", {**cache, "AFFINITY_MS": "0"})]
    print(f"{args.requests} requests per phase, models in turn, concurrency {args.concurrency}; "
          + "; ".join(f"affinity {p}: " + ", ".join(f"{k}={v}" for k, v in s.items())
                      for p, s in phases) + "\n")  # fmt: skip
    results = {}
    threads = threads_per_worker(2)
    with bench_root(args.keep) as root, BenchSystem(root, threads, args.repo) as system:
        trainer = system.start_worker("sklearn")
        artifacts = train_models(system)
        system.stop_worker(trainer)
        for label, settings in phases:
            results[label] = run_phase(system, label, settings, artifacts, args)

    for label, (found, stats) in results.items():
        print(f"affinity {label}: {len(stats.latencies_ms)} requests ok, "
              f"{stats.throughput:.1f} req/s, p50 {stats.p50:.1f} ms, "
              f"{len(stats.errors)} failed"
              + (f" (first: {stats.errors[0]})" if stats.errors else "")
              + f"; {found['per_load']} opens of model.skops per load")  # fmt: skip
        rows = []
        for (worker_id, model_id), n in sorted(found["loads"].items()):
            late = found["late"].get((worker_id, model_id), 0)
            rows.append([f"{found['names'][worker_id]}  {model_id}", f"{n:g}", f"{late:g}"])
        print_table(["worker / model", "loads", "loads in 2nd half"], rows)
        if found["exposed"]:
            print(f"model_loads in GET /workers: {found['exposed']}")
        worst = max(found["loads"].values(), default=0)
        late_worst = max(found["late"].values(), default=0)
        late_total = sum(found["late"].values())
        ok = late_worst <= 1
        print(f"whole run: {sum(found['loads'].values()):g} loads, at most {worst:g} of one model "
              f"by one worker; steady state (2nd half): {late_total:g} loads, at most "
              f"{late_worst:g} of one model by one worker -> target (at most 1) "
              f"{'met' if ok else 'MISSED'}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
