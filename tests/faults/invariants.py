"""The checks run after every fault run, on the queue's records and on the ledger (every
fenced write any process made, with its outcome; see ``ledger/sitecustomize.py``).

1. Every acknowledged job exists (none lost) and ends in exactly one terminal state.
2. None is finished twice: at most one applied terminal finish per job; a job that ended
   by a finish (not by the reaper, a cancel or an expiry) has exactly one.
3. Attempts never exceed max_attempts; a graceful hand-back does not count one.
4. A terminal state never changes: the job's event stream has exactly one terminal
   ``state`` event, it equals the record's state, nothing comes after it, and the record
   read when the job was first seen terminal is the record at the end.
5. A stale attempt's writes are refused: every applied write (renew, report, finish,
   release) comes from the attempt that held the job at that moment, judged by the
   ledger's clock (a newer claim, a reap or the attempt's own end definitely before the
   write means it was stale). Refused writes are counted.
6. The queue's indexes agree with the job records (``trainyard.consistency``).
7. Each succeeded training job registered exactly one model, whose record names it and
   whose artifact is on disk; no other job registered one.
8. Outcomes fit the job: a user error fails once and is never retried; a job cancelled
   while queued ends cancelled; a healthy job ends succeeded (or dead after its attempts).

The ledger logs the batch calls (claim_batch, renew_many, finish_many) one line per job,
as the single calls, so each check holds per job whether it ran alone or in a batch. After
a kill -9 of a supervisor that held a batch (``kill9_batch``), every job of the batch came
back through the reaper or had just ended.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from injectors import Fault
from workload import JobPlan

from trainyard.engine import JobQueue
from trainyard.types import TERMINAL_STATES

__all__ = ["Findings", "check_run", "index_problems", "read_ledger", "terminal_snapshot"]

TERMINAL = {str(s) for s in TERMINAL_STATES}
WRITES = ("renew", "report", "finish", "release")
KILLS = ("kill9_supervisor", "kill9_batch")  # faults that SIGKILL a supervisor
SNAPSHOT_FIELDS = ("state", "finished_at", "result", "error", "error_kind", "model_id",
                   "attempt")  # fmt: skip

try:
    from trainyard.consistency import index_problems
except ImportError:  # an older core: the engine tests' helper, imported by path (not copied)
    import importlib.util
    import sys

    def index_problems(queue: JobQueue) -> list[str]:
        path = Path(__file__).resolve().parents[2] / "core" / "tests" / "queue_checks.py"
        spec = importlib.util.spec_from_file_location("queue_checks", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("queue_checks", module)
        spec.loader.exec_module(module)
        try:
            module.assert_index_invariants(queue)
        except AssertionError as exc:
            return [str(exc) or "an index invariant failed"]
        return []


@dataclass
class Findings:
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, message: str) -> None:
        self.violations.append(message)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))  # a torn line would be a ledger bug: fail loudly
    return records


def terminal_snapshot(job: dict[str, str]) -> dict[str, str]:
    return {name: job.get(name, "") for name in SNAPSHOT_FIELDS}


def _before(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` definitely took effect before ``b`` (their call intervals do not overlap)."""
    return float(a["t1"]) < float(b["t0"])


def check_run(
    queue: JobQueue,
    plans: Iterable[JobPlan],
    ledger: list[dict[str, Any]],
    faults: Iterable[Fault],
    snapshots: dict[str, dict[str, str]],
    model_store: Path,
) -> Findings:
    found = Findings()
    plans = [p for p in plans if p.job_id]
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in ledger:
        if record.get("job_id"):
            by_job[record["job_id"]].append(record)
        for job_id, state in record.get("reaped") or []:
            by_job[job_id].append({**record, "job_id": job_id, "state": state})
    models_by_job = Counter(m.get("job_id") for m in queue.list_models(limit=100_000))

    faults = list(faults)
    # A supervisor killed by SIGKILL may have had its last write applied without living to
    # write the ledger line: for its attempts a missing line is not a violation. All of
    # them, not only the one the fault aimed at: it may have held a batch.
    gone = {f.worker_id for f in faults if f.kind in KILLS and f.worker_id and not f.missed}
    killed = {f.attempt_id for f in faults if f.kind in KILLS and f.attempt_id}
    killed |= {attempt for f in faults for _, attempt in f.batch}
    killed |= {r["attempt_id"] for r in ledger if r.get("op") == "claim"
               and r.get("worker_id") in gone and r.get("attempt_id")}  # fmt: skip
    for plan in plans:
        assert plan.job_id is not None
        _check_job(queue, plan, by_job[plan.job_id], snapshots, models_by_job, model_store,
                   killed, found)  # fmt: skip
    for fault in faults:
        _check_fault(queue, fault, by_job, found)
    for problem in index_problems(queue):
        found.add(f"index: {problem}")
    return found


