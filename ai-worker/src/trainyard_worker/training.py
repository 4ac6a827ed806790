"""What one training attempt owns on disk, and the registry record of what it made."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["TrainingPaths", "model_record", "read_json"]


@dataclass(frozen=True)
class TrainingPaths:
    model_id: str
    relative: Path  # the artifact folder, relative to the model store (kept in the record)
    out_dir: Path  # MODEL_STORE/<model_id>/<job_id>-<attempt>: only this attempt writes here
    work: Path  # scratch: the spec and the result file

    @classmethod
    def for_attempt(
        cls, model_store: Path, work_dir: Path, request: dict[str, Any], job_id: str, attempt: int
    ) -> TrainingPaths:
        model_id = request.get("model_name") or f"{request['model_type']}_{job_id[:12]}"
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
    request: dict[str, Any],
    result: dict[str, Any],
    created_ms: int,
) -> dict[str, Any]:
    """The registry entry (``ModelRecord``'s fields) for a successful attempt."""
    return {
        "model_id": paths.model_id,
        "framework": framework,
        "runtime": runtime,
        "model_type": request["model_type"],
        "job_id": job_id,
        "hyperparameters": request.get("hyperparameters") or {},
        "metrics": result["metrics"],
        "label_names": result["label_names"],
        "artifact": paths.relative.as_posix(),
        "size_bytes": sum(f.stat().st_size for f in paths.out_dir.rglob("*") if f.is_file()),
        "created_at": datetime.fromtimestamp(created_ms / 1000, tz=UTC).isoformat(),
        "details": result.get("details") or {},
        "description": request.get("description") or "",
    }


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
