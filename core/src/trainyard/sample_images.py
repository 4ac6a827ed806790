"""The image sample sets of ``trainyard.sample_data``: a minimal PNG encoder and the
ImageFolder writers.

Standard library only, like the rest of the core package: PNGs are encoded with ``zlib``
and ``struct`` (8-bit RGB, filter 0). Each image class has a learnable signature that
combines three factors, each with 10 values: a geometric pattern, the pattern's colour
and the background tint. Class ``i`` (0..999) gets pattern ``i % 10``, colour
``(i % 10 + i // 10) % 10`` and tint ``i // 100``, so the first 10 classes keep one
colour and one pattern each on a grey background (the CIFAR-10-shaped set) and all 1000
signatures differ. Per-image random offsets, sizes, phases, colour jitter and pixel noise
keep any two images apart; each writer is deterministic for a given ``seed``.
"""

from __future__ import annotations

import functools
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
    "IMAGE_PER_CLASS",
    "IMAGE_SIZE",
    "MAX_IMAGE_CLASSES",
    "encode_png",
    "image_class_names",
    "write_cifar10",
    "write_image_classification",
    "write_image_folder",
]

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

# A pattern draws the foreground mask of one image: (size, rng) -> a function from row
# ``y`` to that row's mask, one byte per pixel (1 inside the pattern). Random offsets,
# sizes and phases come from ``rng`` so no two images are identical. Rows are built from
# per-image column tables instead of a Python call per pixel (the generator's old
# bottleneck); each comment gives the per-pixel rule, evaluated with the same float
# operations in the same order, so the pixels are exactly those of that rule.
_Rows = Callable[[int], bytes]


def _circle(s: int, rng: random.Random) -> _Rows:
    # (x - cx) ** 2 + (y - cy) ** 2 < r2
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    r2 = (s * rng.uniform(0.22, 0.32)) ** 2
    dx2 = [(x - cx) ** 2 for x in range(s)]

    def row(y: int) -> bytes:
        dy2 = (y - cy) ** 2
        return bytes([d + dy2 < r2 for d in dx2])

    return row


def _square(s: int, rng: random.Random) -> _Rows:
    # abs(x - cx) < h and abs(y - cy) < h
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    h = s * rng.uniform(0.18, 0.28)
    columns, empty = bytes([abs(x - cx) < h for x in range(s)]), bytes(s)
    return lambda y: columns if abs(y - cy) < h else empty


