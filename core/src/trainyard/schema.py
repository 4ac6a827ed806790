"""The job schema: request bodies (the seed's, verbatim, plus optional extras), and the
job, model and worker records as the API returns them."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from .routing import MODEL_TYPES, RUNTIMES
from .types import FailureKind, JobState, JobType, Priority

__all__ = [
    "ID_PATTERN",
    "MAX_BATCH_JOBS",
    "BatchJob",
    "BatchJobResult",
    "BatchSubmitResponse",
    "ErrorBody",
    "ErrorDetail",
    "GpuRecord",
    "InferenceBatchJob",
    "InferenceJobRequest",
    "JobRecord",
    "JobStatus",
    "ModelRecord",
    "TrainingBatchJob",
    "TrainingJobRequest",
    "WorkerRecord",
    "integral_float",
    "job_from_hash",
    "ms_to_datetime",
    "status_from_hash",
]

# Ids become parts of Redis keys and folder names: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=256)]


def integral_float(value: Any) -> Any:
    """A before-validator for strict integer fields: JSON Schema (and so the OpenAPI
    schema) counts 3.0 as an integer, and some JSON encoders write whole floats that way;
    strict mode alone would refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value

MAX_HYPERPARAMETERS = 64
MAX_BATCH = 1024
MAX_BATCH_JOBS = 1000  # jobs in one POST /jobs/batch
MAX_INPUT_CHARS = 8_000_000  # a base64 image of a few MB


# What _check_flat_mapping enforces, said in the OpenAPI schema: without it the schema calls
# any object valid and clients (and fuzzers) learn the limits only from a 422.
FLAT_MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_HYPERPARAMETERS,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": 1024},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "maxItems": 64, "items": {"type": ["string", "number", "boolean"]}},
        ]
    },
}


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        # JSON's \ud800 escapes parse to lone surrogates, which typed str fields refuse but
        # these free-form values would keep: stored, the job could no longer be sent as
        # UTF-8 (GET /jobs/{id} answered 500).
        texts = [name, *(x for x in (item if isinstance(item, list) else [item]))]
        if not all(_is_unicode(x) for x in texts if isinstance(x, str)):
            raise ValueError(f"{what} {name!r} holds a lone surrogate (not valid Unicode)")
        # Python's JSON parser takes NaN, Infinity and 1e400 (= inf); no runtime can use
        # them, and a stored NaN would not even survive as JSON.
        numbers = item if isinstance(item, list) else [item]
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise ValueError(f"{what} {name!r} must be a finite number, got {item!r}")
    return value


# ECMA-262 (JSON Schema) regex: no NUL anywhere. Added to every string in the request
# schemas (see _document_no_nul) so clients and fuzzers know what _no_nul_bytes refuses.
NO_NUL_PATTERN = r"^[^\u0000]*$"


def _document_no_nul(schema: dict[str, Any]) -> None:
    """Put ``NO_NUL_PATTERN`` on each string of a request schema that has no pattern or
    enum of its own (``pattern`` constrains strings only, so a union is fine)."""

    def visit(node: Any, names: bool = False) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        is_text = kind == "string" or (isinstance(kind, list) and "string" in kind)
        if (is_text or names) and "pattern" not in node and "enum" not in node:
            node["pattern"] = NO_NUL_PATTERN
        for key, value in node.items():
            visit(value, names=key == "propertyNames")

    visit(schema)


def _nul_at(value: Any, path: str) -> str | None:
    """Where in ``value`` (strings, dict keys and values, lists) a NUL byte is, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_at(key, f"{path} (a name)") or _nul_at(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_at(item, f"{path}.{i}")
            if found:
                return found
    return None


class _JobOptions(BaseModel):
    """Options every job takes beyond the seed's fields."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_no_nul)

    priority: Priority = Field(
        Priority.NORMAL, description="high, normal or low; FIFO within a level"
    )
    # strict: a JSON number only (lax mode would take true as 1 and "5" as 5).
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=20,
        strict=True,
        description="attempts before the job is dead (default per job type)",
    )
    timeout_s: float | None = Field(
        None, gt=0, le=7 * 86400, strict=True, description="run timeout of one attempt, seconds"
    )
    queue_ttl_s: float | None = Field(
        None,
        gt=0,
        le=30 * 86400,
        strict=True,
        description="fail the job if it waits longer than this to start",
    )
    idempotency_key: Identifier | None = Field(
        None, description="submitting the same key again returns the same job"
    )

    _integral_float = field_validator("max_attempts", mode="before")(integral_float)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_bytes(cls, value: Any, info: ValidationInfo) -> Any:
        # A NUL byte is never meaningful in any field; C-level consumers (paths, CSV
        # parsers, tokenizers, logs) each treat it differently, so it is refused up front.
        where = _nul_at(value, str(info.field_name))
        if where is not None:
            raise ValueError(f"{where} contains a NUL byte")
        return value


