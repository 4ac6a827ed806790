"""A plain-Python model of the queue engine's Lua scripts, for the model check
(``test_engine_model.py``; the harness that runs it against Redis is
``engine_model_harness.py``).

Each operation takes the server time ``now`` (ms) that the script would read with TIME
and changes the model the way the script's header says it changes Redis. What the model
tracks of a job is the hash fields in ``TRACKED`` (as the strings the scripts write), the
length of its event stream, and its scores in the ready queues (the runtime's and, for an
inference job that names its model, the model's), the leases, the delayed and expiring
sets and the state, runtime and type indexes. Beside the jobs: idempotency keys,
registered models, and for affinity which workers hold which models (``model_holders``,
``worker_models``). Not modelled: the wake-up lists (nothing in the model reads them; the
state machine checks the targeted ones on its own) and the workers' registrations.

Where the model differs from the scripts as they were first written, a script was wrong;
the differences are the bugs the model check found (see ``finish`` and ``claim_work``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AFFINITY_SCAN",
    "READY_BAND",
    "STATES",
    "TERMINAL",
    "TRACKED",
    "Model",
    "ModelJob",
]

READY_BAND = 1 << 40  # ready score = priority rank * band + seq (_common.lua ready_score)
AFFINITY_SCAN = 64  # claim.lua looks at this many entries of a ready queue, at most
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
STATES = ("queued", "running", "retrying", *sorted(TERMINAL))
RANKS = {"high": 0, "normal": 1, "low": 2}

# The job hash fields the model predicts exactly. ``error`` (free text) and ``request``
# (opaque to the scripts) are left out on purpose.
# fmt: off
TRACKED = (
    "id", "type", "runtime", "priority", "rank", "seq", "state", "attempt", "max_attempts",
    "attempt_id", "worker_id", "stalls", "cancel_requested", "cancel_reason", "created_at",
    "expires_at", "started_at", "lease_until", "lease_ms", "retry_at", "finished_at",
    "error_kind", "progress", "model_id", "idempotency_key", "redriven_from", "redriven_to",
    "ready_at",
)
# fmt: on


@dataclass
class ModelJob:
    fields: dict[str, str]  # the tracked hash fields, exactly as the scripts write them
    events: int = 0  # entries in the job's event stream
    expiring: bool = False  # in the expiring set: queued, never started, with a queue TTL
    # '<runtime>:<model>' of the model ready queue it is in while queued ("": none): an
    # inference job that names its model (fixed at submission).
    model_key: str = ""

    @property
    def state(self) -> str:
        return self.fields["state"]

    def num(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    @property
    def score(self) -> int:
        return self.num("rank") * READY_BAND + self.num("seq")

    def set(self, **values: int | str) -> None:
        self.fields.update({name: str(value) for name, value in values.items()})

    def view(self) -> dict[str, Any]:
        """What Redis must hold for this job (the same shape ``observe`` reads)."""
        f, state = self.fields, self.state
        ready = float(self.score) if state == "queued" else None
        return {
            **{name: f.get(name) for name in TRACKED},
            "events": self.events,
            "ready": ready,
            "ready_model": ready if self.model_key else None,
            "lease": float(f["lease_until"]) if state == "running" else None,
            "delayed": float(f["retry_at"]) if state == "retrying" else None,
            "expiring": float(f["expires_at"]) if self.expiring else None,
            "state_indexes": {state: float(f["seq"])},
            "runtime_index": float(f["seq"]),
            "type_index": float(f["seq"]),
        }

    def event(self, **values: int | str) -> None:
        """A state change: new field values plus one event on the job's stream."""
        self.set(**values)
        self.events += 1


@dataclass
class _ClaimScan:
    """What one claim.lua call remembers while it looks for a job (see ``claim_work``)."""

    worker_id: str
    loaded: frozenset[str]
    affinity_ms: int
    holder_window: int
    held_elsewhere: dict[str, bool] = field(default_factory=dict)
    recheck: int | None = None
    woken: set[str] = field(default_factory=set)  # models whose holders it woke
    pruned: bool = False  # it dropped a holder not seen within the window


