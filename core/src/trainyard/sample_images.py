"""The image sample sets of ``trainyard.sample_data``: a minimal PNG encoder and the
ImageFolder writers.

Standard library only, like the rest of the core package: PNGs are encoded with ``zlib``
and ``struct`` (8-bit RGB, filter 0). Each image class has a learnable signature (a
dominant colour plus a geometric pattern) with per-image random offsets, sizes, colour
jitter and pixel noise; each writer is deterministic for a given ``seed``.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_CLASSES",
    "encode_png",
    "write_cifar10",
    "write_image_classification",
    "write_image_folder",
]

IMAGE_CLASSES: tuple[str, ...] = ("circles", "squares", "stripes", "checkers")
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


# -------------------------------------------------------------------------------- png


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """Encode ``rgb`` (``height`` rows of ``width`` RGB pixels, 8-bit) as a PNG."""
    stride = 3 * width
    if width <= 0 or height <= 0 or len(rgb) != stride * height:
        raise ValueError(f"expected {stride * height} bytes for {width}x{height}, got {len(rgb)}")
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------- image folders

# A pattern draws the foreground mask of one image: (size, rng) -> predicate on (x, y).
# Random offsets, sizes and phases come from ``rng`` so no two images are identical.
_Mask = Callable[[int, int], bool]


def _circle(s: int, rng: random.Random) -> _Mask:
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    r2 = (s * rng.uniform(0.22, 0.32)) ** 2
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 < r2


def _square(s: int, rng: random.Random) -> _Mask:
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    h = s * rng.uniform(0.18, 0.28)
    return lambda x, y: abs(x - cx) < h and abs(y - cy) < h


def _stripes(axis: int) -> Callable[[int, random.Random], _Mask]:
    def make(s: int, rng: random.Random) -> _Mask:
        period = max(2, round(s * rng.uniform(0.09, 0.14)))
        phase = rng.randrange(2 * period)
        if axis == 0:
            return lambda x, y: (y + phase) // period % 2 == 0
        if axis == 1:
            return lambda x, y: (x + phase) // period % 2 == 0
        return lambda x, y: (x + y + phase) // period % 2 == 0

    return make


def _checkers(s: int, rng: random.Random) -> _Mask:
    cell = max(2, round(s * rng.uniform(0.11, 0.16)))
    px, py = rng.randrange(cell), rng.randrange(cell)
    return lambda x, y: ((x + px) // cell + (y + py) // cell) % 2 == 0


def _ring(s: int, rng: random.Random) -> _Mask:
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    outer = s * rng.uniform(0.3, 0.38)
    lo, hi = (outer * 0.6) ** 2, outer**2
    return lambda x, y: lo < (x - cx) ** 2 + (y - cy) ** 2 < hi


def _cross(s: int, rng: random.Random) -> _Mask:
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    w = s * rng.uniform(0.07, 0.11)
    return lambda x, y: abs(x - cx) < w or abs(y - cy) < w


def _triangle(s: int, rng: random.Random) -> _Mask:
    cx = s * rng.uniform(0.4, 0.6)
    top, bottom = s * rng.uniform(0.1, 0.25), s * rng.uniform(0.75, 0.9)
    return lambda x, y: top < y < bottom and abs(x - cx) < (y - top) * 0.6


def _diamond(s: int, rng: random.Random) -> _Mask:
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    r = s * rng.uniform(0.25, 0.35)
    return lambda x, y: abs(x - cx) + abs(y - cy) < r


# Class i gets pattern i and colour i (so ``IMAGE_CLASSES`` get the pattern they name).
_PATTERNS: tuple[Callable[[int, random.Random], _Mask], ...] = (
    _circle,
    _square,
    _stripes(0),
    _checkers,
    _stripes(1),
    _stripes(2),
    _ring,
    _cross,
    _triangle,
    _diamond,
)
_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),  # red
    (40, 170, 60),  # green
    (40, 80, 220),  # blue
    (235, 200, 30),  # yellow
    (150, 60, 200),  # purple
    (30, 190, 200),  # cyan
    (240, 130, 20),  # orange
    (230, 80, 170),  # pink
    (160, 105, 50),  # brown
    (245, 245, 245),  # white
)
_VARIANTS = 16  # colour variants per image; each pixel picks one (cheap pixel noise)


def _jitter(rng: random.Random, colour: Sequence[float], sd: float) -> bytes:
    return bytes(max(0, min(255, round(c + rng.gauss(0, sd)))) for c in colour)


def _render(index: int, size: int, rng: random.Random) -> bytes:
    """RGB bytes of one image of class ``index``."""
    mask = _PATTERNS[index](size, rng)
    fg = [c + rng.gauss(0, 12) for c in _COLOURS[index]]
    grey = rng.uniform(25, 90)  # a dark, muted background of random tint
    bg = [grey + rng.gauss(0, 10) for _ in range(3)]
    fg_px = [_jitter(rng, fg, 14) for _ in range(_VARIANTS)]
    bg_px = [_jitter(rng, bg, 14) for _ in range(_VARIANTS)]
    noise = rng.randbytes(size * size)
    out = []
    for y in range(size):
        row = noise[y * size : (y + 1) * size]
        out.append(
            b"".join((fg_px if mask(x, y) else bg_px)[n % _VARIANTS] for x, n in enumerate(row))
        )
    return b"".join(out)


def write_image_folder(
    root: Path, classes: Sequence[str], per_class: int, size: int, seed: int
) -> Path:
    """Write an ImageFolder tree ``root/<class>/<n>.png`` (``n`` from 0) of RGB PNGs.

    Class ``i`` has colour ``i`` and pattern ``i`` from fixed tables (at most 10
    classes). The tree is built in a temporary sibling and renamed into place, so a
    reader never sees a half-written folder; if another process got there first, its
    (identical) folder is kept. Returns ``root``.
    """
    root = Path(root)
    if not 1 <= len(classes) <= len(_PATTERNS):
        raise ValueError(f"between 1 and {len(_PATTERNS)} classes, got {len(classes)}")
    if len(set(classes)) != len(classes) or any(
        not c or c in {".", ".."} or "/" in c or "\\" in c for c in classes
    ):
        raise ValueError(f"class names must be distinct folder names, got {list(classes)}")
    if per_class < 1 or size < 4:
        raise ValueError(f"per_class >= 1 and size >= 4 needed, got {per_class}, {size}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        rng = random.Random(seed)
        for index, name in enumerate(classes):
            folder = tmp / name
            folder.mkdir(parents=True)
            for n in range(per_class):
                png = encode_png(size, size, _render(index, size, rng))
                (folder / f"{n}.png").write_bytes(png)
        try:
            os.replace(tmp, root)  # works onto a missing or empty folder
        except OSError:
            if not (root.is_dir() and any(root.iterdir())):
                raise
            # Another process wrote it meanwhile: keep theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_image_classification(root: Path, seed: int = 21) -> Path:
    """The ResNet sample: 4 classes x 24 images, 64x64 (see ``IMAGE_CLASSES``)."""
    return write_image_folder(root, IMAGE_CLASSES, per_class=24, size=64, seed=seed)


def write_cifar10(root: Path, seed: int = 10) -> Path:
    """A CIFAR-10-shaped sample: the 10 CIFAR-10 class names x 20 images, 32x32 RGB."""
    return write_image_folder(root, CIFAR10_CLASSES, per_class=20, size=32, seed=seed)
