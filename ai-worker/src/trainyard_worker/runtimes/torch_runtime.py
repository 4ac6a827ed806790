"""PyTorch runtime: text models (``bert``, ``transformer``) in :mod:`.torch_text`, image
models (``resnet``, ``vgg``) in :mod:`.torch_vision`. Dispatches the contract in
:mod:`.base` by model type."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from .base import ModelMeta, TrainContext, TrainRequest, TrainResult, UserError

__all__ = ["MODEL_TYPES", "load", "predict", "predict_many", "train"]

MODEL_TYPES = ("bert", "transformer", "resnet", "vgg")


def _module(model_type: str) -> ModuleType:
    if model_type in ("bert", "transformer"):
        from . import torch_text

        return torch_text
    if model_type in ("resnet", "vgg"):
        from . import torch_vision

        return torch_vision
    raise UserError(f"model_type {model_type!r} is not a PyTorch model here: {MODEL_TYPES}")


def train(request: TrainRequest, ctx: TrainContext) -> TrainResult:
    result: TrainResult = _module(request.model_type).train(request, ctx)
    return result


def load(model_dir: Path, meta: ModelMeta) -> Any:
    return _module(meta.model_type).load(model_dir, meta)


def predict(
    model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = _module(meta.model_type).predict(model, meta, input_data, parameters)
    return result


def predict_many(
    model: Any, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
) -> list[dict[str, Any] | UserError]:
    results: list[dict[str, Any] | UserError] = _module(meta.model_type).predict_many(
        model, meta, inputs, parameters
    )
    return results
