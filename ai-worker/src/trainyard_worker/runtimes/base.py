"""The contract between the supervisor's child processes and a framework runtime.

A runtime module (one per framework family) exposes three functions:

- ``train(request: TrainRequest, ctx: TrainContext) -> TrainResult``: fit a model on
  ``request.data_file`` and save its artifact files into ``request.out_dir``.
- ``load(model_dir: Path, meta: ModelMeta) -> Any``: load a saved model without executing
  code from the file (no pickle).
- ``predict(model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict)
  -> dict``: run inference and return a JSON-serialisable result.

Anything wrong with what the user sent (data, hyperparameters, inputs) raises
:class:`UserError` with a message that names the field and the reason; the job then fails
without a retry. Any other exception is treated as a crash of the job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DATA_ROOT_ENV",
    "DEVICE_ENV",
    "BaseModelRef",
    "ModelMeta",
    "TrainContext",
    "TrainRequest",
    "TrainResult",
    "UserError",
    "child_data_root",
    "child_device",
]

# Set by the supervisor in every child's environment (training and inference).
DEVICE_ENV = "TRAINYARD_DEVICE"  # "cuda" on a GPU worker, else "cpu"
DATA_ROOT_ENV = "TRAINYARD_DATA_ROOT"  # where image paths in inference inputs resolve


class UserError(Exception):
    """Bad input from the user: fails the job with this message, never retried."""


class TrainContext(Protocol):
    """What a training function may report while it runs."""

    def progress(
        self,
        *,
        epoch: int | None = None,
        epochs: int | None = None,
        step: int | None = None,
        steps: int | None = None,
        loss: float | None = None,
        metrics: dict[str, float] | None = None,
        message: str | None = None,
    ) -> None: ...

    def log(self, line: str) -> None: ...


@dataclass(frozen=True)
class ModelMeta:
    """The registry record's fields a runtime needs to load and serve a model."""

    model_id: str
    model_type: str
    label_names: list[str]
    details: dict[str, Any]


@dataclass(frozen=True)
class BaseModelRef:
    """An earlier registered model a training job fine-tunes from (``base_model_id``)."""

    model_dir: Path
    meta: ModelMeta


@dataclass(frozen=True)
class TrainRequest:
    model_type: str
    data_file: Path  # already resolved inside the data root and checked to exist
    hyperparameters: dict[str, Any]
    out_dir: Path  # an empty folder the runtime writes its artifact files into
    label_column: str | None = None  # None: the runtime's default (last column)
    text_column: str | None = None
    # "cuda" on a GPU worker (the child sees only its own devices through
    # CUDA_VISIBLE_DEVICES), else "cpu". A runtime never falls back from cuda to cpu.
    device: str = "cpu"
    data_root: Path | None = None  # for paths inside hyperparameters (pretrained_path)
    base_model: BaseModelRef | None = None


@dataclass
class TrainResult:
    metrics: dict[str, float]
    label_names: list[str]
    # Extra facts the runtime needs again at load/predict time (feature names, input shape...).
    details: dict[str, Any] = field(default_factory=dict)


def child_device() -> str:
    """The device this child must use: "cuda" or "cpu" (never a silent fallback)."""
    return os.environ.get(DEVICE_ENV, "cpu")


def child_data_root() -> Path | None:
    root = os.environ.get(DATA_ROOT_ENV)
    return Path(root) if root else None
