"""The job stream a run submits, and the HTTP client that submits it the way a careful
client does: one ``Idempotency-Key`` per job, the same request again on a connection
error or a 5xx (the backend may be restarting, Redis may be down), until an answer.

Only an answer makes a job *acknowledged*: 202 (created), or 200 for a repeat whose first
try created the job but lost its answer (the idempotency key names the same job).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

__all__ = [
    "Ack",
    "Client",
    "JobPlan",
    "base_model_plan",
    "burst_plans",
    "dl_plans",
    "sklearn_plans",
]

Kind = Literal["train", "infer", "bad", "slow"]
CancelWhen = Literal["queued", "running"] | None

TABULAR = "/data/tabular_data.csv"
ROWS = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3"]


@dataclass
class JobPlan:
    """One job of the stream and what may become of it."""

    key: str  # the idempotency key
    kind: Kind
    endpoint: str  # /jobs/training or /jobs/inference
    body: dict[str, Any]
    cancel: CancelWhen = None
    job_id: str | None = None
    acked: int | None = None  # the HTTP status that acknowledged it
    cancel_status: str | None = None  # what the cancel answered: cancelled, running, ended

    @property
    def training(self) -> bool:
        return self.endpoint == "/jobs/training"


@dataclass
class Ack:
    job_id: str
    status: int
    tries: int


def _priority(rng: random.Random) -> str:
    return rng.choice(["high", "normal", "normal", "low"])


def base_model_plan(model_id: str) -> JobPlan:
    """A small model trained before the faults start, for the stream's inference jobs."""
    body = {"model_type": "random_forest", "data_path": TABULAR, "model_name": model_id,
            "hyperparameters": {"n_estimators": 20, "random_state": 1},
            "framework_override": "sklearn", "description": "fault run base model"}  # fmt: skip
    return JobPlan(model_id, "train", "/jobs/training", body)


def sklearn_plans(rng: random.Random, run: str, count: int, model_id: str) -> list[JobPlan]:
    """A mixed stream: random forests (~1-4 s each on one core) and SVMs with 1 to 3
    attempts, inference on the base model, unknown-hyperparameter jobs (a user error:
    failed, never retried), cancels of queued and of running jobs, every priority."""
    plans: list[JobPlan] = []
    for i in range(count):
        key = f"{run}-{i}"
        roll = rng.random()
        cancel: CancelWhen = None
        if roll < 0.40:
            kind: Kind = "train"
            hyper: dict[str, Any] = {"n_estimators": rng.randint(300, 1500), "random_state": i}
            body: dict[str, Any] = {"model_type": "random_forest", "data_path": TABULAR,
                                    "hyperparameters": hyper}  # fmt: skip
        elif roll < 0.52:
            kind = "train"
            hyper = {"C": rng.choice([0.5, 1.0, 2.0]), "random_state": i}
            body = {"model_type": "svm", "data_path": TABULAR, "hyperparameters": hyper}
        elif roll < 0.72:
            kind = "infer"
            body = {"model_id": model_id, "input_data": rng.choice([ROWS, ROWS[0]]),
                    "parameters": {"probability": True}}  # fmt: skip
        elif roll < 0.80:
            kind = "bad"
            body = {"model_type": "random_forest", "data_path": TABULAR,
                    "hyperparameters": {"n_trees": 5}}  # fmt: skip
        else:
            # Long enough to be caught running; cancelled either at once or once running.
            kind = "slow"
            cancel = "queued" if roll < 0.88 else "running"
            body = {"model_type": "random_forest", "data_path": TABULAR,
                    "hyperparameters": {"n_estimators": 4000, "random_state": i}}  # fmt: skip
        body["priority"] = _priority(rng)
        if kind == "train":
            # Some with one or two attempts: a fault then ends them dead, and a hand-back
            # that counted its attempt would show as attempt > max_attempts.
            body["max_attempts"] = rng.choice([1, 2, 3, 3])
        if kind != "infer":
            body.update(framework_override="sklearn", description=f"fault run job {i}")
        endpoint = "/jobs/inference" if kind == "infer" else "/jobs/training"
        plans.append(JobPlan(key, kind, endpoint, body, cancel))
    return plans


