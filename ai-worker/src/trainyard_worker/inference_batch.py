"""An inference batch: the claimed inference jobs of one model that the inference host
answers with one request (and, per distinct parameters, one model call), and how long a
batch may wait to fill.

Batch size and wait (``MAX_BATCH_SIZE`` / ``MAX_BATCH_WAIT_MS``; unset: per model type):

- tabular (scikit-learn): 32 jobs, no wait. One walk of a forest over 32 rows costs about
  what it costs over one (the per-call overhead dominates), and under load requests queue
  up while the previous batch runs, so batches form without waiting: concurrency 1 pays
  nothing.
- text (BERT, transformer): 32 jobs, 5 ms. A forward pass takes tens of milliseconds on a
  CPU and a padded batch of 32 short texts little more than one; 5 ms lets requests that
  arrive in a burst share the pass.
- image (ResNet, VGG, Inception, MobileNet): 16 jobs, 2 ms: a batch of images is bigger in
  memory, and a job may already carry many images.

The wait applies only to a burst: when jobs of the model were already waiting besides the
first, the batch takes them and gets the wait to fill up. A lone request never waits, so at
concurrency 1 batching costs nothing. ``MAX_BATCH_SIZE=1`` turns batching off: each job is
its own batch, as before.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.routing import MODEL_TYPES
from trainyard.types import FailureKind

from .attempts import Ending, JobAttempt
from .config import WorkerSettings
from .inference import InferenceHost
from .protocol import BatchReply, BatchRequest, InferenceJobRequest, ModelRef, PredictItem
from .wakeups import HostGone, HostReplied, Wake

__all__ = ["DEFAULT_POLICY", "BatchPolicy", "InferenceBatch", "batch_policy", "resolve_model"]


@dataclass(frozen=True)
class BatchPolicy:
    max_size: int  # the most jobs in one batch (1: no batching)
    wait_ms: float  # the longest a batch waits for more jobs of its model


# task -> policy (see the module's docstring for why)
DEFAULT_POLICY: dict[str, BatchPolicy] = {
    "tabular": BatchPolicy(32, 0.0),
    "text": BatchPolicy(32, 5.0),
    "image": BatchPolicy(16, 2.0),
}


def batch_policy(settings: WorkerSettings, model_type: str) -> BatchPolicy:
    route = MODEL_TYPES.get(model_type)
    default = DEFAULT_POLICY[route.task] if route else BatchPolicy(1, 0.0)
    return BatchPolicy(
        settings.max_batch_size if settings.max_batch_size is not None else default.max_size,
        settings.max_batch_wait_ms if settings.max_batch_wait_ms is not None else default.wait_ms,
    )


def resolve_model(record: dict[str, Any] | None, model_id: str, store: Path) -> ModelRef | Ending:
    """The registry record as the host loads it, or how a job asking for it ends."""
    if record is None:
        return Ending("failed", error_kind=FailureKind.USER_ERROR,
                      error=f"model {model_id!r} does not exist (deleted?)")  # fmt: skip
    model_dir = store / record["artifact"]
    if not model_dir.is_dir():
        return Ending("retry", error_kind=FailureKind.INFRASTRUCTURE,
                      error=f"model artifact not found at {model_dir} on this worker; "
                      "workers on several hosts need a shared MODEL_STORE")  # fmt: skip
    return ModelRef(
        model_id=record["model_id"],
        model_dir=str(model_dir.resolve()),
        model_type=record["model_type"],
        label_names=list(record["label_names"]),
        details=dict(record.get("details") or {}),
    )


class InferenceBatch:
    """Jobs whose models resolved, sent to the host as one request; their endings come
    from its reply, or all at once from its end (a crash: every job is retried)."""

    def __init__(
        self,
        host: InferenceHost,
        jobs: list[tuple[JobAttempt, InferenceJobRequest]],
        models: list[ModelRef],
    ) -> None:
        self._host = host
        self._jobs = jobs
        self.request = BatchRequest(
            batch_id=secrets.token_hex(8),
            models=models,
            items=[
                PredictItem(job.job_id, req.model_id, req.input_data, req.parameters)
                for job, req in jobs
            ],
        )
        self._generation = -1
        self._reply: BatchReply | None = None

    @property
    def jobs(self) -> list[JobAttempt]:
        return [job for job, _ in self._jobs]

    def start(self) -> None:
        self._generation = self._host.send(self.request)

    def ended_by(self, wake: Wake) -> bool:
        if isinstance(wake, HostReplied):
            reply = self._host.accept(wake)
            if reply is not None and reply.batch_id == self.request.batch_id:
                self._reply = reply
                return True
        elif isinstance(wake, HostGone) and wake.generation == self._generation:
            return True
        return False

    def kill(self, grace_s: float) -> None:
        self._host.kill(grace_s)

    def endings(self) -> dict[str, Ending]:
        """Each job's ending, by job id, once the batch ended by itself."""
        if self._reply is None:  # the host ended before it answered
            error = "the inference process exited"
            return {job.job_id: Ending("retry", error=error, error_kind=FailureKind.CRASHED)
                    for job in self.jobs}  # fmt: skip
        models = {job.job_id: req.model_id for job, req in self._jobs}
        out: dict[str, Ending] = {}
        for item in self._reply.items:
            if item.job_id not in models:
                continue
            if item.ok:
                result = {"model_id": models[item.job_id], **item.result,
                          "batch_size": item.batch_size}  # fmt: skip
                out[item.job_id] = Ending("succeeded", result=result)
            elif item.kind == "user_error":
                out[item.job_id] = Ending("failed", error=item.error,
                                          error_kind=FailureKind.USER_ERROR)  # fmt: skip
            else:
                out[item.job_id] = Ending("retry", error=item.error,
                                          error_kind=FailureKind.CRASHED)  # fmt: skip
        for job in self.jobs:  # a reply that skipped a job (it cannot): retried, not lost
            out.setdefault(job.job_id, Ending("retry", error="the inference host gave no "
                                              "answer for this job",
                                              error_kind=FailureKind.CRASHED))  # fmt: skip
        return out