def _check_job(
    queue: JobQueue,
    plan: JobPlan,
    records: list[dict[str, Any]],
    snapshots: dict[str, dict[str, str]],
    models_by_job: Counter[Any],
    model_store: Path,
    killed: set[str],
    found: Findings,
) -> None:
    job_id = plan.job_id
    assert job_id is not None
    found.counts["jobs"] += 1
    job = queue.get_job(job_id)
    if job is None:
        found.counts["lost"] += 1
        found.add(f"{job_id} ({plan.key}): acknowledged ({plan.acked}) but gone: LOST")
        return
    state = job["state"]
    where = f"{job_id} ({plan.kind} {plan.key}, {state})"
    if state not in TERMINAL:
        found.add(f"{where}: not terminal at the end of the run")
    if int(job["attempt"]) > int(job["max_attempts"]):
        found.add(f"{where}: attempt {job['attempt']} > max_attempts {job['max_attempts']}")

    # 4. One terminal state, never changed.
    events = queue.events(job_id, count=100_000)
    terminal = [e for e in events if e.kind == "state" and e.data.get("state") in TERMINAL]
    if len(terminal) != 1:
        found.add(f"{where}: {len(terminal)} terminal state events: "
                  f"{[e.data.get('state') for e in terminal]}")  # fmt: skip
    elif terminal[0].data["state"] != state:
        found.add(f"{where}: the terminal event says {terminal[0].data['state']}")
    elif events[-1].id != terminal[0].id:
        after = [(e.kind, e.data.get("state")) for e in events if e.id > terminal[0].id]
        found.add(f"{where}: events after the terminal one: {after}")
    first_seen = snapshots.get(job_id)
    if first_seen is not None and first_seen != terminal_snapshot(job):
        found.add(f"{where}: the terminal record changed: {first_seen} -> {terminal_snapshot(job)}")

    # 2. Finished at most once; a job ended by a finish has exactly one applied.
    finishes = [r for r in records if r["op"] == "finish"]
    applied_terminal = [r for r in finishes if r.get("applied") and r.get("state") in TERMINAL]
    if len(applied_terminal) > 1:
        found.counts["duplicate_finishes"] += len(applied_terminal) - 1
        found.add(f"{where}: finished {len(applied_terminal)} times: "
                  f"{[(r['attempt_id'], r['state']) for r in applied_terminal]}")  # fmt: skip
    by_finish = len(terminal) == 1 and "reason" not in terminal[0].data
    if by_finish and not applied_terminal:
        if any("error" in r for r in finishes):
            found.counts["finish_reply_lost"] += 1  # applied, but its reply lost to a restart
        elif job.get("attempt_id") in killed:
            found.counts["finish_unlogged"] += 1  # its worker was killed right after it
        else:
            found.add(f"{where}: ended by a finish that no process made")
    if applied_terminal and not by_finish:
        found.add(f"{where}: a finish was applied but the job ended otherwise")
    if applied_terminal and applied_terminal[0]["state"] != state:
        found.add(f"{where}: the applied finish said {applied_terminal[0]['state']}")

    _check_fencing(where, records, found)
    _check_attempts(where, job, records, found)

    # 7. Models.
    registered = models_by_job.get(job_id, 0)
    if plan.training and state == "succeeded":
        model_id = json.loads(job.get("result") or "{}").get("model_id")
        model = queue.get_model(model_id) if model_id else None
        if model is None or model.get("job_id") != job_id:
            found.add(f"{where}: its model {model_id!r} is missing or names another job")
        elif not (model_store / str(model["artifact"])).is_dir():
            found.add(f"{where}: its model's artifact {model['artifact']} is not on disk")
        if registered != 1:
            found.add(f"{where}: {registered} models name this job")
    elif registered:
        found.add(f"{where}: {registered} models name this job, which did not succeed")

    # 8. Outcomes.
    executions = sum(1 for r in records if r["op"] == "train" and r.get("ok"))
    found.counts["executions"] += executions
    found.counts["reruns"] += max(0, executions - 1)
    found.counts[f"ended_{state}"] += 1
    _check_outcome(where, plan, job, finishes, found)


