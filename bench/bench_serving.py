"""Sync inference over HTTP: Trainyard against a bare FastAPI endpoint, in one run.

    "$(./scripts/env.sh backend)"/bin/python bench/bench_serving.py            # scikit-learn
    ... bench/bench_serving.py --batch-size 16 --batch-wait-ms 2      # batching knobs
    ... bench/bench_serving.py --model bert                           # batching on vs off

(from the repository root, with this clone's backend environment; `cd backend && uv run
python ../bench/bench_serving.py` does the same.)

It starts everything itself on free ports under a temporary folder: an embedded Valkey,
the backend (uvicorn, one process, as ``trainyard up`` starts it) and ONE worker, then
trains the README's model and measures.

sklearn (default): the README's random forest (``model_name`` set), then
  (a) ``POST /jobs/inference?wait=30`` with the README's inference body and a real row,
      ``--requests`` sequential requests after a warm-up: p50/p95;
  (b) a bare FastAPI app in its own uvicorn process (the sklearn environment's Python,
      FastAPI/uvicorn borrowed from the backend's environment) that loaded the same
      ``model.skops`` once at start (skops with the worker's trusted types) and answers
      the same body with ``predict_proba`` in-process: p50/p95;
  (c) both at ``--concurrency`` clients (httpx, asyncio): throughput and p50.
  Trainyard and bare requests alternate in rounds, so load drift hits both alike.
  Targets (issue 9 section 1): c1 p50 <= bare + 2 ms; c16 throughput >= 0.5x bare.

bert: the seed's quick-start BERT body (one epoch) on the pytorch-2.1 worker, then the
  same requests with batching off (MAX_BATCH_SIZE=1) and on (``--batch-size``/
  ``--batch-wait-ms``, or the worker's defaults), a fresh worker for each, alternating
  ``--rounds`` times: throughput at ``--concurrency`` (default 32) and p50 at concurrency 1.
  Targets (section 2): on >= 4x off at c32; c1 p50 on within max_batch_wait_ms of off.

The worker gets ``--batch-size``/``--batch-wait-ms`` as MAX_BATCH_SIZE/MAX_BATCH_WAIT_MS
(a worker without those settings ignores them). Nothing asserts on these numbers: the
script exits 0 when a target is missed. The harness (``BenchSystem``, in _http_system.py)
is shared with bench_affinity.py and bench_training_start.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from _http_system import (
    BenchSystem,
    RunStats,
    add_common_args,
    bare_check,
    bench_root,
    compare_row,
    env_python,
    print_load,
    print_table,
    ratio,
    report_errors,
    run_concurrent,
    run_sequential,
    threads_per_worker,
    trainyard_check,
    verdict,
)

from trainyard.embedded import free_port
from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES

# --------------------------------------------------------------------- bare FastAPI app


def serve_bare(model_path: str, port: int, extra_site: str) -> None:
    """The bare endpoint: run by the sklearn environment's Python, with FastAPI and uvicorn
    borrowed from the backend's environment (appended, so the sklearn env's own packages
    win; the packages both share are the same versions in the lock)."""
    sys.path.append(extra_site)
    import numpy as np
    import skops.io as sio
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    try:
        from trainyard_worker.runtimes.sklearn_runtime import TRUSTED_TYPES

        trusted = list(TRUSTED_TYPES)
    except ImportError:  # the runtime moved: trust what our own file holds
        trusted = sio.get_untrusted_types(file=model_path)
    model = sio.load(model_path, trusted=trusted)
    classes = [str(c) for c in model.classes_]

    class Body(BaseModel):
        model_id: str
        input_data: str
        parameters: dict[str, Any] = {}

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    def predict(body: Body) -> dict[str, Any]:
        row = np.asarray([[float(c) for c in body.input_data.split(",")]], dtype=np.float64)
        proba = model.predict_proba(row)[0]
        probabilities = {c: float(p) for c, p in zip(classes, proba, strict=True)}
        return {"prediction": classes[int(proba.argmax())], "probabilities": probabilities}

    # This module's annotations are strings (PEP 563), and Body is local: give FastAPI the
    # class itself, or it would take `body` for a query parameter.
    predict.__annotations__["body"] = Body
    app.post("/predict")(predict)

    uvicorn.run(app, host="127.0.0.1", port=port)  # default logging, as the backend runs


def start_bare(system: BenchSystem, model_path: Path) -> str:
    site = subprocess.run(
        [env_python("backend"), "-c",
         "import fastapi, os; print(os.path.dirname(os.path.dirname(fastapi.__file__)))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    args = [env_python("sklearn"), str(Path(__file__).resolve()), "serve-bare", str(model_path),
            str(port), site]  # fmt: skip
    proc = system.spawn("bare", args, system.env())
    base = f"http://127.0.0.1:{port}"
    system.wait_http(f"{base}/health", proc, system.root / "logs" / "bare.log")
    return f"{base}/predict"


# ---------------------------------------------------------------------------- sklearn


def batch_settings(size: int | None, wait_ms: float | None) -> dict[str, str]:
    out = {}
    if size is not None:
        out["MAX_BATCH_SIZE"] = str(size)
    if wait_ms is not None:
        out["MAX_BATCH_WAIT_MS"] = f"{wait_ms:g}"
    return out


def describe(settings: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "the worker's defaults"


def bench_sklearn(args: argparse.Namespace, root: Path) -> None:
    settings = batch_settings(args.batch_size, args.batch_wait_ms)
    print(f"one sklearn worker with {describe(settings)}; {args.requests} requests per row\n")
    with BenchSystem(root, threads_per_worker(1), args.repo) as system:
        system.start_worker("sklearn", settings)
        name = "random_forest_model_789"
        system.train({**TRAINING_BODIES["random_forest"], "model_name": name})
        model = system.http.get(f"/models/{name}").json()
        row = str(model["details"].get("example_input") or "5.1,3.5,1.4,0.2")
        body = {**INFERENCE_BODIES["tabular"], "model_id": name, "input_data": row}
        ours_url = f"{system.base_url}/jobs/inference?wait=30"
        bare_url = start_bare(system, system.model_store / model["artifact"] / "model.skops")

        def body_for(_: int) -> dict[str, Any]:
            return body

        ours_answer = httpx.post(ours_url, json=body, timeout=60).json().get("result") or {}
        for extra in ("model_id", "batch_size"):  # Trainyard's own fields
            ours_answer.pop(extra, None)
        bare_answer = httpx.post(bare_url, json=body, timeout=60).json()
        same = ours_answer == bare_answer
        print(f"input row {row!r}: answers agree: {'yes' if same else 'NO'}")
        if not same:
            print(f"  trainyard: {ours_answer}\n  bare:      {bare_answer}")
        # Warm-up (the inference host starts and loads the model on its first request).
        run_sequential(ours_url, body_for, 20, trainyard_check)
        run_sequential(bare_url, body_for, 20, bare_check)

        rounds = 4  # alternate so that load drift on a shared machine hits both alike
        ours1 = bare1 = oursn = baren = RunStats([], 0.0, [])
        per = max(1, args.requests // rounds)
        for _ in range(rounds):
            ours1 = ours1.merge(run_sequential(ours_url, body_for, per, trainyard_check))
            bare1 = bare1.merge(run_sequential(bare_url, body_for, per, bare_check))
        c = args.concurrency
        for _ in range(2):
            oursn = oursn.merge(run_concurrent(ours_url, body_for, per * 2, c, trainyard_check))
            baren = baren.merge(run_concurrent(bare_url, body_for, per * 2, c, bare_check))

    for label, stats in (("trainyard c1", ours1), ("bare c1", bare1),
                         (f"trainyard c{c}", oursn), (f"bare c{c}", baren)):  # fmt: skip
        report_errors(label, stats)
    print()
    print_table(
        ["measure", "Trainyard", "bare FastAPI", "Trainyard/bare"],
        [
            compare_row("c1 p50, ms", ours1.p50, bare1.p50),
            compare_row("c1 p95, ms", ours1.pct(0.95), bare1.pct(0.95)),
            compare_row(f"c{c} throughput, req/s", oursn.throughput, baren.throughput),
            compare_row(f"c{c} p50, ms", oursn.p50, baren.p50),
            [f"c{c} jobs per model call (mean)", oursn.mean_batch, "1", ""],
        ],
    )
    print()
    gap = ours1.p50 - bare1.p50
    print(f"target c1 p50 <= bare + 2 ms: Trainyard is bare + {gap:.1f} ms -> {verdict(gap <= 2)}")
    share = ratio(oursn.throughput, baren.throughput)
    print(f"target c{c} throughput >= 0.5x bare: {share:.2f}x -> {verdict(share >= 0.5)}")


# ------------------------------------------------------------------------------- bert


def sample_texts(system: BenchSystem, n: int = 64) -> list[str]:
    import csv

    with (system.data_root / "sentiment_analysis.csv").open(newline="") as fh:
        return [row["text"] for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


def bench_bert(args: argparse.Namespace, root: Path) -> None:
    off = {"MAX_BATCH_SIZE": "1"}
    on = batch_settings(args.batch_size, args.batch_wait_ms)
    c = args.concurrency
    print(f"one pytorch-2.1 worker; batching off: {describe(off)}; on: {describe(on)}; "
          f"{args.requests} requests per row in {args.rounds} rounds\n")  # fmt: skip
    with BenchSystem(root, threads_per_worker(1), args.repo) as system:
        name = "bert_bench_model"
        body = {**TRAINING_BODIES["bert_quickstart"], "model_name": name}
        body["hyperparameters"] = {**body["hyperparameters"], "epochs": 1}
        worker = system.start_worker("pytorch-2.1", off)
        started = time.perf_counter()
        trained = system.train(body)
        print(f"trained {name} in {time.perf_counter() - started:.1f} s "
              f"(accuracy {trained['result']['metrics'].get('accuracy')})")  # fmt: skip
        texts = sample_texts(system)
        template = INFERENCE_BODIES["quickstart"]
        url = f"{system.base_url}/jobs/inference?wait=30"

        def body_for(i: int) -> dict[str, Any]:
            return {**template, "model_id": name, "input_data": texts[i % len(texts)]}

        empty = RunStats([], 0.0, [])
        results = {"off": (empty, empty), "on": (empty, empty)}
        per = max(1, args.requests // args.rounds)
        # Off and on alternate (a fresh worker each time) so that load drift on a shared
        # machine hits both alike.
        for n in range(args.rounds):
            for label, settings in (("off", off), ("on", on)):
                if n or label == "on":
                    system.stop_worker(worker)
                    worker = system.start_worker("pytorch-2.1", settings)
                run_sequential(url, body_for, 10, trainyard_check)  # host start + model load
                one = run_sequential(url, body_for, per, trainyard_check)
                many = run_concurrent(url, body_for, per, c, trainyard_check)
                results[label] = (results[label][0].merge(one), results[label][1].merge(many))

    for label, (one, many) in results.items():
        report_errors(f"batching {label} c1", one)
        report_errors(f"batching {label} c{c}", many)
    (off1, offn), (on1, onn) = results["off"], results["on"]
    print()
    print_table(
        ["measure", "batching on", "batching off", "on/off"],
        [
            compare_row(f"c{c} throughput, req/s", onn.throughput, offn.throughput),
            compare_row(f"c{c} p50, ms", onn.p50, offn.p50),
            compare_row("c1 p50, ms", on1.p50, off1.p50),
            compare_row("c1 p95, ms", on1.pct(0.95), off1.pct(0.95)),
            [f"c{c} jobs per model call (mean)", onn.mean_batch, offn.mean_batch, ""],
        ],
    )
    print()
    gain = ratio(onn.throughput, offn.throughput)
    print(f"target c{c} throughput on >= 4x off: {gain:.2f}x -> {verdict(gain >= 4)}")
    gap = on1.p50 - off1.p50
    if args.batch_wait_ms is None:
        print(f"target c1 p50 on within max_batch_wait_ms of off: on is off + {gap:.1f} ms "
              "(the worker's default wait; pass --batch-wait-ms to judge)")  # fmt: skip
    else:
        ok = gap <= args.batch_wait_ms
        print(f"target c1 p50 on within {args.batch_wait_ms:g} ms of off: on is off + "
              f"{gap:.1f} ms -> {verdict(ok)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-bare"]:
        serve_bare(argv[1], int(argv[2]), argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sklearn", "bert"), default="sklearn")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured row")
    parser.add_argument("--concurrency", type=int, help="clients (default 16; bert: 32)")
    parser.add_argument("--rounds", type=int, default=2, help="bert: off/on alternations")
    parser.add_argument("--batch-size", type=int, help="worker MAX_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, help="worker MAX_BATCH_WAIT_MS")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or (32 if args.model == "bert" else 16)
    print_load(f"bench_serving: {args.model}")
    with bench_root(args.keep) as root:
        (bench_bert if args.model == "bert" else bench_sklearn)(args, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
