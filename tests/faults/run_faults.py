"""The long fault-injection run (the CI suite, ``test_faults.py``, is a short one):

    python tests/faults/run_faults.py --runs 200 --seed 1 \\
        [--faults kill9_supervisor,...] [--runtimes sklearn,pytorch-2.1,tensorflow] [--markdown]

Needs TRAINYARD_BACKEND_PYTHON, TRAINYARD_WORKER_PYTHON (the sklearn worker) and, for the
deep-learning runtimes, TRAINYARD_RUNTIME_PYTHONS ("runtime=/path/python,..."), as
scripts/test.sh exports them; run it with the backend environment's python.

Runs cycle through (runtime, fault kind): every kind on sklearn (each of FAULT_KINDS,
kill9_batch with a burst of inference jobs, and "mixed", which draws several at random),
and kill -9 of a training child and of a supervisor on each deep-learning runtime. Each
run uses seed + its index. Prints a table per runtime and fault kind, every violation,
and exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Pythons
from injectors import BATCH_FAULTS, FAULT_KINDS
from scenario import DL_FAULTS, RunResult, RunSpec, Session

from trainyard.sample_data import ensure_samples

__all__ = ["main", "plan_runs", "render_table", "run_all"]

KINDS = (*FAULT_KINDS, *BATCH_FAULTS, "mixed")
COLUMNS = ("runtime", "fault", "runs", "jobs", "faults injected", "missed", "lost",
           "duplicate finishes", "stale writes refused", "refused writes", "reruns",
           "submit retries", "violations", "wall s")  # fmt: skip
NUMBERS = ("runs", "jobs", "injected", "missed", "lost", "duplicate_finishes",
           "stale_writes_refused", "refused_writes", "reruns", "client_retries", "violations",
           "wall")  # fmt: skip


def plan_runs(
    runs: int, seed: int, faults: Sequence[str], runtimes: Sequence[str], jobs: int, dl_jobs: int
) -> list[tuple[str, RunSpec]]:
    """``runs`` runs cycling through every (runtime, kind) pair asked for."""
    pairs: list[tuple[str, str]] = []
    for runtime in runtimes:
        if runtime == "sklearn":
            pairs += [(runtime, kind) for kind in faults]
        else:
            # Both kills in one run ("dl") when both (or "mixed") are asked for.
            dl = [k for k in faults if k in DL_FAULTS]
            if "mixed" in faults or len(dl) == len(DL_FAULTS):
                pairs.append((runtime, "dl"))
            else:
                pairs += [(runtime, kind) for kind in dl]
    if not pairs:
        raise SystemExit("nothing to run: no fault kind applies to the runtimes asked for")
    planned = []
    for i in range(runs):
        runtime, kind = pairs[i % len(pairs)]
        # A server restart twice per run: SIGTERM, then SIGKILL (they alternate).
        count = 3 if kind == "mixed" else 2 if kind in ("dl", "restart_redis") else 1
        size = dl_jobs if runtime != "sklearn" else max(jobs, 12) if kind in BATCH_FAULTS else jobs
        planned.append((runtime, RunSpec(kind, seed + i, size, count)))
    return planned


def run_all(
    planned: Sequence[tuple[str, RunSpec]],
    pythons: Pythons,
    data_root: Path,
    work: Path,
    runs_per_system: int,
    canary: str | None = None,
) -> tuple[list[RunResult], list[str]]:
    """Run everything, one runtime after another, a fresh system every ``runs_per_system``
    runs; returns the results and the session-level problems."""
    by_runtime: dict[str, list[RunSpec]] = defaultdict(list)
    for runtime, spec in planned:
        by_runtime[runtime].append(spec)
    results: list[RunResult] = []
    problems: list[str] = []
    for runtime, specs in by_runtime.items():
        if runtime not in pythons.runtimes:
            raise SystemExit(f"no python for runtime {runtime}: set TRAINYARD_RUNTIME_PYTHONS")
        for start in range(0, len(specs), runs_per_system):
            batch = specs[start : start + runs_per_system]
            root = work / f"{runtime.replace('.', '_')}-s{batch[0].seed}"
            with Session(root, pythons, data_root, runtime, _workers(runtime), canary) as session:
                session.start()
                for spec in batch:
                    result = session.run(spec)
                    results.append(result)
                    _print_run(result, root)
                problems += [f"{root.name}: {p}" for p in session.final_check()]
    return results, problems


def _workers(runtime: str) -> int:
    return 2 if runtime == "sklearn" else 1


def _print_run(result: RunResult, root: Path) -> None:
    faults = ", ".join(f.label + (f" (missed: {f.missed})" if f.missed else "")
                       for f in result.faults)  # fmt: skip
    status = "ok" if not result.violations else f"{len(result.violations)} VIOLATIONS"
    print(f"run seed={result.spec.seed} {result.runtime} {result.spec.kind}: "
          f"{result.jobs} jobs, faults [{faults}], {result.wall_s:.0f}s: {status}",
          flush=True)  # fmt: skip
    notable = ("ended_dead", "handed_back", "refused_writes", "writes_unanswered",
               "finish_reply_lost", "client_retries", "client_replays")  # fmt: skip
    counts = {k: result.findings.counts[k] for k in notable if result.findings.counts[k]}
    if counts:
        print(f"   {counts}", flush=True)
    for violation in result.violations:
        print(f"   VIOLATION: {violation}", flush=True)
    if result.violations:
        print(f"   (logs and ledger under {root})", flush=True)


def render_table(results: Sequence[RunResult], markdown: bool = False) -> str:
    rows: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for result in results:
        rows[(result.runtime, result.spec.kind)].append(result)
    lines = []
    totals: Counter[str] = Counter()
    for (runtime, kind), group in rows.items():
        injected: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for result in group:
            injected.update(result.injected)
            counts.update(result.findings.counts)
        missed = sum(1 for r in group for f in r.faults if f.missed)
        numbers = {"runs": len(group), "jobs": sum(r.jobs for r in group),
                   "injected": sum(injected.values()), "missed": missed,
                   **{k: counts[k] for k in ("lost", "duplicate_finishes",
                      "stale_writes_refused", "refused_writes", "reruns", "client_retries")},
                   "violations": sum(len(r.violations) for r in group),
                   "wall": round(sum(r.wall_s for r in group))}  # fmt: skip
        totals.update(numbers)
        injected_text = ", ".join(f"{k} {n}" for k, n in sorted(injected.items())) or "0"
        lines.append(
            [
                runtime,
                kind,
                *(injected_text if k == "injected" else str(numbers[k]) for k in NUMBERS),
            ]
        )
    lines.append(["all", "", *(str(totals[k]) for k in NUMBERS)])
    if markdown:
        out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(KINDS),
                        help=f"comma-separated, of: {', '.join(KINDS)}")  # fmt: skip
    parser.add_argument("--runtimes", default="sklearn")
    parser.add_argument("--jobs", type=int, default=8, help="jobs per sklearn run")
    parser.add_argument("--dl-jobs", type=int, default=2, help="jobs per deep-learning run")
    parser.add_argument("--runs-per-system", type=int, default=10,
                        help="runs one system serves before a fresh one starts")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, help="kept; default: a temporary folder")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--canary", choices=["unfenced"],
                        help="break the system on purpose (fenced writes use the attempt that "
                        "holds the job now): the run must then FIND violations; exit 0 if it "
                        "does")  # fmt: skip
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    pythons = Pythons.from_env()
    if pythons is None:
        parser.error("set TRAINYARD_BACKEND_PYTHON and TRAINYARD_WORKER_PYTHON")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    planned = plan_runs(args.runs, args.seed, faults, runtimes, args.jobs, args.dl_jobs)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="trainyard-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    data_root = work / "data"
    ensure_samples(data_root)
    started = time.monotonic()
    results, problems = run_all(planned, pythons, data_root, work, args.runs_per_system,
                                args.canary)  # fmt: skip
    violations = sum(len(r.violations) for r in results) + len(problems)
    print()
    print(render_table(results, args.markdown))
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f}s; "
          f"{violations} violations")  # fmt: skip
    for problem in problems:
        print(f"SESSION VIOLATION: {problem}")
    if args.canary:
        print(f"canary {args.canary}: the checks " + ("caught it" if violations else "MISSED it"))
        return 0 if violations else 1
    if violations:
        print(f"logs and ledgers kept under {work}")
        return 1
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