def burst_plans(rng: random.Random, run: str, count: int, model_id: str) -> list[JobPlan]:
    """Inference jobs for one model, sent in waves of concurrent requests (``Session``) so
    that a worker claims several as one batch (claim_batch) and holds them while the
    batch fills and runs. In every few, a row with two features where the model takes
    four: a user error in that job's own slot of the batch, not a failed batch."""
    plans = []
    for i in range(count):
        bad = i % 5 == 3
        body = {"model_id": model_id, "parameters": {"probability": True},
                "input_data": "1.0,2.0" if bad else rng.choice([ROWS, ROWS[0]]),
                "priority": _priority(rng)}  # fmt: skip
        plans.append(JobPlan(f"{run}-b{i}", "bad" if bad else "infer", "/jobs/inference", body))
    return plans


# Small deep-learning jobs (seconds of training after the framework's import).
DL_TRAINING: dict[str, dict[str, Any]] = {
    "pytorch-2.1": {
        "model_type": "transformer",
        "data_path": "/data/sentiment_analysis.csv",
        "hyperparameters": {"epochs": 1, "batch_size": 32, "max_length": 32, "hidden_size": 32,
                            "num_layers": 1, "num_heads": 2, "learning_rate": 0.001},
    },
    "tensorflow": {
        "model_type": "mobilenet",
        "data_path": "/data/cifar10",
        "hyperparameters": {"architecture": "mobilenet_v3_small", "epochs": 1,
                            "batch_size": 32, "image_size": 32},
    },
}  # fmt: skip


def dl_plans(rng: random.Random, run: str, runtime: str, count: int) -> list[JobPlan]:
    plans = []
    for i in range(count):
        body: dict[str, Any] = {**DL_TRAINING[runtime], "framework_override": runtime,
                                "priority": _priority(rng),
                                "description": f"fault run {i}"}  # fmt: skip
        body["hyperparameters"] = {**body["hyperparameters"], "seed": i}
        plans.append(JobPlan(f"{run}-{i}", "train", "/jobs/training", body))
    return plans


@dataclass
class Client:
    """Submits and cancels over HTTP, riding out a backend or Redis restart."""

    base_url: str
    retry_for_s: float = 120.0
    stats: dict[str, int] = field(default_factory=lambda: {"retries": 0, "replays": 0})

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.base_url, timeout=10)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        deadline = time.monotonic() + self.retry_for_s
        tries = 0
        while True:
            tries += 1
            try:
                response = self._http.post(path, **kwargs)
                if response.status_code < 500:
                    return response, tries
                problem = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:  # refused, reset, timed out: try again
                problem = f"{type(exc).__name__}: {exc}"
            self.stats["retries"] += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"POST {path}: no answer within {self.retry_for_s}s: {problem}")
            time.sleep(0.2)

    def submit(self, plan: JobPlan) -> Ack:
        response, tries = self._post(
            plan.endpoint, json=plan.body, headers={"Idempotency-Key": plan.key}
        )
        if response.status_code not in (200, 202):
            raise RuntimeError(f"submit {plan.key}: {response.status_code} {response.text[:500]}")
        if response.status_code == 200:
            self.stats["replays"] += 1
        ack = Ack(response.json()["job_id"], response.status_code, tries)
        plan.job_id, plan.acked = ack.job_id, ack.status
        return ack

    def cancel(self, job_id: str) -> str:
        """``cancelled`` (it was queued), ``running`` (requested) or ``ended`` (409)."""
        response, _ = self._post(f"/jobs/{job_id}/cancel")
        if response.status_code == 409:
            return "ended"
        if response.status_code != 200:
            raise RuntimeError(f"cancel {job_id}: {response.status_code} {response.text[:300]}")
        return str(response.json()["status"])
