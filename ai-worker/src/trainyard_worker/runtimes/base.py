"""The contract between the supervisor's child processes and a framework runtime.

A runtime module (one per framework family) exposes four functions:

- ``train(request: TrainRequest, ctx: TrainContext) -> TrainResult``: fit a model on
  ``request.data_file`` and save its artifact files into ``request.out_dir``.
- ``load(model_dir: Path, meta: ModelMeta) -> Any``: load a saved model without executing
  code from the file (no pickle).
- ``predict(model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict)
  -> dict``: run inference and return a JSON-serialisable result. A single string gets the
  single shape (``{"prediction", ...}``), a list the list shape (``{"predictions": [...]}``).
- ``predict_many(model, meta, inputs: list[str | list[str]], parameters: dict)
  -> list[dict | UserError]``: the inputs of several inference jobs that share
  ``parameters``, in one forward pass (one batched model call, chunked only where memory
  requires). Slot ``i`` holds exactly what ``predict(model, meta, inputs[i], parameters)``
  returns (the single shape for a string, the list shape for a list; numbers equal up to
  floating-point rounding of a different batch), or the :class:`UserError` that call would
  raise: a malformed input fails only its own slot. Invalid ``parameters`` are shared, so
  they raise :class:`UserError` for the whole call (checked before any input is read);
  any other exception means the whole call crashed. ``[]`` gives ``[]``.
  Each runtime implements ``predict`` as ``predict_many`` over one input
  (:func:`predict_one`), so the two cannot drift apart; :func:`predict_each` is the
  loop-over-``predict`` fallback for a runtime without a batched path (there a bad
  parameter fails every slot with the same UserError instead of raising).

Anything wrong with what the user sent (data, hyperparameters, inputs) raises
:class:`UserError` with a message that names the field and the reason; the job then fails
without a retry. Any other exception is treated as a crash of the job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = [
    "DATA_ROOT_ENV",
    "DEVICE_ENV",
    "BaseModelRef",
    "BatchSlot",
    "ModelMeta",
    "PredictFn",
    "PredictManyFn",
    "TrainContext",
    "TrainRequest",
    "TrainResult",
    "UserError",
    "answer_slots",
    "child_data_root",
    "child_device",
    "parse_slots",
    "predict_each",
    "predict_one",
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
        phase: str | None = None,  # "train", "val" or "fit" (see .reporting)
        fraction: float | None = None,  # 0..1 of the training done
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


# ---------------------------------------------------------------- batched prediction

PredictFn = Callable[[Any, ModelMeta, Any, dict[str, Any]], dict[str, Any]]
PredictManyFn = Callable[
    [Any, ModelMeta, list[Any], dict[str, Any]], list[dict[str, Any] | UserError]
]
_Row = TypeVar("_Row")


@dataclass(frozen=True)
class BatchSlot:
    """Where one input's rows sit in the flattened batch: ``rows[start:stop]``; ``single``
    when the input was one string (answered in the single shape)."""

    start: int
    stop: int
    single: bool


def parse_slots(
    inputs: Sequence[Any], parse: Callable[[Any], tuple[Sequence[_Row], bool]]
) -> tuple[list[BatchSlot | UserError], list[_Row]]:
    """Every input parsed on its own by ``parse`` (-> its rows and whether it was a single
    input), flattened into one list of rows for one model call. An input that ``parse``
    refuses keeps its UserError in its slot and adds no rows."""
    slots: list[BatchSlot | UserError] = []
    rows: list[_Row] = []
    for input_data in inputs:
        try:
            parsed, single = parse(input_data)
        except UserError as exc:
            slots.append(exc)
            continue
        slots.append(BatchSlot(len(rows), len(rows) + len(parsed), single))
        rows.extend(parsed)
    return slots, rows


def answer_slots(
    slots: list[BatchSlot | UserError], answer: Callable[[BatchSlot], dict[str, Any]]
) -> list[dict[str, Any] | UserError]:
    """Each parsed slot's result from ``answer(slot)``; refused slots keep their error."""
    return [slot if isinstance(slot, UserError) else answer(slot) for slot in slots]


def predict_one(
    predict_many: PredictManyFn,
    model: Any,
    meta: ModelMeta,
    input_data: Any,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """``predict`` through ``predict_many`` over one input: its result, or its UserError
    raised."""
    (result,) = predict_many(model, meta, [input_data], parameters)
    if isinstance(result, UserError):
        raise result
    return result


def predict_each(
    predict: PredictFn,
    model: Any,
    meta: ModelMeta,
    inputs: Sequence[Any],
    parameters: dict[str, Any],
) -> list[dict[str, Any] | UserError]:
    """The generic ``predict_many``: ``predict`` once per input (no shared forward pass),
    each input's UserError in its own slot."""
    results: list[dict[str, Any] | UserError] = []
    for input_data in inputs:
        try:
            results.append(predict(model, meta, input_data, parameters))
        except UserError as exc:
            results.append(exc)
    return results