def _check_fencing(where: str, records: list[dict[str, Any]], found: Findings) -> None:
    claims = [r for r in records if r["op"] == "claim" and r.get("applied")]
    reaps = [r for r in records if r["op"] == "reap" and "reaped" in r]
    claim_of = {r["attempt_id"]: r for r in claims}
    ends: dict[str, list[dict[str, Any]]] = defaultdict(list)  # attempt -> its own end
    for r in records:
        if r["op"] in ("finish", "release") and r.get("applied"):
            ends[r["attempt_id"]].append(r)
    stale: Counter[tuple[str, str, str]] = Counter()
    for r in records:
        if r["op"] not in WRITES:
            continue
        if "error" in r:
            found.counts["writes_unanswered"] += 1
            continue
        if not r.get("applied"):
            found.counts["refused_writes"] += 1
            found.counts[f"refused_{r['op']}"] += 1
            continue
        attempt = str(r.get("attempt_id"))
        claim = claim_of.get(attempt)
        if claim is None:
            found.add(f"{where}: an applied {r['op']} from attempt {attempt}, never claimed")
            continue
        newer = [c for c in claims if c is not claim and _before(claim, c) and _before(c, r)]
        reaped = [x for x in reaps if _before(claim, x) and _before(x, r)]
        ended = [e for e in ends[attempt] if e is not r and _before(e, r)]
        if newer or reaped or ended:
            why = "a newer claim" if newer else "a reap" if reaped else "its own end"
            stale[(str(attempt), r["op"], why)] += 1
    for (attempt, op, why), count in sorted(stale.items()):
        found.counts["stale_writes_applied"] += count
        found.add(f"{where}: {count} STALE {op}(s) from attempt {attempt} applied after {why}")


def _check_attempts(
    where: str, job: dict[str, str], records: list[dict[str, Any]], found: Findings
) -> None:
    claims = sorted((r for r in records if r["op"] == "claim" and r.get("applied")),
                    key=lambda r: float(r["t0"]))  # fmt: skip
    releases = [r for r in records if r["op"] == "release" and r.get("applied")]
    counted = len(claims) - len(releases)
    if counted > int(job["max_attempts"]):
        found.add(f"{where}: {len(claims)} claims - {len(releases)} hand-backs > max_attempts")
    reaps = [r for r in records if r["op"] == "reap" and "reaped" in r]
    number = {r["attempt_id"]: int(r["attempt"]) for r in claims}
    for release in releases:
        found.counts["handed_back"] += 1
        later = [c for c in claims if _before(release, c)]
        if not later or any(_before(release, x) and _before(x, later[0]) for x in reaps):
            continue  # a reap between: an attempt whose claim's reply was lost came first
        released = number.get(release["attempt_id"])
        if int(later[0]["attempt"]) != released:
            found.add(f"{where}: a hand-back counted an attempt: attempt {released} "
                      f"then {later[0]['attempt']}")  # fmt: skip


def _check_outcome(
    where: str,
    plan: JobPlan,
    job: dict[str, str],
    finishes: list[dict[str, Any]],
    found: Findings,
) -> None:
    state = job["state"]
    if any(r.get("error_kind") == "user_error" and r["outcome"] == "retry" for r in finishes):
        found.add(f"{where}: a user error was retried")
    if plan.cancel_status == "cancelled":
        if state != "cancelled":
            found.add(f"{where}: cancelled while queued, yet it ended {state}")
        return
    if plan.cancel_status == "running":
        return  # the cancel races the job's own end: any terminal state is right
    allowed = {"bad": {"failed", "dead"}}.get(plan.kind, {"succeeded", "dead"})
    if plan.cancel_status is None and plan.cancel is not None:
        allowed = allowed | {"cancelled"}  # the cancel was not sent before the end
    if state not in allowed:
        found.add(f"{where}: unexpected end {state} ({job.get('error_kind')}): "
                  f"{(job.get('error') or '')[:300]}")  # fmt: skip
    if plan.kind == "bad" and state == "failed":
        failed = [r for r in finishes if r.get("applied") and r.get("state") == "failed"]
        if job.get("error_kind") != "user_error" or len(failed) != 1:
            found.add(f"{where}: a bad hyperparameter should fail once as a user error")
    if state == "dead" and job.get("error_kind") not in ("killed", "lost", "crashed"):
        found.add(f"{where}: dead for {job.get('error_kind')}: {job.get('error')}")


