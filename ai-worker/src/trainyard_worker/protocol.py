"""The messages between the supervisor and its children, typed and parsed once where they
cross (a JSON file, a pipe line): the training spec and result file, the inference
host's batch request and reply, and the training child's exit codes.

Plain frozen dataclasses with hand-written parsing rather than pydantic: a training child
started without the fork server and the inference host import this at start, and
pydantic alone costs ~0.4 s there. ``from_wire`` takes decoded JSON (``Any``) and raises
:class:`ProtocolError` on anything of the wrong shape; ``to_wire`` gives plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "EXIT_OK",
    "EXIT_USER_ERROR",
    "BatchReply",
    "BatchRequest",
    "HostReady",
    "InferenceJobRequest",
    "ItemReply",
    "ModelRef",
    "PredictItem",
    "ProtocolError",
    "TrainingJobRequest",
    "TrainingResult",
    "TrainingSpec",
    "parse_host_line",
]

# How a training child ends. Anything else is a crash (its traceback is on stderr).
EXIT_OK = 0
EXIT_USER_ERROR = 3  # bad data or hyperparameters; the result file says why

ErrorKind = Literal["user_error", "crashed"]


class ProtocolError(ValueError):
    """A message of the wrong shape; the text names the field."""


# -- parsing helpers ------------------------------------------------------------------


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{name}: expected a string or null, got {type(value).__name__}")
    return value


def _int(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def _dict(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    """An optional JSON object field: null or missing is {}."""
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def _str_list(obj: Mapping[str, Any], name: str) -> list[str]:
    value = obj.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{name}: expected a list of strings")
    return list(value)


def _list(obj: Mapping[str, Any], name: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise ProtocolError(f"{name}: expected a list, got {type(value).__name__}")
    return value


def _input_data(obj: Mapping[str, Any]) -> Any:
    """What the user sent as input, as decoded JSON: the API accepts a string or a list of
    strings, and the runtime checks what reached the queue another way (saying what is
    wrong with it, in its own terms)."""
    if "input_data" not in obj:
        raise ProtocolError("input_data: missing")
    return obj["input_data"]


# -- the job requests, as the supervisor and its children rely on them ------------------


@dataclass(frozen=True)
class TrainingJobRequest:
    """The fields of a training job's request that the worker uses (the API validated
    them; a job that reached the queue another way is checked again here)."""

    model_type: str
    data_path: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    label_column: str | None = None
    text_column: str | None = None
    model_name: str | None = None
    base_model_id: str | None = None
    description: str = ""

    @classmethod
    def from_wire(cls, value: Any) -> TrainingJobRequest:
        obj = _object(value, "request")
        return cls(
            model_type=_str(obj, "model_type"),
            data_path=_str(obj, "data_path"),
            hyperparameters=_dict(obj, "hyperparameters"),
            label_column=_opt_str(obj, "label_column"),
            text_column=_opt_str(obj, "text_column"),
            model_name=_opt_str(obj, "model_name"),
            base_model_id=_opt_str(obj, "base_model_id"),
            description=_opt_str(obj, "description") or "",
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "data_path": self.data_path,
            "hyperparameters": self.hyperparameters,
            "label_column": self.label_column,
            "text_column": self.text_column,
            "model_name": self.model_name,
            "base_model_id": self.base_model_id,
            "description": self.description,
        }


@dataclass(frozen=True)
class InferenceJobRequest:
    model_id: str
    input_data: Any  # see _input_data
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, value: Any) -> InferenceJobRequest:
        obj = _object(value, "request")
        return cls(
            model_id=_str(obj, "model_id"),
            input_data=_input_data(obj),
            parameters=_dict(obj, "parameters"),
        )


# -- training: the spec file the child reads, the result file it writes -------------------


@dataclass(frozen=True)
class TrainingSpec:
    """Everything a training child needs, written by the supervisor as ``spec.json``."""

    job_id: str
    attempt_id: str
    supervisor_pid: int
    redis_url: str
    namespace: str
    data_root: str
    framework: str
    task: str
    device: str
    model_store: str
    request: TrainingJobRequest
    out_dir: str
    result_path: str
    memory_limit_mb: int | None = None

    @classmethod
    def from_wire(cls, value: Any) -> TrainingSpec:
        obj = _object(value, "spec")
        limit = obj.get("memory_limit_mb")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise ProtocolError("memory_limit_mb: expected an integer or null")
        return cls(
            job_id=_str(obj, "job_id"),
            attempt_id=_str(obj, "attempt_id"),
            supervisor_pid=_int(obj, "supervisor_pid"),
            redis_url=_str(obj, "redis_url"),
            namespace=_str(obj, "namespace"),
            data_root=_str(obj, "data_root"),
            framework=_str(obj, "framework"),
            task=_str(obj, "task"),
            device=_opt_str(obj, "device") or "cpu",
            model_store=_str(obj, "model_store"),
            request=TrainingJobRequest.from_wire(obj.get("request")),
            out_dir=_str(obj, "out_dir"),
            result_path=_str(obj, "result_path"),
            memory_limit_mb=limit,
        )

    @classmethod
    def read(cls, path: Path) -> TrainingSpec:
        return cls.from_wire(json.loads(path.read_text(encoding="utf-8")))

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt_id": self.attempt_id,
            "supervisor_pid": self.supervisor_pid,
            "redis_url": self.redis_url,
            "namespace": self.namespace,
            "data_root": self.data_root,
            "framework": self.framework,
            "task": self.task,
            "device": self.device,
            "model_store": self.model_store,
            "request": self.request.to_wire(),
            "out_dir": self.out_dir,
            "result_path": self.result_path,
            "memory_limit_mb": self.memory_limit_mb,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_wire()), encoding="utf-8")


@dataclass(frozen=True)
class TrainingResult:
    """The child's ``result.json``: ok with what the registry needs, or the user's error."""

    ok: bool
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, value: Any) -> TrainingResult:
        obj = _object(value, "result")
        if obj.get("ok") is not True:
            return cls(ok=False, error=str(obj.get("error") or "the job failed"))
        return cls(
            ok=True,
            metrics=_dict(obj, "metrics"),
            label_names=_str_list(obj, "label_names"),
            details=_dict(obj, "details"),
        )

    @classmethod
    def read(cls, path: Path) -> TrainingResult | None:
        """None: no readable result (the child died before writing one, or wrote junk)."""
        try:
            return cls.from_wire(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # ProtocolError is a ValueError
            return None

    def to_wire(self) -> dict[str, Any]:
        if not self.ok:
            return {"ok": False, "error": self.error}
        return {"ok": True, "metrics": self.metrics, "label_names": self.label_names,
                "details": self.details}  # fmt: skip

    def write(self, path: Path) -> None:
        """Atomically: the supervisor never reads half a file."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_wire()), encoding="utf-8")
        tmp.replace(path)


