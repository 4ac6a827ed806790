"""PyTorch image classifiers: ``resnet`` and ``vgg`` from torchvision, trained from scratch
(``weights=None``: nothing is ever downloaded) or fine-tuned from an earlier Trainyard model.

Implements the contract in :mod:`.base` for :mod:`.torch_runtime`. Training data is an
ImageFolder tree (see :mod:`.imagedata`); weights are saved with safetensors (no pickle) and
everything needed to rebuild the network goes into ``TrainResult.details``.
Works on torch 2.0 + torchvision 0.15 and torch 2.1 + torchvision 0.16.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from . import imagedata
from .base import (
    ModelMeta,
    TrainContext,
    TrainRequest,
    TrainResult,
    UserError,
    child_data_root,
    child_device,
    predict_one,
)
from .torch_common import autocast, check_number, peak_gpu_memory, prepare_torch, train_epochs
from .torch_vision_nets import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    VGG_WIDTH,
    NetSpec,
    build,
    has_batchnorm,
    replace_head,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "MIN_IMAGE_SIZE",
    "MODEL_FILE",
    "hyperparameter_names",
    "load",
    "predict",
    "predict_many",
    "train",
]

MODEL_FILE = "model.safetensors"
MIN_IMAGE_SIZE = 32  # five stride-2 stages: 32 px ends at 1x1 in both families
_COMMON_HYPERPARAMETERS = (
    "architecture", "augment", "batch_size", "epochs", "image_size", "learning_rate",
    "momentum", "num_classes", "optimizer", "seed", "validation_split", "weight_decay",
)  # fmt: skip
_VGG_HYPERPARAMETERS = ("classifier_width", "dropout", "global_pool")
_OPTIMIZERS = ("adam", "sgd")
_MIN_PER_CLASS_FOR_VALIDATION = 5
_EVAL_BATCH = 64
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/=_\-\s]+")  # standard and URL-safe, maybe wrapped
_Ints = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.float32]
_PAD = 4  # augmentation: random crops from images padded by this many pixels


def hyperparameter_names(model_type: str) -> tuple[str, ...]:
    extra = _VGG_HYPERPARAMETERS if model_type == "vgg" else ()
    return tuple(sorted((*_COMMON_HYPERPARAMETERS, *extra)))


# ------------------------------------------------------------------------ hyperparameters


@dataclass(frozen=True)
class _Settings:
    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    augment: bool
    validation_split: float
    seed: int
    architecture: str | None
    classifier_width: int | None
    global_pool: bool | None
    dropout: float | None
    image_size: Any  # checked once the data's size is known


def _flag(hp: dict[str, Any], name: str) -> bool | None:
    value = hp.get(name)
    if value is not None and not isinstance(value, bool):
        raise UserError(f"hyperparameters.{name} must be true or false, got {value!r}")
    return value


def _parse_hyperparameters(model_type: str, hp: dict[str, Any]) -> _Settings:
    accepted = hyperparameter_names(model_type)
    unknown = sorted(k for k in hp if k not in accepted)
    if unknown:
        raise UserError(
            f"unknown hyperparameter(s) for {model_type}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    arch = hp.get("architecture")
    if arch is not None and arch not in ARCHITECTURES[model_type]:
        raise UserError(
            f"hyperparameters.architecture must be one of {', '.join(ARCHITECTURES[model_type])}, "
            f"got {arch!r}"
        )
    optimizer = hp.get("optimizer", "adam")
    if optimizer not in _OPTIMIZERS:
        raise UserError(
            f"hyperparameters.optimizer must be one of {', '.join(_OPTIMIZERS)}, got {optimizer!r}"
        )
    momentum = check_number(hp, "momentum", 0.9, 0.0, 1.0)
    if "momentum" in hp and optimizer != "sgd":
        raise UserError(
            f"hyperparameters.momentum applies only to optimizer 'sgd', got optimizer {optimizer!r}"
        )
    width = hp.get("classifier_width")
    return _Settings(
        epochs=check_number(hp, "epochs", 10, 1, 1000, integer=True),
        learning_rate=check_number(hp, "learning_rate", 1e-3, 1e-7, 10.0),
        batch_size=check_number(hp, "batch_size", 32, 1, 4096, integer=True),
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=check_number(hp, "weight_decay", 0.0, 0.0, 1.0),
        augment=bool(_flag(hp, "augment")),
        validation_split=check_number(hp, "validation_split", 0.2, 0.0, 0.5),
        seed=check_number(hp, "seed", 42, 0, 2**32 - 1, integer=True),
        architecture=arch,
        classifier_width=(
            None if width is None else check_number(hp, "classifier_width", 0, 16, 4096, True)
        ),
        global_pool=_flag(hp, "global_pool"),
        dropout=None if "dropout" not in hp else check_number(hp, "dropout", 0.5, 0.0, 0.9),
        image_size=hp.get("image_size"),
    )


def _spec_for(request: TrainRequest, s: _Settings, num_classes: int) -> NetSpec:
    """The network to train: from the hyperparameters, or the base model's when fine-tuning
    (then a conflicting architecture choice is an error, not silently ignored)."""
    model_type = request.model_type
    base = request.base_model
    if base is None:
        return NetSpec(
            model_type,
            s.architecture or DEFAULT_ARCHITECTURE[model_type],
            num_classes,
            s.classifier_width or VGG_WIDTH,
            bool(s.global_pool),
            0.5 if s.dropout is None else s.dropout,
        )
    if base.meta.model_type != model_type:
        raise UserError(
            f"base model {base.meta.model_id!r} is a {base.meta.model_type} model; "
            f"a {model_type} model can only be fine-tuned from a {model_type} model"
        )
    try:
        spec = NetSpec.from_details(model_type, base.meta.details)
    except ValueError as exc:
        raise UserError(f"base model {base.meta.model_id!r} cannot be rebuilt: {exc}") from None
    for name, wanted, has in (
        ("architecture", s.architecture, spec.architecture),
        ("classifier_width", s.classifier_width, spec.classifier_width),
        ("global_pool", s.global_pool, spec.global_pool),
    ):
        if wanted is not None and wanted != has:
            raise UserError(
                f"hyperparameters.{name} is {wanted!r} but base model "
                f"{base.meta.model_id!r} has {has!r}; leave it out when fine-tuning"
            )
    return spec if s.dropout is None else replace(spec, dropout=s.dropout)


# ---------------------------------------------------------------------------- data


def _split(labels: _Ints, fraction: float, seed: int) -> tuple[_Ints, _Ints]:
    """Stratified (train, validation) indices; no validation when a class is too small."""
    counts = np.bincount(labels)
    if fraction == 0 or counts.min() < _MIN_PER_CLASS_FOR_VALIDATION:
        return np.arange(len(labels)), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in range(len(counts)):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.extend(idx[: max(1, round(len(idx) * fraction))].tolist())
    val = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _to_tensor(images: _Floats, mean: list[float], std: list[float]) -> torch.Tensor:
    """NHWC float images in [0, 1] -> normalised NCHW tensor."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out: torch.Tensor = (x - m) / sd
    return out


