"""Image data for the image runtimes (PyTorch and TensorFlow alike): NumPy and Pillow only.

Training data is an ImageFolder layout, ``root/<class>/<image>``: one folder per class, the
folder name is the label. Inference inputs are an image path inside the data root, a base64
image (optionally a ``data:image/...;base64,`` URL), or a list of those (a batch).
Every problem is a :class:`UserError` that names the file or the input and the reason.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from trainyard.datapaths import DataPathError, resolve_data_path

from .base import UserError, answer_slots, parse_slots

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_SIZE",
    "ImageFolder",
    "check_image_size",
    "decode_inference_images",
    "default_image_size",
    "load_images",
    "predict_images",
    "scan_image_folder",
    "top_k_predictions",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_IMAGE_SIZE = 512  # image_size above this is refused: memory grows with its square
_DEFAULT_SIZE_CAP = 224  # the default image size follows the data, up to this
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    class_names: list[str]
    files: list[tuple[Path, int]]  # (image file, class index), in a stable order

    @property
    def labels(self) -> npt.NDArray[Any]:
        return np.asarray([label for _, label in self.files], dtype=np.int64)


def _inside(path: Path, boundary: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == boundary or boundary in real.parents


def scan_image_folder(
    root: Path, num_classes: Any = None, data_root: Path | None = None
) -> ImageFolder:
    """The classes and images under ``root``; checks the layout and ``num_classes``.

    ``root`` itself was resolved inside the data root, but a class folder or an image in
    it may be a symlink: one that leads out of ``data_root`` (``root`` when not given) is
    refused, so a job cannot read files outside the data root through it."""
    if not root.is_dir():
        raise UserError(
            f"data_path {root.name!r} is a file; image models need a folder laid out as "
            "<data_path>/<class name>/<image files>"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(
            f"data_path {root.name!r} has no class folders; expected "
            "<data_path>/<class name>/<image files>"
        )
    boundary = Path(os.path.realpath(data_root if data_root is not None else root))
    files: list[tuple[Path, int]] = []
    for index, folder in enumerate(class_dirs):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for path in (folder, *images):
            if not _inside(path, boundary):
                raise UserError(
                    f"{path.relative_to(root)} is a symlink to a place outside the data root"
                )
        if not images:
            raise UserError(
                f"class folder {folder.name!r} has no image files "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        files.extend((p, index) for p in images)
    names = [p.name for p in class_dirs]
    if len(names) < 2:
        raise UserError(
            f"data_path has only one class folder ({names[0]!r}); a classifier needs at least two"
        )
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise UserError(f"hyperparameters.num_classes must be an integer, got {num_classes!r}")
        if num_classes != len(names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(
                f"hyperparameters.num_classes is {num_classes} but data_path has "
                f"{len(names)} class folders ({shown})"
            )
    return ImageFolder(root=root, class_names=names, files=files)


def _open(source: Path | bytes, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that, then decodes
            # anyway: a small file claiming 10000x10000 pixels would allocate 300 MB.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UserError(f"{what} is too large to decode: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{what} is not a readable image ({type(exc).__name__})") from exc
    return image


def _to_array(image: Image.Image, size: int) -> npt.NDArray[Any]:
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def check_image_size(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"hyperparameters.image_size must be an integer, got {value!r}")
    if not minimum <= value <= MAX_IMAGE_SIZE:
        raise UserError(
            f"hyperparameters.image_size must be between {minimum} and {MAX_IMAGE_SIZE}, "
            f"got {value}"
        )
    return value


def default_image_size(folder: ImageFolder, minimum: int) -> int:
    """The data's own size (the first image's longer side), at least ``minimum`` (the
    architecture's smallest input) and at most 224."""
    first = folder.files[0][0]
    image = _open(first, f"image {first.relative_to(folder.root)}")
    longer: int = max(image.size)
    return max(minimum, min(_DEFAULT_SIZE_CAP, longer))


def load_images(folder: ImageFolder, size: int) -> npt.NDArray[Any]:
    """All images as float32 ``(N, size, size, 3)`` in [0, 1], in ``folder.files`` order."""
    out = np.empty((len(folder.files), size, size, 3), dtype=np.float32)
    for i, (path, _) in enumerate(folder.files):
        out[i] = _to_array(_open(path, f"image {path.relative_to(folder.root)}"), size)
    return out


def _decode_one(item: Any, index: str, data_root: Path | None, size: int) -> npt.NDArray[Any]:
    if not isinstance(item, str) or not item.strip():
        raise UserError(
            f"input_data{index} must be an image path or a base64-encoded image, "
            f"got {type(item).__name__}"
        )
    text = item.strip()
    looks_like_path = text.startswith(("/", "./")) or Path(text).suffix.lower() in IMAGE_SUFFIXES
    if _DATA_URL.match(text) or (not looks_like_path and _BASE64.match(text)):
        payload = _DATA_URL.sub("", text)
        try:
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise UserError(f"input_data{index} is not valid base64") from exc
        return _to_array(_open(raw, f"input_data{index} (base64)"), size)
    if data_root is None:
        raise UserError(f"input_data{index}: image paths are not accepted by this worker")
    try:
        path = resolve_data_path(data_root, text)
    except DataPathError as exc:
        # The resolver speaks of data_path (the training field); here it is an input.
        message = str(exc).replace("data_path", "image path")
        raise UserError(f"input_data{index}: {message}") from exc
    if not path.is_file():
        raise UserError(f"input_data{index}: no image file at {text!r}")
    return _to_array(_open(path, f"input_data{index} ({text})"), size)


def decode_inference_images(
    input_data: Any, size: int, data_root: Path | None
) -> tuple[npt.NDArray[Any], bool]:
    """The inputs as a ``(N, size, size, 3)`` batch, and whether a single input was sent."""
    single = isinstance(input_data, str)
    items = [input_data] if single else input_data
    if not isinstance(items, list) or not items:
        raise UserError("input_data must be an image (path or base64) or a non-empty list of them")
    arrays = [
        _decode_one(item, "" if single else f"[{i}]", data_root, size)
        for i, item in enumerate(items)
    ]
    return np.stack(arrays), single


def _check_params(
    parameters: dict[str, Any], n_classes: int, extra: tuple[str, ...]
) -> tuple[int, float]:
    allowed = ("top_k", "confidence_threshold", *extra)
    unknown = sorted(k for k in parameters if k not in allowed)
    if unknown:
        raise UserError(
            f"unknown prediction parameter(s): {', '.join(unknown)}; accepted: {', '.join(allowed)}"
        )
    top_k = parameters.get("top_k", min(5, n_classes))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"parameters.top_k must be a positive integer, got {top_k!r}")
    threshold = parameters.get("confidence_threshold", 0.0)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or not 0.0 <= threshold <= 1.0
    ):
        raise UserError(
            f"parameters.confidence_threshold must be a number from 0 to 1, got {threshold!r}"
        )
    return min(top_k, n_classes), float(threshold)