def _stripes(axis: int) -> Callable[[int, random.Random], _Rows]:
    def make(s: int, rng: random.Random) -> _Rows:
        # (v + phase) // period % 2 == 0 with v = y, x or x + y (by axis)
        period = max(2, round(s * rng.uniform(0.09, 0.14)))
        phase = rng.randrange(2 * period)
        on = bytes([(v + phase) // period % 2 == 0 for v in range(2 * s)])
        if axis == 0:
            full, empty = b"\x01" * s, bytes(s)
            return lambda y: full if on[y] else empty
        if axis == 1:
            columns = on[:s]
            return lambda y: columns
        return lambda y: on[y : y + s]

    return make


def _checkers(s: int, rng: random.Random) -> _Rows:
    # ((x + px) // cell + (y + py) // cell) % 2 == 0
    cell = max(2, round(s * rng.uniform(0.11, 0.16)))
    px, py = rng.randrange(cell), rng.randrange(cell)
    even = bytes([(x + px) // cell % 2 == 0 for x in range(s)])
    odd = bytes([(x + px) // cell % 2 == 1 for x in range(s)])
    return lambda y: even if (y + py) // cell % 2 == 0 else odd


def _ring(s: int, rng: random.Random) -> _Rows:
    # lo < (x - cx) ** 2 + (y - cy) ** 2 < hi
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    outer = s * rng.uniform(0.3, 0.38)
    lo, hi = (outer * 0.6) ** 2, outer**2
    dx2 = [(x - cx) ** 2 for x in range(s)]

    def row(y: int) -> bytes:
        dy2 = (y - cy) ** 2
        return bytes([lo < d + dy2 < hi for d in dx2])

    return row


def _cross(s: int, rng: random.Random) -> _Rows:
    # abs(x - cx) < w or abs(y - cy) < w
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
    w = s * rng.uniform(0.07, 0.11)
    columns, full = bytes([abs(x - cx) < w for x in range(s)]), b"\x01" * s
    return lambda y: full if abs(y - cy) < w else columns


def _triangle(s: int, rng: random.Random) -> _Rows:
    # top < y < bottom and abs(x - cx) < (y - top) * 0.6
    cx = s * rng.uniform(0.4, 0.6)
    top, bottom = s * rng.uniform(0.1, 0.25), s * rng.uniform(0.75, 0.9)
    adx, empty = [abs(x - cx) for x in range(s)], bytes(s)

    def row(y: int) -> bytes:
        if not top < y < bottom:
            return empty
        limit = (y - top) * 0.6
        return bytes([a < limit for a in adx])

    return row


def _diamond(s: int, rng: random.Random) -> _Rows:
    # abs(x - cx) + abs(y - cy) < r
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    r = s * rng.uniform(0.25, 0.35)
    adx = [abs(x - cx) for x in range(s)]

    def row(y: int) -> bytes:
        ady = abs(y - cy)
        return bytes([a + ady < r for a in adx])

    return row


# The three factors of a class signature, 10 values each (see ``_signature``). Index 0..9
# of ``_PATTERNS`` and ``_COLOURS`` is what classes 0..9 have always looked like.
_PATTERNS: tuple[Callable[[int, random.Random], _Rows], ...] = (
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
_PATTERN_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "hstripes",
    "checkers",
    "vstripes",
    "dstripes",
    "ring",
    "cross",
    "triangle",
    "diamond",
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
_COLOUR_NAMES: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "cyan",
    "orange",
    "pink",
    "brown",
    "white",
)
# Background tints: 0 is the original random dark grey; 1..9 are dark, saturated hues 40
# degrees apart, darker than every pattern colour so the pattern keeps its contrast.
_TINTS: tuple[tuple[int, int, int] | None, ...] = (
    None,  # grey
    (120, 10, 10),  # maroon
    (120, 83, 10),  # ochre
    (83, 120, 10),  # olive
    (10, 120, 10),  # forest
    (10, 120, 83),  # jade
    (10, 83, 120),  # teal
    (10, 10, 120),  # navy
    (83, 10, 120),  # violet
    (120, 10, 83),  # plum
)
_TINT_NAMES: tuple[str, ...] = (
    "grey",
    "maroon",
    "ochre",
    "olive",
    "forest",
    "jade",
    "teal",
    "navy",
    "violet",
    "plum",
)
MAX_IMAGE_CLASSES = len(_PATTERNS) * len(_COLOURS) * len(_TINTS)  # 1000
_VARIANTS = 16  # colour variants per image; each pixel picks one (cheap pixel noise)


def _signature(index: int) -> tuple[int, int, int]:
    """(pattern, colour, tint) of class ``index``; a bijection of 0..999 onto 10x10x10.

    The colour is shifted by the pattern so classes 0..9 keep colour ``i`` (their
    original look) while each block of 100 still holds every (pattern, colour) pair.
    """
    if not 0 <= index < MAX_IMAGE_CLASSES:
        raise ValueError(f"class index must be in 0..{MAX_IMAGE_CLASSES - 1}, got {index}")
    pattern = index % 10
    return pattern, (pattern + index // 10) % 10, index // 100


def image_class_names(count: int = MAX_IMAGE_CLASSES) -> tuple[str, ...]:
    """Readable folder names of classes ``0..count-1``, e.g. ``c123_cyan_checkers_on_maroon``.

    The zero-padded index prefix makes sorted order (how ImageFolder readers number the
    classes) equal to the class index order.
    """
    if not 1 <= count <= MAX_IMAGE_CLASSES:
        raise ValueError(f"count must be in 1..{MAX_IMAGE_CLASSES}, got {count}")
    names = []
    for i in range(count):
        pattern, colour, tint = _signature(i)
        names.append(
            f"c{i:03d}_{_COLOUR_NAMES[colour]}_{_PATTERN_NAMES[pattern]}_on_{_TINT_NAMES[tint]}"
        )
    return tuple(names)


IMAGE_CLASSES: tuple[str, ...] = image_class_names()  # the image_classification sample
IMAGE_PER_CLASS = 5
IMAGE_SIZE = 32


def _variants(rng: random.Random, colour: Sequence[float], sd: float) -> bytes:
    """``_VARIANTS`` jittered copies of ``colour`` as flat RGB bytes."""
    gauss = rng.gauss  # draws in variant-major, channel-minor order (fixed: seeds rely on it)
    values = [round(c + gauss(0, sd)) for _ in range(_VARIANTS) for c in colour]
    return bytes([0 if v < 0 else 255 if v > 255 else v for v in values])


def _background(tint: int, rng: random.Random) -> list[float]:
    base = _TINTS[tint]
    if base is None:
        grey = rng.uniform(25, 90)  # a dark, muted background of random tint
        return [grey + rng.gauss(0, 10) for _ in range(3)]
    scale = rng.uniform(0.85, 1.05)  # the hue stays, the brightness varies
    return [c * scale + rng.gauss(0, 5) for c in base]


@functools.lru_cache(maxsize=8)
def _low4(size: int) -> int:
    """The low 4 bits of each of ``size * size`` bytes, as one big-endian integer."""
    return int.from_bytes(b"\x0f" * (size * size), "big")


def _render(index: int, size: int, rng: random.Random) -> bytes:
    """RGB bytes of one image of class ``index``."""
    pattern, colour, tint = _signature(index)
    rows = _PATTERNS[pattern](size, rng)
    fg = [c + rng.gauss(0, 12) for c in _COLOURS[colour]]
    bg = _background(tint, rng)
    fg_px = _variants(rng, fg, 14)
    bg_px = _variants(rng, bg, 14)
    noise = rng.randbytes(size * size)
    # Per pixel: variant index = noise % 16, plus 16 inside the pattern. The bit
    # operations run on whole-image integers and the palette lookup is bytes.translate,
    # so no Python function is called per pixel.
    inside = int.from_bytes(b"".join(map(rows, range(size))), "big")
    noisy = int.from_bytes(noise, "big") & _low4(size)
    chosen = (noisy | (inside << 4)).to_bytes(size * size, "big")
    out = bytearray(3 * size * size)
    for channel in range(3):
        palette = bg_px[channel::3] + fg_px[channel::3]
        out[channel::3] = chosen.translate(palette.ljust(256, b"\x00"))
    return bytes(out)


def write_image_folder(
    root: Path, classes: Sequence[str], per_class: int, size: int, seed: int
) -> Path:
    """Write an ImageFolder tree ``root/<class>/<n>.png`` (``n`` from 0) of RGB PNGs.

    Class ``i`` gets signature ``i`` (pattern, colour and background tint, see the
    module docstring; at most ``MAX_IMAGE_CLASSES`` classes). The tree is built in a
    temporary sibling and renamed into place, so a reader never sees a half-written
    folder; if another process got there first, its (identical) folder is kept.
    Returns ``root``.
    """
    root = Path(root)
    if not 1 <= len(classes) <= MAX_IMAGE_CLASSES:
        raise ValueError(f"between 1 and {MAX_IMAGE_CLASSES} classes, got {len(classes)}")
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
    """The ResNet sample, ImageNet-shaped: 1000 classes (``IMAGE_CLASSES``) x
    ``IMAGE_PER_CLASS`` images, 32x32 RGB."""
    return write_image_folder(
        root, IMAGE_CLASSES, per_class=IMAGE_PER_CLASS, size=IMAGE_SIZE, seed=seed
    )


def write_cifar10(root: Path, seed: int = 10) -> Path:
    """A CIFAR-10-shaped sample: the 10 CIFAR-10 class names x 20 images, 32x32 RGB."""
    return write_image_folder(root, CIFAR10_CLASSES, per_class=20, size=32, seed=seed)