class TrainingJobRequest(_JobOptions):
    # The enums document what routing accepts (anything else is refused with a 422 that
    # lists them); validation stays with routing, whose messages say more.
    model_type: ShortText = Field(
        ..., examples=["random_forest"], json_schema_extra={"enum": [*sorted(MODEL_TYPES)]}
    )
    data_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        ..., examples=["/data/tabular_data.csv"], description="a path inside the data root"
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=FLAT_MAPPING_SCHEMA
    )
    description: Annotated[str, StringConstraints(max_length=4096)] = ""
    requires_gpu: bool = Field(False, strict=True, description="true or false (JSON booleans)")
    framework_override: ShortText | None = Field(
        None,
        description="a runtime name, e.g. sklearn, pytorch-2.1, tensorflow",
        json_schema_extra={"enum": [*RUNTIMES, None]},
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
    parameters: dict[str, Any] = Field(default_factory=dict, json_schema_extra=FLAT_MAPPING_SCHEMA)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_flat_mapping(value, "parameters")


class TrainingBatchJob(TrainingJobRequest):
    """A training job in a batch (``POST /jobs/batch``): the training body plus its type."""

    type: Literal["training"] = Field(..., description="training: the rest is a training body")


class InferenceBatchJob(InferenceJobRequest):
    """An inference job in a batch (``POST /jobs/batch``): the inference body plus its type."""

    type: Literal["inference"] = Field(..., description="inference: the rest is an inference body")


#: One job of ``POST /jobs/batch``, told apart by ``type``.
BatchJob = Annotated[TrainingBatchJob | InferenceBatchJob, Field(discriminator="type")]


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
    redriven_from: str | None = Field(
        None, description="the dead job this one was redriven from (POST /jobs/{id}/redrive)"
    )
    redriven_to: str | None = Field(
        None, description="a dead job's redrive: the new job that runs it again"
    )


class JobRecord(JobStatus):
    """The full job record: the status plus what was submitted and who holds it."""

    priority: Priority
    request: dict[str, Any]
    worker_id: str | None = None
    attempt_id: str | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None


class ErrorDetail(BaseModel):
    field: str = Field(..., description="body field path (e.g. `input_data.0`), or parameter name")
    reason: str


class ErrorBody(BaseModel):
    """The API's error body. In a batch answer each field is named ``jobs[<index>].<field>``."""

    status: int
    code: str = Field(..., description="stable machine-readable code, e.g. invalid_request")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class BatchJobResult(BaseModel):
    """The answer for one job of a batch, at the job's index."""

    index: int = Field(..., ge=0, description="the job's position in the request's `jobs`")
    status_code: int = Field(
        ...,
        description="what a single submission of this job would have answered: 202 queued, "
        "200 an idempotent replay (the job the key already names), 404/409/422 refused",
    )
    job: JobStatus | None = Field(None, description="the job's status; null when refused")
    error: ErrorBody | None = Field(None, description="why it was refused; else null")

    @property
    def accepted(self) -> bool:
        """Queued now (202) or already there (200, an idempotent replay)."""
        return self.job is not None


class BatchSubmitResponse(BaseModel):
    """What ``POST /jobs/batch`` answers: one result per submitted job, in order."""

    results: list[BatchJobResult]


def _json_or_none(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def _status_fields(h: dict[str, str], waiting_reason: str | None) -> dict[str, Any]:
    return {
        "job_id": h["id"],
        "status": JobState(h["state"]),
        "job_type": JobType(h["type"]),
        "runtime": h["runtime"],
        "attempt": int(h.get("attempt", 0)),
        "max_attempts": int(h.get("max_attempts", 1)),
        "progress": _json_or_none(h.get("progress")),
        "result": _json_or_none(h.get("result")),
        "model_id": h.get("model_id") or None,
        "error": h.get("error") or None,
        "error_kind": FailureKind(h["error_kind"]) if h.get("error_kind") else None,
        "waiting_reason": waiting_reason,
        "cancel_requested": h.get("cancel_requested") == "1",
        "created_at": ms_to_datetime(h.get("created_at")),
        "started_at": ms_to_datetime(h.get("started_at")),
        "finished_at": ms_to_datetime(h.get("finished_at")),
        "retry_at": ms_to_datetime(h.get("retry_at")) if h.get("state") == "retrying" else None,
        "redriven_from": h.get("redriven_from") or None,
        "redriven_to": h.get("redriven_to") or None,
    }


def status_from_hash(h: dict[str, str], waiting_reason: str | None = None) -> JobStatus:
    """Build the API's job status from the job's Redis hash (without decoding the request:
    a listing or a batch answers many)."""
    return JobStatus(**_status_fields(h, waiting_reason))


def job_from_hash(h: dict[str, str], waiting_reason: str | None = None) -> JobRecord:
    """Build the API's job record from the job's Redis hash."""
    return JobRecord(
        **_status_fields(h, waiting_reason),
        priority=Priority(h.get("priority", "normal")),
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
        ...,
        description="idle, busy, draining, no_gpu (every GPU out of service), or "
        "out_of_service (it could not see its training jobs' data; see state_reason)",
    )
    state_reason: str | None = Field(
        None, description="why the worker is out of service, and which setting to fix"
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
