"""What one training attempt owns on disk, and the registry record of what it made."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainyard.routing import MODEL_TYPES
from trainyard.schema import ID_PATTERN

from .protocol import InferenceJobRequest, ProtocolError, TrainingJobRequest, TrainingResult

__all__ = [
    "TrainingPaths",
    "UnreadableRequest",
    "model_record",
    "read_inference_request",
    "read_training_request",
]


class UnreadableRequest(ValueError):
    """A job's request that no worker could run; the message says why."""


def _decode(job: dict[str, str]) -> Any:
    try:
        return json.loads(job["request"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise UnreadableRequest(f"the job's request cannot be read: {type(exc).__name__}") from exc


def _check_ids(values: dict[str, str | None], required: tuple[str, ...]) -> None:
    for name, value in values.items():
        if (value is None and name not in required) or (
            isinstance(value, str) and re.fullmatch(ID_PATTERN, value)
        ):
            continue
        # An id becomes a folder name and a Redis key: nothing but the id alphabet.
        raise UnreadableRequest(f"{name}: must match {ID_PATTERN}, got {str(value)[:80]!r}")


def read_training_request(job: dict[str, str]) -> TrainingJobRequest:
    """The job's request, checked as far as the supervisor relies on it.

    The API validates every request, but a job can also reach the queue another way (a
    client of the engine, a corrupted record): what the supervisor indexes or turns into
    paths is checked here again, so such a job fails once instead of crashing the worker's
    bookkeeping and being retried as a worker fault."""
    raw = _decode(job)
    if isinstance(raw, dict) and raw.get("model_type") not in MODEL_TYPES:
        raise UnreadableRequest(f"model_type: unknown model type {raw.get('model_type')!r}")
    try:
        request = TrainingJobRequest.from_wire(raw)
    except ProtocolError as exc:
        raise UnreadableRequest(_not_runnable(exc)) from exc
    _check_ids({"model_name": request.model_name, "base_model_id": request.base_model_id}, ())
    return request


def read_inference_request(job: dict[str, str]) -> InferenceJobRequest:
    """An inference job's request, checked like a training job's (see above)."""
    raw = _decode(job)
    if isinstance(raw, dict):
        _check_ids({"model_id": raw.get("model_id")}, ("model_id",))
    try:
        return InferenceJobRequest.from_wire(raw)
    except ProtocolError as exc:
        raise UnreadableRequest(_not_runnable(exc)) from exc


def _not_runnable(exc: ProtocolError) -> str:
    text = str(exc)
    return "the job's request is not a JSON object" if text.startswith("request:") else text


@dataclass(frozen=True)
class TrainingPaths:
    model_id: str
    relative: Path  # the artifact folder, relative to the model store (kept in the record)
    out_dir: Path  # MODEL_STORE/<model_id>/<job_id>-<attempt>: only this attempt writes here
    work: Path  # scratch: the spec and the result file

    @classmethod
    def for_attempt(
        cls,
        model_store: Path,
        work_dir: Path,
        request: TrainingJobRequest,
        job_id: str,
        attempt: int,
    ) -> TrainingPaths:
        model_id = request.model_name or f"{request.model_type}_{job_id[:12]}"
        relative = Path(model_id) / f"{job_id}-{attempt}"
        return cls(model_id, relative, model_store / relative, work_dir / f"{job_id}-{attempt}")

    def create(self) -> None:
        for folder in (self.out_dir, self.work):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)


def model_record(
    paths: TrainingPaths,
    *,
    framework: str,
    runtime: str,
    job_id: str,
    request: TrainingJobRequest,
    result: TrainingResult,
    created_ms: int,
) -> dict[str, Any]:
    """The registry entry (``ModelRecord``'s fields) for a successful attempt."""
    return {
        "model_id": paths.model_id,
        "framework": framework,
        "runtime": runtime,
        "model_type": request.model_type,
        "job_id": job_id,
        "hyperparameters": request.hyperparameters,
        "metrics": result.metrics,
        "label_names": result.label_names,
        "artifact": paths.relative.as_posix(),
        "size_bytes": sum(f.stat().st_size for f in paths.out_dir.rglob("*") if f.is_file()),
        "created_at": datetime.fromtimestamp(created_ms / 1000, tz=UTC).isoformat(),
        "details": result.details,
        "description": request.description,
    }
