"""TensorFlow runtime: ``inception`` (InceptionV3) and ``mobilenet`` (MobileNet v1, v2 or v3)
image classifiers on an ImageFolder tree, built with Keras 3 from the architecture alone
(``weights=None``: nothing is downloaded).

Implements the contract in :mod:`.base`. The saved ``model.keras`` is self-contained: it
takes RGB in [0, 1] (what :mod:`.imagedata` yields) and rescales it itself to the [-1, 1]
these architectures expect. It loads with ``safe_mode=True``, which refuses files that
would run code (Lambda layers).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

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
from .params import check_number
from .tensorflow_progress import BACKBONE, RESCALE, KerasProgress
from .tensorflow_progress import cross_entropy as _cross_entropy
from .tensorflow_progress import probabilities as _probabilities

__all__ = [
    "ARCHITECTURES",
    "HYPERPARAMETERS",
    "MIN_IMAGE_SIZE",
    "MODEL_FILE",
    "MODEL_TYPES",
    "load",
    "predict",
    "predict_many",
    "train",
]

MODEL_FILE = "model.keras"
MODEL_TYPES = ("inception", "mobilenet")
# model_type -> accepted `architecture` values, the default first
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "inception": ("inception_v3",),
    "mobilenet": ("mobilenet_v2", "mobilenet", "mobilenet_v3_small", "mobilenet_v3_large"),
}
# Smallest input side each Keras application accepts; smaller data is resized up to it.
MIN_IMAGE_SIZE: dict[str, int] = {
    "inception_v3": 75,
    **dict.fromkeys(ARCHITECTURES["mobilenet"], 32),
}
HYPERPARAMETERS = (
    "architecture",
    "augment",
    "batch_size",
    "dropout_rate",
    "epochs",
    "image_size",
    "learning_rate",
    "num_classes",
    "optimizer",
    "run_eagerly",
    "seed",
    "validation_split",
)
OPTIMIZERS = ("adam", "sgd", "rmsprop")
_MIN_VALIDATION_PER_CLASS = 5  # a class with fewer images keeps them all for training
_BACKBONE, _RESCALE = BACKBONE, RESCALE  # layer names the runtime looks up again
_DROPOUT = "dropout"

# run_eagerly "auto" trains eagerly when epochs x steps_per_epoch is at most this. Graph
# mode first spends CPU seconds tracing and optimising the train step; after that each step
# is cheaper than an eager one (Keras dispatches a few thousand ops from Python per eager
# step). Measured with one thread (OMP_NUM_THREADS=1), batch 32, CPU seconds (this box is
# shared, so wall times ran up to 2x these), tracing / graph step / eager step:
#   inception_v3 75 px      24.6 / 0.55 / 1.35  -> break-even ~31 steps
#   inception_v3 150 px     28.8 / 2.4  / 3.8   -> ~20
#   mobilenet_v2 32 px      17.2 / 0.09 / 0.65  -> ~31
#   mobilenet_v2 96 px      20.5 / 0.45 / 1.3   -> ~24
#   mobilenet (v1) 32 px     8.9 / 0.08 / 0.49  -> ~22
#   mobilenet_v3_small 32   16.9 / 0.05 / 0.58  -> ~32
#   mobilenet_v3_large 32   19.5 / 0.10 / 0.78  -> ~29
# The gap grows with the image size, so the limits sit at the larger sizes' break-even;
# near it both modes cost about the same anyway. (Validation runs outside fit, in
# inference mode, the same in both.)
_EAGER_MAX_STEPS: dict[str, int] = {**dict.fromkeys(MIN_IMAGE_SIZE, 20), "mobilenet": 15}


def _pick_eager(choice: bool | None, architecture: str, total_steps: int) -> bool:
    """``run_eagerly``: the user's choice, or for "auto" (None) eager on short trainings."""
    if choice is not None:
        return choice
    return total_steps <= _EAGER_MAX_STEPS[architecture]


def _configure_threads() -> None:
    """Intra-op threads from OMP_NUM_THREADS and one inter-op thread: the worker box is
    small and shared. TF fixes both when it runs its first op, so this runs at import."""
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        if threads.isdigit() and int(threads) > 0:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already ran: the settings made then stay
        pass


_configure_threads()