@dataclass
class Model:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    seq: int = 0
    idem: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    models: set[str] = field(default_factory=set)  # registered model ids
    # '<runtime>:<model>' -> worker id -> last seen (ms): K.model_holders
    holders: dict[str, dict[str, int]] = field(default_factory=dict)
    worker_models: dict[str, set[str]] = field(default_factory=dict)  # K.worker_models
    last_scan: _ClaimScan | None = None  # the last claim_work's (not in the view)

    def clone(self) -> Model:
        return Model(
            {
                i: ModelJob(dict(j.fields), j.events, j.expiring, j.model_key)
                for i, j in self.jobs.items()
            },
            self.seq,
            dict(self.idem),
            set(self.models),
            {name: dict(h) for name, h in self.holders.items()},
            {w: set(names) for w, names in self.worker_models.items()},
        )

    def view(self) -> dict[str, Any]:
        return {
            "jobs": {job_id: job.view() for job_id, job in self.jobs.items()},
            "seq": str(self.seq) if self.seq else None,
            "idem": dict(self.idem),
            "models": len(self.models),
            "holders": {
                n: {w: float(t) for w, t in h.items()} for n, h in self.holders.items() if h
            },
            "worker_models": {w: names for w, names in self.worker_models.items() if names},
        }

    def routes(self) -> dict[str, tuple[str, str, str]]:
        """Job id -> its runtime, job type and model ready queue ("" for none)."""
        return {
            job_id: (j.fields["runtime"], j.fields["type"], j.model_key)
            for job_id, j in self.jobs.items()
        }

    def holds(self, job_id: str, attempt_id: str) -> bool:
        """Whether ``attempt_id`` is the attempt holding the job (the fence every
        attempt-scoped script applies)."""
        job = self.jobs.get(job_id)
        return job is not None and job.state == "running" and job.fields["attempt_id"] == attempt_id

    def state_of(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        return job.state if job else "missing"

    def deadlines(self) -> list[int]:
        """Every moment at which the passing of time alone makes something due."""
        out = []
        for job in self.jobs.values():
            if job.state == "running":
                out.append(job.num("lease_until"))
            elif job.state == "retrying":
                out.append(job.num("retry_at"))
            if job.expiring:
                out.append(job.num("expires_at"))
        return out

    def ready(self, runtime: str, model_key: str | None = None) -> list[ModelJob]:
        """A ready queue in order: the runtime's, or one model's (``model_key``)."""
        return sorted(
            (
                j
                for j in self.jobs.values()
                if j.state == "queued"
                and j.fields["runtime"] == runtime
                and (model_key is None or j.model_key == model_key)
            ),
            key=lambda j: j.score,
        )

    # -- submitting and cancelling --------------------------------------------------

    def enqueue(
        self, now: int, job_id: str, submission: dict[str, str], queue_ttl_ms: int
    ) -> tuple[str, bool]:
        """``submission``: priority, max_attempts, runtime, type, idempotency_key and,
        for an inference job, perhaps model_id."""
        key = submission["idempotency_key"]
        if key and key in self.idem:
            return self.idem[key], False
        self._insert(now, job_id, submission, now + queue_ttl_ms if queue_ttl_ms > 0 else 0)
        if key:
            self.idem[key] = job_id
        return job_id, True

    def _insert(self, now: int, job_id: str, submission: dict[str, str], expires_at: int) -> None:
        """A new queued job (``insert_job`` in _common.lua)."""
        self.seq += 1
        model_id = submission.get("model_id", "")
        indexed = submission["type"] == "inference" and model_id
        job = ModelJob(
            {},
            expiring=expires_at > 0,
            model_key=f"{submission['runtime']}:{model_id}" if indexed else "",
        )
        job.event(
            **submission,
            id=job_id,
            rank=RANKS[submission["priority"]],
            seq=self.seq,
            state="queued",
            attempt=0,
            stalls=0,
            cancel_requested=0,
            created_at=now,
            ready_at=now,
            expires_at=expires_at,
        )
        self.jobs[job_id] = job

    def redrive(self, now: int, job_id: str, new_id: str) -> tuple[bool, bool, str, Any, bool]:
        """(found, redriven, state, new job id, created), as ``RedriveOutcome``. A dead
        job's submission queued again as ``new_id``: nothing its lifecycle wrote (its
        attempts, errors, result, progress) comes along."""
        job = self.jobs.get(job_id)
        if job is None:
            return False, False, "missing", None, False
        if job.state != "dead":
            return True, False, job.state, None, False
        if job.fields.get("redriven_to"):
            return True, True, "dead", job.fields["redriven_to"], False
        names = ["priority", "max_attempts", "runtime", "type"]
        if job.fields["type"] == "inference" and "model_id" in job.fields:
            names.append("model_id")  # the model it asks for is part of its submission
        submission = {name: job.fields[name] for name in names}
        # No queue TTL and no idempotency key: the operator asked for this run.
        self._insert(now, new_id, {**submission, "idempotency_key": "", "redriven_from": job_id}, 0)
        job.event(redriven_to=new_id)  # not a state change: a "redriven" event
        return True, True, "dead", new_id, True

    def cancel(self, now: int, job_id: str, reason: str) -> tuple[bool, str, bool]:
        """(found, state, changed), as ``CancelOutcome``."""
        job = self.jobs.get(job_id)
        if job is None:
            return False, "missing", False
        if job.state in ("queued", "retrying"):
            job.expiring = False
            job.event(
                state="cancelled", finished_at=now, error_kind="cancelled", cancel_requested=1
            )
            return True, "cancelled", True
        if job.state == "running":
            job.event(cancel_requested=1, cancel_reason=reason)
            return True, "running", True
        return True, job.state, False

    # -- claiming ---------------------------------------------------------------------

    def _expire(self, job: ModelJob, now: int) -> None:
        job.expiring = False
        job.event(state="failed", finished_at=now, error_kind="expired")

    def _take(
        self, job: ModelJob, now: int, worker_id: str, attempt_id: str, lease_ms: int
    ) -> bool:
        """``take_ready`` in _common.lua: start an attempt, or fail the job "expired" if it
        waited past its queue TTL before its first start (then False)."""
        # queue_ttl_s bounds only the wait before the first start.
        if job.expiring and now >= job.num("expires_at"):
            self._expire(job, now)
            return False
        job.expiring = False
        job.event(
            state="running",
            attempt=job.num("attempt") + 1,
            attempt_id=attempt_id,
            worker_id=worker_id,
            started_at=now,
            lease_until=now + lease_ms,
            lease_ms=lease_ms,
            cancel_requested=0,
        )
        return True

    def claim_work(
        self,
        now: int,
        worker_id: str,
        attempt_id: str,
        lease_ms: int,
        runtimes: Sequence[str],
        loaded: Sequence[str] = (),
        affinity_ms: int = 0,
        holder_window: int = 0,
    ) -> tuple[str | None, int | None]:
        """(the job claimed or None, recheck ms or None), as ``ClaimResult``. Without
        affinity: the best job of ``runtimes`` (priority, then FIFO). With it, the best
        eligible one (see ``_eligible``), within claim.lua's bounded scan."""
        for job in sorted(self.jobs.values(), key=lambda j: j.num("retry_at")):
            if job.state == "retrying" and job.num("retry_at") <= now:  # due: queued again
                job.event(state="queued", ready_at=now)
        scan = _ClaimScan(worker_id, frozenset(loaded), affinity_ms, holder_window)
        while True:
            found = [j for j in (self._best_of(rt, now, scan) for rt in runtimes) if j]
            self.last_scan = scan
            if not found:
                return None, (None if scan.recheck is None else max(scan.recheck, 1))
            best = min(found, key=lambda j: j.score)
            if self._take(best, now, worker_id, attempt_id, lease_ms):
                return best.fields["id"], None

    def _best_of(self, runtime: str, now: int, scan: _ClaimScan) -> ModelJob | None:
        queue = self.ready(runtime)
        if scan.affinity_ms <= 0:
            return queue[0] if queue else None
        # The best job of a loaded model bounds the scan: nothing after it can win.
        tops = [self.ready(runtime, f"{runtime}:{m}")[:1] for m in scan.loaded]
        bound = min((t[0] for t in tops if t), key=lambda j: j.score, default=None)
        for job in queue[:AFFINITY_SCAN]:
            if bound is not None and job.score >= bound.score:
                return bound
            if self._eligible(job, runtime, now, scan):
                return job
        return bound

    def _eligible(self, job: ModelJob, runtime: str, now: int, scan: _ClaimScan) -> bool:
        """A training job, an inference job without a model, of a model this worker has
        loaded, of one no other live worker holds, or one that waited the affinity."""
        model_id = job.fields.get("model_id", "")
        if job.fields["type"] != "inference" or not model_id or model_id in scan.loaded:
            return True
        waited = now - job.num("ready_at")
        if waited >= scan.affinity_ms or not self._held_by_another(runtime, model_id, now, scan):
            return True
        wait = scan.affinity_ms - waited
        scan.recheck = wait if scan.recheck is None else min(scan.recheck, wait)
        scan.woken.add(f"{runtime}:{model_id}")
        return False

    def _held_by_another(self, runtime: str, model_id: str, now: int, scan: _ClaimScan) -> bool:
        """Read once per call; holders not seen within the window are dropped on the way."""
        name = f"{runtime}:{model_id}"
        if name not in scan.held_elsewhere:
            live = {
                w: t for w, t in self.holders.get(name, {}).items() if t >= now - scan.holder_window
            }
            scan.pruned |= len(live) < len(self.holders.get(name, {}))
            self.holders[name] = live
            scan.held_elsewhere[name] = len(live) - (scan.worker_id in live) > 0
        return scan.held_elsewhere[name]

    def claim_batch(
        self,
        now: int,
        worker_id: str,
        lease_ms: int,
        runtime: str,
        model_id: str,
        attempt_ids: Sequence[str],
    ) -> list[str]:
        """Up to ``len(attempt_ids)`` queued jobs of one model, best first, each started
        as its own attempt (the i-th taken gets the i-th id); expired ones are failed on
        the way. No retry promotion, no affinity."""
        out: list[str] = []
        for job in self.ready(runtime, f"{runtime}:{model_id}"):
            if len(out) == len(attempt_ids):
                break
            if self._take(job, now, worker_id, attempt_ids[len(out)], lease_ms):
                out.append(job.fields["id"])
        return out

    # -- attempts ---------------------------------------------------------------------

    def renew(self, now: int, job_id: str, attempt_id: str, lease_ms: int) -> tuple[bool, str]:
        """(held, cancel_requested or the state)."""
        if not self.holds(job_id, attempt_id):
            return False, self.state_of(job_id)
        job = self.jobs[job_id]
        job.set(lease_until=now + lease_ms)
        return True, job.fields["cancel_requested"]

    def report(self, job_id: str, attempt_id: str, kind: str, data: str) -> bool:
        if not self.holds(job_id, attempt_id):
            return False
        job = self.jobs[job_id]
        if kind == "progress":
            job.set(progress=data)
        job.events += 1
        return True

    def finish(
        self,
        now: int,
        job_id: str,
        attempt_id: str,
        outcome: str,
        error_kind: str,
        retry_delay_ms: int,
        model_id: str,
    ) -> tuple[bool, str]:
        """(applied, the new state or the current one). ``finish_many`` is this per item,
        in order, at one ``now``."""
        if not self.holds(job_id, attempt_id):
            return False, self.state_of(job_id)
        job = self.jobs[job_id]
        job.set(error_kind=error_kind, lease_until=0)
        if outcome == "retry":
            if job.fields["cancel_requested"] == "1":
                # A cancel was requested while this attempt ran: it must not be retried
                # (the next claim would clear the flag and the cancel would be lost).
                job.event(state="cancelled", finished_at=now, error_kind="cancelled")
                return True, "cancelled"
            if job.num("attempt") < job.num("max_attempts"):
                job.event(state="retrying", retry_at=now + retry_delay_ms)
                return True, "retrying"
            outcome = "dead"
        job.set(finished_at=now)
        if outcome == "succeeded" and model_id:
            self.models.add(model_id)
            job.set(model_id=model_id)
        job.event(state=outcome)
        return True, outcome

    def release(self, now: int, job_id: str, attempt_id: str) -> bool:
        if not self.holds(job_id, attempt_id):
            return False
        job = self.jobs[job_id]
        job.set(attempt=max(job.num("attempt") - 1, 0), attempt_id="", lease_until=0, worker_id="")
        if job.fields["cancel_requested"] == "1":
            job.event(state="cancelled", finished_at=now, error_kind="cancelled")
        else:
            job.event(state="queued", ready_at=now)
        return True

    def reap(self, now: int, limit: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        leases = sorted(
            (j for j in self.jobs.values() if j.state == "running"),
            key=lambda j: (j.num("lease_until"), j.fields["id"]),  # zset order
        )
        for job in [j for j in leases if j.num("lease_until") <= now][:limit]:
            if job.fields["cancel_requested"] == "1":
                new_state, kind = "cancelled", "cancelled"
            elif job.num("attempt") >= job.num("max_attempts"):
                new_state, kind = "dead", "lost"
            else:
                new_state, kind = "queued", "lost"
            job.set(stalls=job.num("stalls") + 1, attempt_id="", lease_until=0, error_kind=kind)
            job.set(**({"ready_at": now} if new_state == "queued" else {"finished_at": now}))
            job.event(state=new_state)
            out.append((job.fields["id"], new_state))
        expiring = sorted(
            (j for j in self.jobs.values() if j.expiring),
            key=lambda j: (j.num("expires_at"), j.fields["id"]),
        )
        for job in [j for j in expiring if j.num("expires_at") <= now][:limit]:
            self._expire(job, now)
            out.append((job.fields["id"], "failed"))
        return out

    # -- workers ----------------------------------------------------------------------

    def set_loaded_models(
        self, now: int, worker_id: str, runtime: str, loaded: Sequence[str], ttl_ms: int
    ) -> None:
        """``loaded_models.lua``; ``runtime`` "": forget every model (unregister). The
        worker's set never expires here (the state machine's lifetimes are long)."""
        holds = {f"{runtime}:{m}" for m in loaded} if runtime else set()
        mine = self.worker_models.setdefault(worker_id, set())
        for name in sorted(mine):
            if name not in holds and (not runtime or name.startswith(runtime + ":")):
                self.holders.get(name, {}).pop(worker_id, None)
                mine.discard(name)
        for name in holds:
            live = self.holders.setdefault(name, {})
            live[worker_id] = now
            self.holders[name] = {w: t for w, t in live.items() if t >= now - ttl_ms}
            mine.add(name)
