"""The model check's single-job calls (a base of ``test_engine_model``'s state machine):
each one made against Redis and checked against the model (``engine_model``) through the
harness (``engine_model_harness``), with the checks that do not need the model (an
idempotency key leaves its job alone, claim takes the best job, a stale attempt is
refused and writes nothing). The batch and affinity calls build on these
(``engine_model_batches``). Also the job specs and what a worker draws for its turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine_model import Model
from engine_model_harness import NO_ATTEMPT, Attempt, Harness
from hypothesis import strategies as st
from hypothesis.stateful import Bundle
from queue_checks import snapshot

from trainyard.engine import JobQueue, Submission, new_job_id
from trainyard.types import JobType, Priority

__all__ = [
    "ACTIONS",
    "ERROR_KINDS",
    "JOB_SPECS",
    "LEASES_MS",
    "RETRY_DELAYS_MS",
    "RUNTIMES",
    "WORKERS",
    "JobSpec",
    "SingleCalls",
]

RUNTIMES = ("sklearn", "tensorflow", "pytorch-2.1")
WORKERS = ("w0", "w1", "w2")
MODEL_IDS = ("mA", "mA", "mB", "")  # an inference job's model ("": it names none)
LEASES_MS = (60_000, 5, 30, 1)  # from "never, here" to "over by the next step"
RETRY_DELAYS_MS = (5, 60_000, 0, 1, 60_000, 20)
# What a worker does with an attempt; outcomes repeat to weigh them (one rule, so that
# Hypothesis's swarm testing, which turns whole rules off per example, keeps them together).
ACTIONS = (
    *("retry", "renew", "retry", "report", "release", "crash", "retry", "renew"),
    *("succeeded", "release", "failed", "cancelled", "retry"),
)
ERROR_KINDS = {
    "succeeded": "",
    "failed": "user_error",
    "cancelled": "cancelled",
    "retry": "crashed",
}


@dataclass(frozen=True)
class JobSpec:
    runtime: str
    job_type: JobType
    priority: Priority
    max_attempts: int
    queue_ttl_ms: int
    key: str  # idempotency key; "" for none
    model_id: str  # an inference job's model; "" for none

    def submission(self, priority: Priority | None = None) -> tuple[Submission, dict[str, str]]:
        """What ``enqueue_many`` takes, and the fields the model's ``enqueue`` takes."""
        model = self.model_id if self.job_type is JobType.INFERENCE else ""
        priority = priority or self.priority
        sub = Submission(
            job_type=self.job_type,
            runtime=self.runtime,
            request={"n": 1},
            priority=priority,
            max_attempts=self.max_attempts,
            queue_ttl_s=self.queue_ttl_ms / 1000 if self.queue_ttl_ms else None,
            idempotency_key=self.key or None,
            extra_fields={"model_id": model} if model else None,
            job_id=new_job_id(),
        )
        fields = {
            "priority": priority.value,
            "max_attempts": str(self.max_attempts),
            "runtime": self.runtime,
            "type": self.job_type.value,
            "idempotency_key": self.key,
            **({"model_id": model} if model else {}),
        }
        return sub, fields


JOB_SPECS = st.builds(
    JobSpec,
    runtime=st.sampled_from((*RUNTIMES, "sklearn")),  # jobs of one model meet more often
    job_type=st.sampled_from((JobType.INFERENCE, JobType.TRAINING, JobType.INFERENCE)),
    priority=st.sampled_from(list(Priority)),
    max_attempts=st.sampled_from((3, 1, 2)),
    queue_ttl_ms=st.sampled_from((0, 0, 0, 0, 0, 3, 30, 60_000)),
    key=st.sampled_from(("", "", "", "", "", "k0", "k1")),
    model_id=st.sampled_from(MODEL_IDS),
)