def _use_gpu(device: str) -> bool:
    """True on a GPU job. A GPU job whose process sees no GPU is an infrastructure fault
    (RuntimeError, retried elsewhere), never a silent CPU run."""
    if device == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise RuntimeError(
                "this job was given a GPU (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) but TensorFlow sees none "
                "(a CPU-only TensorFlow build, or no CUDA in this process)"
            )
        return True
    if device != "cpu":
        raise RuntimeError(f"unknown device {device!r}")
    return False


# ---------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class _Config:
    architecture: str
    epochs: int
    learning_rate: float
    batch_size: int
    dropout_rate: float
    optimizer: str
    augment: bool
    validation_split: float
    seed: int
    run_eagerly: bool | None  # None: "auto"


def _choice(hp: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = hp.get(name, choices[0])
    if value not in choices:
        raise UserError(
            f"hyperparameters.{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return str(value)


def _parse_config(model_type: str, hp: dict[str, Any]) -> _Config:
    unknown = sorted(k for k in hp if k not in HYPERPARAMETERS)
    if unknown:
        raise UserError(
            f"unknown hyperparameter(s) for {model_type}: {', '.join(unknown)}; "
            f"accepted: {', '.join(HYPERPARAMETERS)}"
        )
    augment = hp.get("augment", False)
    if not isinstance(augment, bool):
        raise UserError(f"hyperparameters.augment must be true or false, got {augment!r}")
    run_eagerly = hp.get("run_eagerly", "auto")
    if not isinstance(run_eagerly, bool) and run_eagerly != "auto":
        raise UserError(
            f'hyperparameters.run_eagerly must be true, false or "auto", got {run_eagerly!r}'
        )
    return _Config(
        architecture=_choice(hp, "architecture", ARCHITECTURES[model_type]),
        epochs=check_number(hp, "epochs", 10, 1, 1000, integer=True),
        learning_rate=check_number(hp, "learning_rate", 1e-3, 1e-7, 10),
        batch_size=check_number(hp, "batch_size", 32, 1, 4096, integer=True),
        dropout_rate=check_number(hp, "dropout_rate", 0.2, 0, 0.95),
        optimizer=_choice(hp, "optimizer", OPTIMIZERS),
        augment=augment,
        validation_split=check_number(hp, "validation_split", 0.2, 0, 0.5),
        seed=check_number(hp, "seed", 42, 0, 2**31 - 1, integer=True),
        run_eagerly=None if run_eagerly == "auto" else bool(run_eagerly),
    )


def _image_size(hp: dict[str, Any], folder: imagedata.ImageFolder, architecture: str) -> int:
    minimum = MIN_IMAGE_SIZE[architecture]
    if "image_size" not in hp:
        return imagedata.default_image_size(folder, minimum=minimum)
    try:
        return imagedata.check_image_size(hp["image_size"], minimum)
    except UserError as exc:
        raise UserError(f"{exc} ({architecture} needs images of at least {minimum} px)") from None


def _split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Stratified (train, validation) indices, and a note on what was done."""
    every = np.arange(len(labels))
    if fraction == 0:
        return every, every[:0], "no validation split (validation_split is 0)"
    counts = np.bincount(labels)
    if counts.min() < _MIN_VALIDATION_PER_CLASS:
        why = f"a class has only {counts.min()} images ({_MIN_VALIDATION_PER_CLASS} needed)"
        return every, every[:0], f"no validation split: {why}"
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in range(len(counts)):
        members = rng.permutation(np.flatnonzero(labels == cls))
        held.append(members[: max(1, round(len(members) * fraction))])
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(every, val), val, f"{len(val)} images held out for validation"


# ---------------------------------------------------------------- model


def _backbone(architecture: str, size: int) -> Any:
    common: dict[str, Any] = {
        "include_top": False,
        "weights": None,
        "input_shape": (size, size, 3),
        "pooling": "avg",
        "name": _BACKBONE,
    }
    apps = keras.applications
    if architecture == "inception_v3":
        return apps.InceptionV3(**common)
    if architecture == "mobilenet":
        return apps.MobileNet(**common)
    if architecture == "mobilenet_v2":
        return apps.MobileNetV2(**common)
    # v3's built-in preprocessing expects [0, 255]; ours hands every backbone [-1, 1].
    if architecture == "mobilenet_v3_small":
        return apps.MobileNetV3Small(**common, include_preprocessing=False)
    return apps.MobileNetV3Large(**common, include_preprocessing=False)


def _build_model(cfg: _Config, size: int, n_classes: int, mixed: bool) -> Any:
    """[0, 1] RGB -> (augmentation) -> [-1, 1] -> backbone -> Dropout -> softmax Dense."""
    previous = keras.config.dtype_policy()
    if mixed:  # float16 compute on the GPU; the layers keep the policy they were built with
        keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input(shape=(size, size, 3), name="image")
        x = inputs
        if cfg.augment:  # active only in training
            x = keras.layers.RandomFlip("horizontal", seed=cfg.seed, name="augment_flip")(x)
            x = keras.layers.RandomTranslation(
                0.1, 0.1, fill_mode="reflect", seed=cfg.seed + 1, name="augment_translate"
            )(x)
        x = keras.layers.Rescaling(2.0, offset=-1.0, name=_RESCALE)(x)
        x = _backbone(cfg.architecture, size)(x)
        x = keras.layers.Dropout(cfg.dropout_rate, seed=cfg.seed, name=_DROPOUT)(x)
        # float32 softmax: float16 probabilities would round small ones to 0.
        outputs = keras.layers.Dense(
            n_classes, activation="softmax", dtype="float32", name="classifier"
        )(x)
        return keras.Model(inputs, outputs, name=f"{cfg.architecture}_classifier")
    finally:
        keras.config.set_dtype_policy(previous)


def _optimizer(name: str, learning_rate: float) -> Any:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Adam(learning_rate)


# ---------------------------------------------------------------- train


def _fine_tune_config(cfg: _Config, hp: dict[str, Any], meta: ModelMeta) -> tuple[_Config, int]:
    """Architecture and image size come from the base model; asking for others is an error."""
    arch, size = str(meta.details.get("architecture")), int(meta.details.get("image_size", 0))
    if arch not in MIN_IMAGE_SIZE or size <= 0:
        raise RuntimeError(f"base model {meta.model_id} has no architecture/image_size details")
    for name, own in (("architecture", arch), ("image_size", size)):
        if name in hp and hp[name] != own:
            raise UserError(
                f"hyperparameters.{name} is {hp[name]!r} but base model {meta.model_id} has "
                f"{own!r}; leave it out when fine-tuning"
            )
    return replace(cfg, architecture=arch), size


def train(request: TrainRequest, ctx: TrainContext) -> TrainResult:
    """Train ``request.model_type`` on the ImageFolder at ``request.data_file`` and save
    ``out_dir/model.keras``."""
    if request.model_type not in MODEL_TYPES:
        raise UserError(
            f"unknown model_type {request.model_type!r}; valid: {', '.join(MODEL_TYPES)}"
        )
    _configure_threads()
    hp = dict(request.hyperparameters)
    cfg = _parse_config(request.model_type, hp)
    mixed = _use_gpu(request.device)
    keras.utils.set_random_seed(cfg.seed)

    folder = imagedata.scan_image_folder(
        Path(request.data_file), hp.get("num_classes"), request.data_root
    )
    base = request.base_model
    if base is not None:
        cfg, size = _fine_tune_config(cfg, hp, base.meta)
    else:
        size = _image_size(hp, folder, cfg.architecture)
    images = imagedata.load_images(folder, size)
    labels = folder.labels
    train_idx, val_idx, note = _split(labels, cfg.validation_split, cfg.seed)
    x_train, y_train = images[train_idx], labels[train_idx]
    steps = math.ceil(len(train_idx) / cfg.batch_size)
    eager = _pick_eager(cfg.run_eagerly, cfg.architecture, cfg.epochs * steps)
    ctx.log(
        f"{len(labels)} images in {len(folder.class_names)} classes at {size}x{size}; {note}; "
        f"{cfg.architecture}, {cfg.epochs} epochs x {steps} steps, "
        f"{'eager' if eager else 'graph'} mode{', mixed float16' if mixed else ''}"
    )

    model = _build_model(cfg, size, len(folder.class_names), mixed)
    if base is not None:
        previous = _load_file(Path(base.model_dir))
        model.get_layer(_BACKBONE).set_weights(previous.get_layer(_BACKBONE).get_weights())
        same_labels = list(base.meta.label_names) == folder.class_names
        if same_labels:
            model.get_layer("classifier").set_weights(
                previous.get_layer("classifier").get_weights()
            )
        ctx.log(
            f"fine-tuning from model {base.meta.model_id} "
            f"({'same classes' if same_labels else 'new classifier for new classes'})"
        )
    model.compile(
        optimizer=_optimizer(cfg.optimizer, cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        run_eagerly=eager,
        jit_compile=False,  # XLA compiling costs more than it saves at these sizes
    )
    validation = (images[val_idx], labels[val_idx]) if len(val_idx) else None
    progress = KerasProgress(
        ctx, epochs=cfg.epochs, steps=steps, n_train=len(train_idx), batch_size=cfg.batch_size,
        recalibrate=(x_train, cfg.seed), validation=validation,
    )  # fmt: skip
    # No validation_data: Keras would validate with stale BN statistics (see
    # .tensorflow_progress); the callback validates after recalibrating them.
    model.fit(
        x_train,
        y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[progress],
    )
    if progress.diverged:
        raise UserError(
            f"training diverged: {progress.diverged}; lower hyperparameters.learning_rate "
            f"(now {cfg.learning_rate:g})"
        )

    progress.recalibrate_batchnorm()  # as before each epoch's validation
    train_probs = _probabilities(model, x_train)
    train_loss = _cross_entropy(train_probs, y_train)
    metrics: dict[str, float] = {
        "train_accuracy": float(np.mean(train_probs.argmax(axis=1) == y_train)),
        "train_loss": train_loss,
        "loss": train_loss,  # the training loss, as in the PyTorch runtimes
        "n_train": float(len(train_idx)),
        "n_val": float(len(val_idx)),
        "epochs_run": float(len(progress.epoch_losses)),
    }
    if validation is not None:  # `accuracy` is held-out accuracy only
        val_probs = _probabilities(model, validation[0])
        metrics["accuracy"] = float(np.mean(val_probs.argmax(axis=1) == validation[1]))
        metrics["val_loss"] = _cross_entropy(val_probs, validation[1])
        ctx.log(
            f"held-out accuracy {metrics['accuracy']:.4f}, "
            f"training accuracy {metrics['train_accuracy']:.4f}"
        )
    else:
        ctx.log(f"training accuracy {metrics['train_accuracy']:.4f} (no validation images)")

    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / MODEL_FILE)
    details: dict[str, Any] = {
        "architecture": cfg.architecture,
        "image_size": size,
        "input": "RGB scaled to [0, 1]; the model rescales it to [-1, 1] itself",
        "artifact": MODEL_FILE,
        "dropout_rate": cfg.dropout_rate,
        "augment": cfg.augment,
        "optimizer": cfg.optimizer,
        "run_eagerly": eager,
        "mixed_precision": mixed,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    return TrainResult(metrics=metrics, label_names=list(folder.class_names), details=details)


# ---------------------------------------------------------------- load / predict


def _load_file(model_dir: Path) -> Any:
    # safe_mode refuses code embedded in the file (Lambda layers): a crash, not a user error.
    return keras.models.load_model(model_dir / MODEL_FILE, compile=False, safe_mode=True)


def load(model_dir: Path, meta: ModelMeta) -> Any:
    """Load ``model_dir/model.keras`` for inference on this process's device."""
    _configure_threads()
    _use_gpu(child_device())
    return _load_file(Path(model_dir))


def predict_many(
    model: Any, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
) -> list[dict[str, Any] | UserError]:
    """Every input's images in one batch (chunked at 32); slot ``i`` is
    what :func:`predict` gives for ``inputs[i]`` (see :mod:`.base`)."""
    return imagedata.predict_images(
        inputs, dict(parameters or {}), list(meta.label_names), int(meta.details["image_size"]),
        child_data_root(), lambda x: _probabilities(model, x),
    )  # fmt: skip


def predict(
    model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict[str, Any]
) -> dict[str, Any]:
    """Classify one image (``{"prediction", "top_k"}``) or a list of images
    (``{"predictions": [{"label", "top_k"}, ...]}``); ``prediction`` is None when no class
    reaches ``confidence_threshold``."""
    return predict_one(predict_many, model, meta, input_data, parameters)