def _check_fault(
    queue: JobQueue, fault: Fault, by_job: dict[str, list[dict[str, Any]]], found: Findings
) -> None:
    for problem in fault.problems:
        found.add(f"{fault.label}: {problem}")
    if fault.missed or not fault.job_id:
        return
    found.counts[f"hit_{fault.kind}"] += 1
    records = by_job.get(fault.job_id, [])
    mine = [r for r in records if r.get("attempt_id") == fault.attempt_id]
    ended = [r for r in mine if r["op"] in ("finish", "release") and r.get("applied")]
    where = f"{fault.label} on {fault.job_id}"
    if fault.kind == "sigstop_supervisor":
        stale = [r for r in mine if r["op"] in WRITES and r.get("applied") is False
                 and float(r["t0"]) > fault.at]  # fmt: skip
        found.counts["stale_writes_refused"] += len(stale)
        if not stale:
            found.add(f"{where}: the thawed attempt made no refused write")
        if "child ended" in fault.detail:
            # The child's result is stale: its finish must be refused, unless the thawed
            # supervisor renewed first (its renewal was due), learned the lease was lost
            # and, as it should, made no finish at all. (An applied one: check 5.)
            made = [r for r in mine if r["op"] == "finish" and float(r["t0"]) > fault.at]
            refused = {r["op"] for r in stale}
            if "finish" in refused:
                found.counts["thawed_finish_refused"] += 1
            elif "renew" in refused and not made:
                found.counts["thawed_lease_lost_first"] += 1
            else:
                found.add(f"{where}: the thawed supervisor's finish was not refused")
    elif fault.kind == "kill9_supervisor":
        if not _reaped_or_ended(queue, fault, fault.job_id, fault.attempt_id, by_job):
            found.add(f"{where}: its job was never reaped")
    elif fault.kind == "kill9_batch":
        # Every job of the batch, not only the first: each comes back or had just ended.
        found.counts["batch_jobs_killed"] += len(fault.batch)
        if len(fault.batch) < 2:
            found.add(f"{where}: the killed supervisor held no batch: {fault.batch}")
        for job_id, attempt_id in fault.batch:
            if not _reaped_or_ended(queue, fault, job_id, attempt_id, by_job):
                found.add(f"{fault.label} on {job_id} (of the batch): it was never reaped")
    elif fault.kind == "sigterm_worker":
        if not ended:
            found.add(f"{where}: its job was neither handed back nor finished by the "
                      "stopping worker")  # fmt: skip
    elif fault.kind == "kill9_child":
        done = [r for r in mine if r["op"] == "finish"]
        killed = [r for r in done if r.get("error_kind") == "killed"]
        # The child may have ended by itself just before the signal, or the lease may have
        # gone at the same moment (then the finish is refused or never made).
        by_itself = [r for r in done if r["outcome"] != "retry"]
        if done and not killed and not by_itself:
            how = [(r["outcome"], r.get("error_kind")) for r in done]
            found.add(f"{where}: finished as {how}, not as killed")


def _reaped_or_ended(
    queue: JobQueue,
    fault: Fault,
    job_id: str,
    attempt_id: str | None,
    by_job: dict[str, list[dict[str, Any]]],
) -> bool:
    """After a supervisor's kill -9: the reaper's state event names the lost worker, or the
    attempt had ended just before (its applied finish or hand-back), or the job still
    names the attempt (it ended it, the ledger line lost with the process)."""
    lost = [e for e in queue.events(job_id, count=100_000)
            if f"(worker {fault.worker_id})" in str(e.data.get("reason", ""))]  # fmt: skip
    ended = [r for r in by_job.get(job_id, []) if r.get("attempt_id") == attempt_id
             and r["op"] in ("finish", "release") and r.get("applied")]  # fmt: skip
    job = queue.get_job(job_id) or {}
    return bool(lost or ended) or job.get("attempt_id") == attempt_id
