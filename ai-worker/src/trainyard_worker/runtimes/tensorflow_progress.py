"""What :mod:`.tensorflow_runtime` does around Keras's ``fit``: inference-mode
probabilities, precise BatchNorm statistics, and the callback that reports step-level
training metrics and, each epoch, validation metrics the model really has.

Keras's own ``val_accuracy`` is computed with the moving BN statistics, which after a few
hundred steps still hold most of their initial values: on the cifar10 sample MobileNet's
curve read 0.10 at every epoch while the saved (recalibrated) model scored 0.35. So the
callback recalibrates the statistics (:func:`recalibrate_batchnorm`, as the runtime does
after ``fit``) before it validates. The recalibration replaces only the moving statistics,
which training (batch statistics) never reads: the weights follow the same path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .base import TrainContext
from .reporting import StepReporter

__all__ = [
    "BACKBONE",
    "EAGER_MAX_CALLS",
    "INFERENCE_BATCH",
    "RECALIBRATION_IMAGES",
    "RESCALE",
    "KerasProgress",
    "cross_entropy",
    "probabilities",
    "recalibrate_batchnorm",
]

BACKBONE = "backbone"  # layer names the runtime looks up again
RESCALE = "rescale"
INFERENCE_BATCH = 32
RECALIBRATION_IMAGES = 512  # precise-BN statistics come from at most this many images
EAGER_MAX_CALLS = 20  # per-epoch passes making more eager batch calls than this are traced


def probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities in inference mode (moving BN statistics, no dropout)."""
    parts = [
        np.asarray(model(x[i : i + INFERENCE_BATCH], training=False), dtype=np.float32)
        for i in range(0, len(x), INFERENCE_BATCH)
    ]
    return np.concatenate(parts)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def recalibrate_batchnorm(
    model: Any, x: np.ndarray, seed: int, forward: Callable[[Any], Any] | None = None
) -> None:
    """Precise BN: set the moving statistics to the current weights' statistics over (at
    most RECALIBRATION_IMAGES of) the training images. Keras keeps exponential averages
    (momentum 0.99 in InceptionV3 and MobileNet v1, 0.999 in v2 and v3) that need hundreds
    of steps to forget their initial values: after the tests' 6-12 steps, inference without
    this scored chance (0.25). ``forward(chunk)`` runs the backbone in training mode (a
    traced one in graph-mode training); by default an eager call."""
    backbone = model.get_layer(BACKBONE)
    layers = [
        layer
        for layer in backbone.layers  # the applications are flat: no nested models
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return
    if len(x) > RECALIBRATION_IMAGES:
        pick = np.random.default_rng(seed).choice(len(x), RECALIBRATION_IMAGES, replace=False)
        x = x[np.sort(pick)]
    if forward is None:
        rescale = model.get_layer(RESCALE)

        def forward(chunk: Any) -> Any:
            return backbone(rescale(chunk), training=True)

    saved = [layer.momentum for layer in layers]
    sums = [(np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape))
            for layer in layers]  # fmt: skip
    try:
        # Momentum 0: each pass leaves its chunk's own statistics (a traced forward keeps
        # the 0 it was traced with); the mean over chunks, weighted by size, is kept here.
        for layer in layers:
            layer.momentum = 0.0
        for start in range(0, len(x), INFERENCE_BATCH):
            chunk = x[start : start + INFERENCE_BATCH]
            forward(chunk)
            w = len(chunk)
            sums = [
                (s_mean + w * np.asarray(layer.moving_mean, dtype=np.float64),
                 s_var + w * np.asarray(layer.moving_variance, dtype=np.float64))
                for (s_mean, s_var), layer in zip(sums, layers, strict=True)
            ]  # fmt: skip
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    for (s_mean, s_var), layer in zip(sums, layers, strict=True):
        layer.moving_mean.assign((s_mean / len(x)).astype(np.float32))
        layer.moving_variance.assign((s_var / len(x)).astype(np.float32))


class KerasProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Step-level train events through :class:`.reporting.StepReporter` and per-epoch
    validation events (after recalibrating BN); stops training on a NaN loss."""

    def __init__(
        self,
        ctx: TrainContext,
        *,
        epochs: int,
        steps: int,
        n_train: int,
        batch_size: int,
        recalibrate: tuple[np.ndarray, int] | None = None,  # (training images, seed)
        validation: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.reporter = StepReporter(ctx, epochs=epochs, steps=steps, learning_rate=self._lr)
        self.n_train, self.batch_size = n_train, batch_size
        self.recalibrate, self.validation = recalibrate, validation
        self.epoch = 0
        self.diverged: str | None = None
        self.epoch_losses: list[float] = []
        self._seen, self._loss_mean, self._acc_mean = 0, 0.0, 0.0
        self._forward: Callable[[Any], Any] | None = None

    def recalibrate_batchnorm(self) -> None:
        """:func:`recalibrate_batchnorm` on the training images, through a forward pass
        traced once where that is cheaper; each epoch's validation and the final model's
        statistics come from the same code, so the last epoch's numbers are the model's."""
        if self.recalibrate is None:
            return
        x, seed = self.recalibrate
        if self._forward is None and self._traced(min(len(x), RECALIBRATION_IMAGES)):
            backbone, rescale = self.model.get_layer(BACKBONE), self.model.get_layer(RESCALE)
            self._forward = tf.function(
                lambda chunk: backbone(rescale(chunk), training=True),
                input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)],
                jit_compile=False,
            )
        recalibrate_batchnorm(self.model, x, seed, self._forward)

    def _traced(self, images: int) -> bool:
        """Whether a pass over ``images`` once per epoch is cheaper traced: in graph-mode
        training, when it makes more than EAGER_MAX_CALLS eager batch calls in all (tracing
        MobileNetV2's forward costs ~4 s on one thread, an eager batch call ~0.2-0.4 s)."""
        calls = self.reporter.epochs * math.ceil(images / INFERENCE_BATCH)
        return not self.model.run_eagerly and calls > EAGER_MAX_CALLS

    def _lr(self) -> float:
        return float(np.asarray(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.reporter.begin()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1
        self._seen, self._loss_mean, self._acc_mean = 0, 0.0, 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        loss = float(logs.get("loss", math.nan))  # the epoch's running mean over samples
        step = batch + 1
        if not math.isfinite(loss):
            self.diverged = f"the loss became {loss} at epoch {self.epoch} step {step}"
            self.model.stop_training = True
            return
        # Keras gives running means weighted by samples: this batch's own numbers follow.
        seen = min(step * self.batch_size, self.n_train)
        n = max(1, seen - self._seen)
        acc = float(logs.get("accuracy", math.nan))
        batch_loss = (loss * seen - self._loss_mean * self._seen) / n
        correct = acc * seen - self._acc_mean * self._seen if math.isfinite(acc) else None
        self._seen, self._loss_mean, self._acc_mean = seen, loss, acc
        self.reporter.step(self.epoch, step, loss=batch_loss, samples=n, correct=correct)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.diverged:
            return
        loss = float((logs or {})["loss"])
        self.epoch_losses.append(loss)
        if self.validation is None:
            return
        self.recalibrate_batchnorm()
        x, y = self.validation
        if self._traced(len(x)):  # Keras's predict loop, traced once
            probs = np.asarray(
                self.model.predict(x, batch_size=INFERENCE_BATCH, verbose=0), dtype=np.float32
            )
        else:
            probs = probabilities(self.model, x)
        metrics = {
            "val_loss": cross_entropy(probs, y),
            "val_accuracy": float(np.mean(probs.argmax(axis=1) == y)),
        }
        self.reporter.validation(epoch + 1, metrics, epoch_loss=loss)