def top_k_predictions(
    probabilities: npt.NDArray[Any],
    label_names: list[str],
    parameters: dict[str, Any],
    single: bool,
    extra_params: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``top_k`` classes by score, keeping those at or above ``confidence_threshold``.

    One input: ``{"prediction": label | None, "top_k": [{"label", "score"}, ...]}``;
    a batch: ``{"predictions": [{"label", "top_k"}, ...]}``. ``prediction`` is None when
    no class reaches the threshold.
    """
    top_k, threshold = _check_params(parameters, len(label_names), extra_params)
    rows: list[dict[str, Any]] = []
    for probs in probabilities:
        order = np.argsort(-probs, kind="stable")[:top_k]
        ranked = [
            {"label": label_names[int(i)], "score": float(probs[int(i)])}
            for i in order
            if float(probs[int(i)]) >= threshold
        ]
        rows.append({"label": ranked[0]["label"] if ranked else None, "top_k": ranked})
    if single:
        return {"prediction": rows[0]["label"], "top_k": rows[0]["top_k"]}
    return {"predictions": rows}


def predict_images(
    inputs: list[Any],
    parameters: dict[str, Any],
    label_names: list[str],
    size: int,
    data_root: Path | None,
    probabilities: Callable[[npt.NDArray[Any]], npt.NDArray[Any]],
    *,
    extra_params: tuple[str, ...] = (),
    check_input: Callable[[Any], None] | None = None,
) -> list[dict[str, Any] | UserError]:
    """The image runtimes' ``predict_many`` (see :mod:`.base`): the parameters checked once
    (a bad one fails the call), each input checked (``check_input``) and decoded on its own
    (a bad one fails its own slot), then every image of every input (all resized to
    ``size``) stacked into one ``(N, size, size, 3)`` batch for one ``probabilities`` call,
    which chunks it as memory requires; slot ``i`` is :func:`top_k_predictions` of its
    own rows."""
    _check_params(parameters, len(label_names), extra_params)

    def decode(item: Any) -> tuple[list[npt.NDArray[Any]], bool]:
        if check_input is not None:
            check_input(item)
        images, single = decode_inference_images(item, size, data_root)
        return list(images), single

    slots, images = parse_slots(inputs, decode)
    if not images:  # every input was refused (or none was given): no model call
        return [slot for slot in slots if isinstance(slot, UserError)]
    probs = probabilities(np.stack(images))
    return answer_slots(
        slots,
        lambda slot: top_k_predictions(
            probs[slot.start : slot.stop], label_names, parameters, slot.single, extra_params
        ),
    )
