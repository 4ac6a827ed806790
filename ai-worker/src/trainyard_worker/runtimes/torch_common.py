"""What the PyTorch runtimes (text and vision) share: device, threads, seeds, mixed
precision, hyperparameter checks and one training loop that reports progress.

Works on torch 2.0 and 2.1 (the seed's runtimes) and newer.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .base import TrainContext, UserError
from .params import check_number
from .reporting import StepReporter

__all__ = [
    "EpochStats",
    "Validate",
    "autocast",
    "check_number",
    "peak_gpu_memory",
    "prepare_torch",
    "softmax",
    "train_epochs",
]


def prepare_torch(device: str, seed: int) -> torch.device:
    """The job's device, with threads and seeds set. A GPU job whose child cannot see a
    GPU is an infrastructure fault (RuntimeError, retried elsewhere), never a CPU run."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
        # Only settable once, before any parallel work; a second call aborts the process
        # on torch 2.0 (a C++ terminate, not a RuntimeError), so never repeat it.
        if torch.get_num_interop_threads() != 1:
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "this job was given a GPU (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) but CUDA is not available "
                "in the job's process"
            )
        torch.cuda.reset_peak_memory_stats()
        return torch.device("cuda")
    if device != "cpu":
        raise RuntimeError(f"unknown device {device!r}")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision (float16) on CUDA; full precision on CPU, where it would not help."""
    if device.type == "cuda":
        from torch.amp.autocast_mode import autocast as torch_autocast

        return torch_autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def peak_gpu_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def softmax(logits: torch.Tensor, temperature: float = 1.0) -> npt.NDArray[np.float32]:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    result: npt.NDArray[np.float32] = probs.detach().cpu().numpy()
    return result


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    accuracy: float


Validate = Callable[[], Mapping[str, float]]


def train_epochs(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[tuple[Any, torch.Tensor]]],
    forward: Callable[[Any], torch.Tensor],
    epochs: int,
    steps_per_epoch: int,
    device: torch.device,
    ctx: TrainContext,
    validate: Validate | None = None,
) -> list[EpochStats]:
    """Train for ``epochs``; ``batches(epoch)`` yields (inputs, targets) already on the
    device and ``forward(inputs)`` returns logits. Reports train events through
    :class:`.reporting.StepReporter` (its throttle decides which steps) and, after each
    epoch, ``validate()``'s held-out metrics (``val_*``) when given. A loss that becomes
    NaN or infinite fails the job as a user error (the learning rate is the usual cause)."""
    scaler = _grad_scaler(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    reporter = StepReporter(
        ctx,
        epochs=epochs,
        steps=steps_per_epoch,
        learning_rate=lambda: float(optimizer.param_groups[0]["lr"]),
    )
    history: list[EpochStats] = []
    reporter.begin()
    for epoch in range(epochs):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for step, (inputs, targets) in enumerate(batches(epoch), start=1):
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                logits = forward(inputs)
                loss = loss_fn(logits.float(), targets)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise UserError(
                    f"training diverged: the loss became {value} at epoch {epoch + 1} step "
                    f"{step}; lower hyperparameters.learning_rate"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = int(targets.shape[0])
            right = int((logits.detach().argmax(dim=-1) == targets).sum())
            total_loss += value * n
            correct += right
            seen += n
            reporter.step(epoch + 1, step, loss=value, samples=n, correct=right)
        stats = EpochStats(epoch + 1, total_loss / max(seen, 1), correct / max(seen, 1))
        history.append(stats)
        if validate is not None:
            reporter.validation(epoch + 1, validate(), epoch_loss=stats.loss)
    return history


def _grad_scaler(device: torch.device) -> Any:
    # torch.cuda.amp.GradScaler exists from 2.0 on (torch.amp.GradScaler only from 2.3).
    from torch.cuda.amp.grad_scaler import GradScaler

    return GradScaler(enabled=device.type == "cuda")  # type: ignore[no-untyped-call]