def _channel_stats(images: _Floats) -> tuple[list[float], list[float]]:
    mean = images.mean(axis=(0, 1, 2), dtype=np.float64)
    std = images.std(axis=(0, 1, 2), dtype=np.float64)
    # A flat channel (e.g. greyscale saved as RGB with one constant channel) has std 0.
    return [float(v) for v in mean], [float(max(v, 1e-3)) for v in std]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop from a padded copy. Padding with zeros after
    normalisation pads with the data's mean colour."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen).lt(0.5)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD))
    dy = torch.randint(0, 2 * _PAD + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * _PAD + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch index ranges; a last batch of one sample joins the one before, because batch
    norm cannot train on one sample whose feature map is 1x1."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


@torch.no_grad()
def _probabilities(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    model.eval()
    parts = []
    for i in range(0, len(x), _EVAL_BATCH):
        with autocast(device):
            logits = model(x[i : i + _EVAL_BATCH].to(device))
        parts.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(parts)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    if len(x) == 0:
        return float("nan")
    return float((_probabilities(model, x, device).argmax(dim=-1) == y).float().mean())


def _held_out(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """``val_loss`` (cross-entropy) and ``val_accuracy`` on the held-out images, in
    evaluation mode: what the model would score now."""
    probs = _probabilities(model, x, device)
    picked = probs[torch.arange(len(y)), y].clamp_min(1e-7)
    return {
        "val_loss": float(-picked.log().mean()),
        "val_accuracy": float((probs.argmax(dim=-1) == y).float().mean()),
    }


# ---------------------------------------------------------------------------- train


def _image_size(s: _Settings, request: TrainRequest, folder: imagedata.ImageFolder) -> int:
    if s.image_size is not None:
        return imagedata.check_image_size(s.image_size, MIN_IMAGE_SIZE)
    if request.base_model is not None:
        size = request.base_model.meta.details.get("image_size")
        if isinstance(size, int) and not isinstance(size, bool):
            return size  # the size the base model learned its features at
    return imagedata.default_image_size(folder, minimum=MIN_IMAGE_SIZE)


def _initial_model(
    request: TrainRequest, spec: NetSpec, class_names: list[str], ctx: TrainContext
) -> tuple[nn.Module, NetSpec]:
    """A fresh network, or the base model's weights with its head replaced when its classes
    differ from the data's."""
    base = request.base_model
    if base is None:
        return build(spec), spec
    model = build(spec)
    model.load_state_dict(load_file(str(Path(base.model_dir) / MODEL_FILE)), strict=True)
    ctx.log(f"fine-tuning from base model {base.meta.model_id!r} ({spec.architecture})")
    if list(base.meta.label_names) != class_names:
        ctx.log(
            f"replacing the final layer: the base model has {spec.num_classes} classes "
            f"({', '.join(base.meta.label_names[:8])}), the data has {len(class_names)} "
            f"({', '.join(class_names[:8])})"
        )
        replace_head(model, spec, len(class_names))
        spec = replace(spec, num_classes=len(class_names))
    return model, spec


def _optimizer(model: nn.Module, s: _Settings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=s.learning_rate, momentum=s.momentum, weight_decay=s.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)


def train(request: TrainRequest, ctx: TrainContext) -> TrainResult:
    """Train an image classifier on the ImageFolder at ``request.data_file`` and save
    ``out_dir/model.safetensors``."""
    if request.model_type not in ARCHITECTURES:
        raise UserError(f"model_type {request.model_type!r} is not an image model here")
    s = _parse_hyperparameters(request.model_type, dict(request.hyperparameters))
    folder = imagedata.scan_image_folder(
        Path(request.data_file), request.hyperparameters.get("num_classes"), request.data_root
    )
    classes = folder.class_names
    spec = _spec_for(request, s, len(classes))
    size = _image_size(s, request, folder)
    images = imagedata.load_images(folder, size)
    labels = folder.labels
    tr, val = _split(labels, s.validation_split, s.seed)
    ctx.log(
        f"read {len(labels)} images of {len(classes)} classes at {size}x{size}; "
        f"{len(tr)} for training, {len(val)} held out"
        + ("" if len(val) or s.validation_split == 0 else " (a class has under 5 images)")
    )
    base_norm = request.base_model.meta.details.get("normalization") if request.base_model else None
    if isinstance(base_norm, dict):  # keep the input statistics the base model learned on
        mean, std = list(base_norm["mean"]), list(base_norm["std"])
    else:
        mean, std = _channel_stats(images[tr])
    x_all = _to_tensor(images, mean, std)
    del images
    y_all = torch.from_numpy(labels)
    x_tr, y_tr, x_val, y_val = x_all[tr], y_all[tr], x_all[val], y_all[val]
    del x_all

    device = prepare_torch(request.device, s.seed)
    model, spec = _initial_model(request, spec, classes, ctx)
    if s.batch_size == 1 and has_batchnorm(model):
        raise UserError(
            f"hyperparameters.batch_size must be at least 2 for {spec.architecture} "
            "(batch normalization needs two images per batch), got 1"
        )
    model.to(device)
    optimizer = _optimizer(model, s)
    bounds = _batch_bounds(len(x_tr), s.batch_size)
    shuffle_gen = torch.Generator().manual_seed(s.seed)
    augment_gen = torch.Generator().manual_seed(s.seed + 1)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x_tr), generator=shuffle_gen)
        for start, stop in bounds:
            idx = order[start:stop]
            xb = x_tr[idx]
            if s.augment:
                xb = _augment(xb, augment_gen)
            yield xb.to(device, non_blocking=True), y_tr[idx].to(device, non_blocking=True)

    history = train_epochs(
        model=model,
        optimizer=optimizer,
        batches=batches,
        forward=model,
        epochs=s.epochs,
        steps_per_epoch=len(bounds),
        device=device,
        ctx=ctx,
        validate=(lambda: _held_out(model, x_val, y_val, device)) if len(val) else None,
    )
    train_acc = _accuracy(model, x_tr, y_tr, device)
    metrics: dict[str, float] = {
        "train_accuracy": train_acc,
        "loss": history[-1].loss,
        "n_train": float(len(tr)),
        "n_validation": float(len(val)),
        **peak_gpu_memory(device),
    }
    if len(val):  # `accuracy` is held-out accuracy only: absent when nothing was held out
        held = _held_out(model, x_val, y_val, device)
        metrics.update(accuracy=held["val_accuracy"], val_loss=held["val_loss"])
        ctx.log(f"held-out accuracy {metrics['accuracy']:.4f} on {len(val)} images")
    else:
        ctx.log(f"training accuracy {train_acc:.4f} (no held-out images)")

    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / MODEL_FILE), metadata={"format": "pt"})
    details: dict[str, Any] = {
        **spec.details(),
        "image_size": size,
        "normalization": {"mean": mean, "std": std},
        "artifact": MODEL_FILE,
        "optimizer": s.optimizer,
        "augment": s.augment,
        "validation_split": s.validation_split if len(val) else 0.0,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }
    if request.base_model is not None:
        details["base_model_id"] = request.base_model.meta.model_id
    return TrainResult(metrics=metrics, label_names=list(classes), details=details)