class SingleCalls(Harness):
    jobs = Bundle("jobs")
    attempts = Bundle("attempts")

    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue)
        self.holding: dict[str, list[Attempt]] = {}  # worker id -> the attempts it works on

    def submit(self, spec: JobSpec) -> str:
        sub, fields = spec.submission()
        assert sub.job_id is not None
        job_id, ttl_ms = sub.job_id, spec.queue_ttl_ms
        earlier = self.model.idem.get(spec.key) if spec.key else None
        before = snapshot(self.queue, earlier) if earlier else None

        def predict(m: Model, now: int, reply: tuple[str, bool]) -> Any:
            return m.enqueue(now, job_id, fields, ttl_ms), reply

        got, created = self.step(
            "enqueue",
            lambda: self.queue.enqueue(
                job_type=sub.job_type,
                runtime=sub.runtime,
                request=sub.request,
                priority=sub.priority,
                max_attempts=sub.max_attempts,
                queue_ttl_s=sub.queue_ttl_s,
                idempotency_key=sub.idempotency_key,
                extra_fields=sub.extra_fields,
                job_id=job_id,
            ),
            predict,
        )
        if earlier is not None:  # the same key names the same job, and leaves it alone
            assert (got, created) == (earlier, False)
            assert snapshot(self.queue, earlier) == before
        else:
            assert (got, created) == (job_id, True)
        return got

    def cancel_job(self, job_id: str) -> None:
        self.log.append(f"cancel {job_id}")
        out = self.step(
            "cancel",
            lambda: self.queue.cancel(job_id, "stop"),
            lambda m, now, out: (
                m.cancel(now, job_id, "stop"),
                (out.found, out.state, out.changed),
            ),
        )
        assert out.found == (job_id in self.model.jobs)

    def claim(self, worker_id: str, runtimes: tuple[str, ...], lease_ms: int) -> Attempt:
        def predict(m: Model, now: int, got: Any) -> Any:
            attempt_id = got.attempt_id if got else "<none>"
            expected, _ = m.claim_work(now, worker_id, attempt_id, lease_ms, runtimes)
            return expected, (got.job_id if got else None)

        got = self.step("claim", lambda: self.queue.claim(worker_id, runtimes, lease_ms), predict)
        # Priority, then FIFO, over the runtimes asked for, straight from Redis: no job of
        # those runtimes is still queued ahead of the one claimed (or at all, if none was).
        waiting = [
            (int(j["rank"]), int(j["seq"]))
            for j in self.redis_jobs().values()
            if j["state"] == "queued" and j["runtime"] in runtimes
        ]
        if got is None:
            assert not waiting, "claim found nothing while jobs were queued"
            return NO_ATTEMPT
        assert min(waiting, default=(9, 0)) > (int(got.job["rank"]), int(got.job["seq"]))
        return self.claimed(got.job, worker_id)

    def claimed(self, job: dict[str, str], worker_id: str) -> Attempt:
        assert (job["state"], job["worker_id"]) == ("running", worker_id)
        attempt = Attempt(
            job["id"], job["attempt_id"], worker_id, job["runtime"], job.get("model_id", "")
        )
        self.issued.setdefault(attempt.job_id, []).append(attempt)
        return attempt

    def act(
        self, attempt: Attempt, action: str, lease_ms: int, retry_delay_ms: int, with_model: bool
    ) -> bool:
        """Do ``action`` under ``attempt``; returns whether the attempt held the job."""
        if action == "crash":
            return True
        if action == "renew":
            return self.renew(attempt, lease_ms)
        if action == "report":
            return self.report(attempt, progress=with_model, n=lease_ms)
        if action == "release":
            return self.release(attempt)
        return self.finish(attempt, action, retry_delay_ms, with_model)

    def renew(self, a: Attempt, lease_ms: int) -> bool:
        out, held = self.fenced(
            "renew",
            a,
            lambda: self.queue.renew(a.job_id, a.attempt_id, lease_ms),
            lambda m, now, out: (
                m.renew(now, a.job_id, a.attempt_id, lease_ms),
                (out.held, str(int(out.cancel_requested)) if out.held else out.state),
            ),
        )
        assert out.held == held
        return held

    def report(self, a: Attempt, *, progress: bool, n: int) -> bool:
        kind, data = "progress" if progress else "log", {"step": n}
        raw = json.dumps(data, separators=(",", ":"))
        ok, held = self.fenced(
            "report",
            a,
            lambda: self.queue.report(a.job_id, a.attempt_id, kind, data),
            lambda m, now, ok: (m.report(a.job_id, a.attempt_id, kind, raw), ok),
        )
        assert ok == held
        return held

    def release(self, a: Attempt) -> bool:
        ok, held = self.fenced(
            "release",
            a,
            lambda: self.queue.release(a.job_id, a.attempt_id, "shutting down"),
            lambda m, now, ok: (m.release(now, a.job_id, a.attempt_id), ok),
        )
        assert ok == held
        return held

    def finish(self, a: Attempt, outcome: Any, retry_delay_ms: int, with_model: bool) -> bool:
        model_id = f"m-{a.job_id}" if with_model and outcome == "succeeded" else ""
        kind = ERROR_KINDS[outcome]
        out, held = self.fenced(
            "finish",
            a,
            lambda: self.queue.finish(
                a.job_id,
                a.attempt_id,
                outcome,
                error="" if outcome == "succeeded" else "boom",
                error_kind=kind,
                retry_delay_ms=retry_delay_ms,
                model={"model_id": model_id} if model_id else None,
            ),
            lambda m, now, out: (
                m.finish(now, a.job_id, a.attempt_id, outcome, kind, retry_delay_ms, model_id),
                (out.applied, out.state),
            ),
        )
        assert out.applied == held
        return held