# -- inference: one batch request per line to the host, one reply line per batch ---------


@dataclass(frozen=True)
class ModelRef:
    """A registered model as the host loads it (the registry record's serving fields)."""

    model_id: str
    model_dir: str  # absolute; a re-registered model id has a new folder
    model_type: str
    label_names: list[str]
    details: dict[str, Any]

    @classmethod
    def from_wire(cls, value: Any) -> ModelRef:
        obj = _object(value, "model")
        return cls(
            model_id=_str(obj, "model_id"),
            model_dir=_str(obj, "model_dir"),
            model_type=_str(obj, "model_type"),
            label_names=_str_list(obj, "label_names"),
            details=_dict(obj, "details"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_dir": self.model_dir,
                "model_type": self.model_type, "label_names": self.label_names,
                "details": self.details}  # fmt: skip


@dataclass(frozen=True)
class PredictItem:
    """One job of a batch: its input, its parameters and the model (by id) it asks."""

    job_id: str
    model_id: str
    input_data: Any  # see _input_data
    parameters: dict[str, Any]

    @classmethod
    def from_wire(cls, value: Any) -> PredictItem:
        obj = _object(value, "item")
        return cls(
            job_id=_str(obj, "job_id"),
            model_id=_str(obj, "model_id"),
            input_data=_input_data(obj),
            parameters=_dict(obj, "parameters"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "model_id": self.model_id,
                "input_data": self.input_data, "parameters": self.parameters}  # fmt: skip


@dataclass(frozen=True)
class BatchRequest:
    batch_id: str
    models: list[ModelRef]  # each model the items name, once
    items: list[PredictItem]

    @classmethod
    def from_wire(cls, value: Any) -> BatchRequest:
        obj = _object(value, "batch")
        return cls(
            batch_id=_str(obj, "batch_id"),
            models=[ModelRef.from_wire(m) for m in _list(obj, "models")],
            items=[PredictItem.from_wire(i) for i in _list(obj, "items")],
        )

    def to_line(self) -> str:
        return json.dumps({"batch_id": self.batch_id,
                           "models": [m.to_wire() for m in self.models],
                           "items": [i.to_wire() for i in self.items]}) + "\n"  # fmt: skip


@dataclass(frozen=True)
class ItemReply:
    """One job's answer: its result (ok), or why not (a user error fails the job, a crash
    retries it)."""

    job_id: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    kind: ErrorKind | None = None
    error: str = ""
    batch_size: int = 1  # how many jobs' inputs went through the same model call

    @classmethod
    def from_wire(cls, value: Any) -> ItemReply:
        obj = _object(value, "reply item")
        job_id = _str(obj, "job_id")
        batch_size = _int(obj, "batch_size")
        if obj.get("ok") is True:
            return cls(job_id, True, result=_dict(obj, "result"), batch_size=batch_size)
        kind = obj.get("kind")
        if kind not in ("user_error", "crashed"):
            raise ProtocolError(f"kind: expected user_error or crashed, got {kind!r}")
        return cls(job_id, False, kind=kind, error=_str(obj, "error"), batch_size=batch_size)

    def to_wire(self) -> dict[str, Any]:
        if self.ok:
            return {"job_id": self.job_id, "ok": True, "result": self.result,
                    "batch_size": self.batch_size}  # fmt: skip
        return {"job_id": self.job_id, "ok": False, "kind": self.kind, "error": self.error,
                "batch_size": self.batch_size}  # fmt: skip


@dataclass(frozen=True)
class BatchReply:
    batch_id: str
    items: list[ItemReply]  # one per job of the request
    loaded: list[str]  # the host's loaded model ids after this batch (for affinity)

    @classmethod
    def from_wire(cls, value: Any) -> BatchReply:
        obj = _object(value, "reply")
        return cls(
            batch_id=_str(obj, "batch_id"),
            items=[ItemReply.from_wire(i) for i in _list(obj, "items")],
            loaded=_str_list(obj, "loaded"),
        )

    def to_line(self) -> str:
        return json.dumps({"batch_id": self.batch_id, "items": [i.to_wire() for i in self.items],
                           "loaded": self.loaded}) + "\n"  # fmt: skip


@dataclass(frozen=True)
class HostReady:
    """The host's first line: its framework is imported and it reads requests."""

    @staticmethod
    def to_line() -> str:
        return json.dumps({"ready": True}) + "\n"


def parse_host_line(line: str) -> HostReady | BatchReply:
    """A line of the inference host's protocol stream."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if isinstance(value, dict) and value.get("ready") is True:
        return HostReady()
    return BatchReply.from_wire(value)