# ----------------------------------------------------------------------- load/predict


def load(model_dir: Path, meta: ModelMeta) -> Any:
    """Rebuild the network from ``meta.details`` and load its safetensors weights."""
    device = child_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this inference process was given a GPU but CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise RuntimeError(f"unknown device {device!r}")
    model = build(NetSpec.from_details(meta.model_type, meta.details))
    model.load_state_dict(load_file(str(Path(model_dir) / MODEL_FILE)), strict=True)
    return model.to(torch.device(device)).eval()


def _reject_text(input_data: Any, model_type: str) -> None:
    """Prose sent to an image model gets a message saying what is expected, rather than
    imagedata's 'not in the data root' or 'not a readable base64 image'."""
    items = [input_data] if isinstance(input_data, str) else input_data
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, str):
            continue
        text = item.strip()
        if (
            not text
            or text.lower().startswith(("data:", "/", "./", "../"))
            or Path(text).suffix.lower() in imagedata.IMAGE_SUFFIXES
        ):
            continue  # a data URL or a path: imagedata says what is wrong with it
        if " " in text or not _BASE64_CHARS.fullmatch(text):
            where = "" if isinstance(input_data, str) else f"[{i}]"
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise UserError(
                f"input_data{where} looks like text ({shown!r}); a {model_type} model expects "
                "an image: a path inside the data root (e.g. /data/<folder>/<image>.png) or "
                "a base64-encoded image"
            )


def predict_many(
    model: Any, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
) -> list[dict[str, Any] | UserError]:
    """Every input's images in one batch (chunked at ``_EVAL_BATCH``); slot ``i`` is what
    :func:`predict` gives for ``inputs[i]`` (see :mod:`.base`)."""
    norm = meta.details["normalization"]
    device = next(model.parameters()).device

    def probabilities(images: _Floats) -> npt.NDArray[Any]:
        x = _to_tensor(images, list(norm["mean"]), list(norm["std"]))
        probs: npt.NDArray[Any] = _probabilities(model, x, device).numpy()
        return probs

    return imagedata.predict_images(
        inputs, dict(parameters or {}), list(meta.label_names), int(meta.details["image_size"]),
        child_data_root(), probabilities,
        check_input=lambda item: _reject_text(item, meta.model_type),
    )  # fmt: skip


def predict(
    model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict[str, Any]
) -> dict[str, Any]:
    """Classify one image (``{"prediction", "top_k"}``) or a list of them
    (``{"predictions": [{"label", "top_k"}, ...]}``)."""
    return predict_one(predict_many, model, meta, input_data, parameters)
