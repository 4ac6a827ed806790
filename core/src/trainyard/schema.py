"""The job schema: request bodies (the seed's, verbatim, plus optional extras), and the
job, model and worker records as the API returns them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .types import FailureKind, JobState, JobType, Priority

__all__ = [
    "ID_PATTERN",
    "GpuRecord",
    "InferenceJobRequest",
    "JobRecord",
    "JobStatus",
    "ModelRecord",
    "TrainingJobRequest",
    "WorkerRecord",
    "job_from_hash",
    "ms_to_datetime",
]

# Ids become parts of Redis keys and folder names: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=256)]

MAX_HYPERPARAMETERS = 64
MAX_BATCH = 1024
MAX_INPUT_CHARS = 8_000_000  # a base64 image of a few MB


def _check_flat_mapping(value: dict[str, Any], what: str) -> dict[str, Any]:
    if len(value) > MAX_HYPERPARAMETERS:
        raise ValueError(f"at most {MAX_HYPERPARAMETERS} {what} are allowed")
    for name, item in value.items():
        if len(name) > 64:
            raise ValueError(f"{what} name {name[:64]!r}... is longer than 64 characters")
        scalars = (bool, int, float, str, type(None))
        ok = isinstance(item, scalars) or (
            isinstance(item, list)
            and len(item) <= 64
            and all(isinstance(x, (bool, int, float, str)) for x in item)
        )
        if not ok:
            raise ValueError(
                f"{what} {name!r} must be a number, string, boolean, null or a short list of them"
            )
        if isinstance(item, str) and len(item) > 1024:
            raise ValueError(f"{what} {name!r} is longer than 1024 characters")
    return value


class _JobOptions(BaseModel):
    """Options every job takes beyond the seed's fields."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority = Field(
        Priority.NORMAL, description="high, normal or low; FIFO within a level"
    )
    max_attempts: int | None = Field(
        None, ge=1, le=20, description="attempts before the job is dead (default per job type)"
    )
    timeout_s: float | None = Field(
        None, gt=0, le=7 * 86400, description="run timeout of one attempt, seconds"
    )
    queue_ttl_s: float | None = Field(
        None, gt=0, le=30 * 86400, description="fail the job if it waits longer than this to start"
    )
    idempotency_key: Identifier | None = Field(
        None, description="submitting the same key again returns the same job"
    )


class TrainingJobRequest(_JobOptions):
    model_type: ShortText = Field(..., examples=["random_forest"])
    data_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        ..., examples=["/data/tabular_data.csv"], description="a path inside the data root"
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    description: Annotated[str, StringConstraints(max_length=4096)] = ""
    requires_gpu: bool = False
    framework_override: ShortText | None = Field(
        None, description="a runtime name, e.g. sklearn, pytorch-2.1, tensorflow"
    )
    model_name: Identifier | None = Field(
        None, description="model_id to register the trained model under (default: generated)"
    )
    label_column: ShortText | None = Field(None, description="CSV label column (default: label)")
    text_column: ShortText | None = Field(
        None, description="text models: the CSV column holding the text (default: text)"
    )
    base_model_id: Identifier | None = Field(
        None,
        description="fine-tune: start from the weights of this earlier model (same model_type)",
    )

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_flat_mapping(value, "hyperparameters")


class InferenceJobRequest(_JobOptions):
    model_id: Identifier = Field(..., examples=["random_forest_model_789"])
    input_data: (
        Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]
        | Annotated[
            list[Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]],
            Field(min_length=1, max_length=MAX_BATCH),
        ]
    ) = Field(..., examples=["5.1,3.5,1.4,0.2"], description="one input, or a list (a batch)")
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_flat_mapping(value, "parameters")


def ms_to_datetime(value: str | int | None) -> datetime | None:
    if value in (None, "", "0", 0):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class JobStatus(BaseModel):
    """What ``GET /jobs/{job_id}/status`` returns."""

    job_id: str
    status: JobState
    job_type: JobType
    runtime: str
    attempt: int
    max_attempts: int
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    model_id: str | None = None
    error: str | None = None
    error_kind: FailureKind | None = None
    waiting_reason: str | None = Field(
        None, description="why a queued job is not running yet (e.g. no live worker)"
    )
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    retry_at: datetime | None = None


class JobRecord(JobStatus):
    """The full job record: the status plus what was submitted and who holds it."""

    priority: Priority
    request: dict[str, Any]
    worker_id: str | None = None
    attempt_id: str | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None


def _json_or_none(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def job_from_hash(h: dict[str, str], waiting_reason: str | None = None) -> JobRecord:
    """Build the API's job record from the job's Redis hash."""
    return JobRecord(
        job_id=h["id"],
        status=JobState(h["state"]),
        job_type=JobType(h["type"]),
        runtime=h["runtime"],
        priority=Priority(h.get("priority", "normal")),
        attempt=int(h.get("attempt", 0)),
        max_attempts=int(h.get("max_attempts", 1)),
        progress=_json_or_none(h.get("progress")),
        result=_json_or_none(h.get("result")),
        model_id=h.get("model_id") or None,
        error=h.get("error") or None,
        error_kind=FailureKind(h["error_kind"]) if h.get("error_kind") else None,
        waiting_reason=waiting_reason,
        cancel_requested=h.get("cancel_requested") == "1",
        created_at=ms_to_datetime(h.get("created_at")),
        started_at=ms_to_datetime(h.get("started_at")),
        finished_at=ms_to_datetime(h.get("finished_at")),
        retry_at=ms_to_datetime(h.get("retry_at")) if h.get("state") == "retrying" else None,
        request=json.loads(h.get("request", "{}")),
        worker_id=h.get("worker_id") or None,
        attempt_id=h.get("attempt_id") or None,
        timeout_s=float(h["timeout_s"]) if h.get("timeout_s") else None,
        idempotency_key=h.get("idempotency_key") or None,
    )


class ModelRecord(BaseModel):
    model_id: str
    framework: str
    runtime: str
    model_type: str
    job_id: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]
    label_names: list[str]
    artifact: str = Field(..., description="where the artifact folder lives in the model store")
    size_bytes: int
    created_at: datetime
    details: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class GpuRecord(BaseModel):
    index: str
    uuid: str
    name: str
    memory_total_mb: int
    in_service: bool
    problem: str | None = Field(None, description="why the GPU was taken out of service")


class WorkerRecord(BaseModel):
    worker_id: str
    runtime: str
    framework: str
    framework_version: str
    device: str
    host: str
    pid: int
    state: str = Field(
        ..., description="idle, busy, draining, or no_gpu (every GPU out of service)"
    )
    current_job: str | None = None
    loaded_models: list[str] = Field(default_factory=list)
    packages: dict[str, str] = Field(
        default_factory=dict, description="the runtime's key packages and installed versions"
    )
    gpus: list[GpuRecord] = Field(
        default_factory=list, description="a GPU worker's GPUs, and which are out of service"
    )
    started_at: datetime | None = None
    last_seen: datetime | None = None
