"""Small, learnable sample data sets for demos, the seed script and tests.

Standard library only: the core package must never import an ML framework (numpy or
PIL included), because the backend and the CLI install it without any runtime extras.
PNGs are written by a minimal encoder (``zlib`` + ``struct``: 8-bit RGB, filter 0;
see ``trainyard.sample_images``).

The data sets match the paths the seed README posts (``/data/x`` is ``$DATA_ROOT/x``):

``tabular_data.csv``
    600 rows, ``feature1..feature4,label``; three overlapping gaussian blobs named
    setosa/versicolor/virginica (a random forest reaches about 95% held-out accuracy).
``sentiment_analysis.csv``
    2,000 rows (``SENTIMENT_ROWS``; ``write_text`` defaults to 400 for quick tests),
    ``text,label``; short English product reviews, balanced
    positive/negative, composed from word lists with intensifiers, neutral filler,
    negation ("not bad") and contrast ("..., but ...") handled consistently.
``image_classification/``
    ImageNet-shaped, for the seed's ResNet job (``"num_classes": 1000``): ImageFolder
    layout ``<class>/<n>.png``, 1000 classes x 5 images, 32x32 RGB. Class folders are
    named ``c000_red_circle_on_grey`` .. ``c999_brown_diamond_on_plum``, so sorted order
    is class index order (``IMAGE_CLASSES``).
``cifar10/``
    CIFAR-10-shaped (generated here, never downloaded): the 10 CIFAR-10 class names,
    20 images each, 32x32 RGB.

Each image class has a learnable signature combining three factors of 10 values each:
a geometric pattern, its colour and a background tint (the first 10 classes, hence all
of ``cifar10/``, keep the grey background and get one pattern and one colour each), with
per-image random offsets, sizes, colour jitter and pixel noise. Learnable, not trivial: a
ResNet-18 trained from scratch (Adam, lr 1e-3, batch 32) on ``image_classification/``
reaches about 88% training accuracy after 10 epochs and 77% on freshly drawn images of
the same classes; on a 4-class subset it reaches 100% within 4 epochs.

Each writer is deterministic for a given ``seed`` so tests and demos are reproducible.
``ensure_samples`` is the one entry point the seed/integration code calls (at every
local start: writing everything takes about two seconds, nearly all of it the 5000
images of ``image_classification/``; once written, a call only checks what exists); it
writes only what is missing, atomically, and returns the paths it wrote.

Command line::

    python -m trainyard.sample_data [--root DIR]

(without ``--root``: the data root the backend and workers use by default, see
``trainyard.paths``).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

from .sample_images import (
    CIFAR10_CLASSES,
    IMAGE_CLASSES,
    IMAGE_PER_CLASS,
    IMAGE_SIZE,
    encode_png,
    image_class_names,
    write_cifar10,
    write_image_classification,
    write_image_folder,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "IMAGE_CLASSES",
    "IMAGE_FOLDER",
    "IMAGE_PER_CLASS",
    "IMAGE_SIZE",
    "TABULAR_CLASSES",
    "TABULAR_COLUMNS",
    "TABULAR_FILE",
    "TEXT_COLUMNS",
    "TEXT_FILE",
    "TEXT_LABELS",
    "encode_png",
    "ensure_samples",
    "image_class_names",
    "main",
    "write_cifar10",
    "write_image_classification",
    "write_image_folder",
    "write_tabular",
    "write_text",
]

TABULAR_FILE = "tabular_data.csv"
TABULAR_COLUMNS: tuple[str, ...] = (
    "feature1",
    "feature2",
    "feature3",
    "feature4",
    "label",
)
TABULAR_CLASSES: tuple[str, ...] = ("setosa", "versicolor", "virginica")

TEXT_FILE = "sentiment_analysis.csv"
TEXT_COLUMNS: tuple[str, ...] = ("text", "label")
TEXT_LABELS: tuple[str, ...] = ("positive", "negative")

IMAGE_FOLDER = "image_classification"
CIFAR10_FOLDER = "cifar10"

# ---------------------------------------------------------------------------- tabular

# One centre per class. Neighbouring centres are 4 units apart in most features and the
# per-feature spread is 1.9, so the blobs overlap a little: a random forest or an RBF
# SVM lands around 93-98% held-out accuracy (never 100%, never below 90%), and the
# log loss is no longer ~0. setosa and virginica are far apart; versicolor sits between.
_CENTRES: dict[str, tuple[float, float, float, float]] = {
    "setosa": (5.0, 3.4, 1.5, 0.3),
    "versicolor": (9.0, 7.4, 5.5, 4.3),
    "virginica": (13.0, 3.4, 9.5, 8.3),
}
_SPREAD = 1.9


def _atomic_write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write to a temporary sibling then rename, so a reader never sees half a file
    (several workers may call ``ensure_samples`` on the same shared folder at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def write_tabular(path: Path, rows: int = 600, seed: int = 7) -> Path:
    """Write a 3-class gaussian-blob CSV with header ``feature1..feature4,label``.

    Classes are balanced (round-robin) and the row order is shuffled. Values have two
    decimals. Returns ``path``.
    """
    if rows < 2 * len(TABULAR_CLASSES):
        # A stratified train/test split needs at least two rows per class.
        raise ValueError(f"rows must be at least {2 * len(TABULAR_CLASSES)}, got {rows}")
    rng = random.Random(seed)
    data: list[list[str]] = []
    for i in range(rows):
        label = TABULAR_CLASSES[i % len(TABULAR_CLASSES)]
        values = [rng.gauss(mu, _SPREAD) for mu in _CENTRES[label]]
        data.append([f"{v:.2f}" for v in values] + [label])
    rng.shuffle(data)
    _atomic_write_csv(Path(path), TABULAR_COLUMNS, data)
    return Path(path)


# ------------------------------------------------------------------------------- text

# Sentiment comes only from the adjectives and verdict phrases; a negation flips the
# polarity of its clause ("not bad" is positive), and after "but" the second clause
# decides. Both polarities share the same nouns, products, intensifiers and filler, so
# no single word gives the label away, yet a small model learns it easily.
_PRODUCTS = (
    "product",
    "phone",
    "laptop",
    "blender",
    "headset",
    "jacket",
    "coffee maker",
    "vacuum",
    "desk chair",
    "camera",
    "backpack",
    "kettle",
)
_ASPECTS = (
    "battery",
    "screen",
    "sound",
    "build quality",
    "customer service",
    "delivery",
    "price",
    "design",
    "keyboard",
    "software",
    "packaging",
    "fabric",
    "motor",
    "lid",
    "strap",
    "manual",
)
_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": (
        "great",
        "excellent",
        "fantastic",
        "wonderful",
        "reliable",
        "impressive",
        "superb",
        "comfortable",
        "perfect",
        "good",
    ),
    "negative": (
        "terrible",
        "awful",
        "poor",
        "disappointing",
        "flimsy",
        "frustrating",
        "useless",
        "noisy",
        "horrible",
        "bad",
    ),
}
_NEGATION_RATE = 0.1  # per clause
_CONTRAST_RATE = 0.06  # per review
_INTENSIFIERS = ("", "", "", "really ", "very ", "quite ", "extremely ", "truly ", "pretty ")
# Verdicts; "{neg}" marks where a negation goes ("would{neg} recommend").
_VERDICTS: dict[str, tuple[str, ...]] = {
    "positive": (
        "I would recommend it",
        "I love it",
        "it is worth every penny",
        "I am happy with it",
        "it exceeded my expectations",
        "I would buy it again",
        "it works as described",
        "five stars from me",
    ),
    "negative": (
        "I would not recommend it",
        "I regret buying it",
        "it is a waste of money",
        "I am returning it",
        "it stopped working after a week",
        "I would not buy it again",
        "it does not work as described",
        "one star from me",
    ),
}
_FILLER = (
    "I bought it last month.",
    "It arrived on a Tuesday.",
    "I use it every day.",
    "My sister gave it to me.",
    "I have had it for two weeks.",
    "It comes in three colours.",
    "I ordered it online.",
    "We use it at the office.",
    "It was a birthday present.",
    "I replaced my old one with it.",
)


def _opposite(label: str) -> str:
    return TEXT_LABELS[1 - TEXT_LABELS.index(label)]


def _clause(rng: random.Random, label: str) -> str:
    """One clause whose sentiment is ``label`` (negation flips an opposite adjective)."""
    negated = rng.random() < _NEGATION_RATE
    adj = rng.choice(_ADJECTIVES[_opposite(label) if negated else label])
    intens = "" if negated else rng.choice(_INTENSIFIERS)
    verb = "is not" if negated else "is"
    kind = rng.randrange(4)
    if kind == 0:
        return f"the {rng.choice(_ASPECTS)} {verb} {intens}{adj}"
    if kind == 1:
        return f"the {rng.choice(_PRODUCTS)} {verb} {intens}{adj}"
    if kind == 2:
        if negated:
            return f"this {rng.choice(_PRODUCTS)} is not {adj} at all"
        article = "an" if (intens or adj)[0] in "aeiou" else "a"
        return f"this is {article} {intens}{adj} {rng.choice(_PRODUCTS)}"
    return rng.choice(_VERDICTS[label])


def _review(rng: random.Random, label: str) -> str:
    if rng.random() < _CONTRAST_RATE:
        # Contrast: the clause after "but" carries the overall sentiment.
        body = f"{_clause(rng, _opposite(label))}, but {_clause(rng, label)}."
    elif rng.random() < 0.5:
        body = f"{_clause(rng, label)} and {_clause(rng, label)}."
    else:
        body = f"{_clause(rng, label)}{rng.choice(('.', '.', '!'))}"
    body = body[0].upper() + body[1:]
    roll = rng.random()
    if roll < 0.25:
        return f"{rng.choice(_FILLER)} {body}"
    if roll < 0.45:
        return f"{body} {rng.choice(_FILLER)}"
    return body


def write_text(path: Path, rows: int = 400, seed: int = 11) -> Path:
    """Write a sentiment CSV with header ``text,label`` (``positive``/``negative``).

    Labels alternate before shuffling, so they are balanced; reviews are distinct while
    the vocabulary allows. Returns ``path``.
    """
    if rows < 2 * len(TEXT_LABELS):
        raise ValueError(f"rows must be at least {2 * len(TEXT_LABELS)}, got {rows}")
    rng = random.Random(seed)
    seen: set[str] = set()
    data: list[list[str]] = []
    for i in range(rows):
        label = TEXT_LABELS[i % len(TEXT_LABELS)]
        text = _review(rng, label)
        for _ in range(20):
            if text not in seen:
                break
            text = _review(rng, label)
        seen.add(text)
        data.append([text, label])
    rng.shuffle(data)
    _atomic_write_csv(Path(path), TEXT_COLUMNS, data)
    return Path(path)


# ----------------------------------------------------------------------------- ensure


# The seed's BERT example trains from scratch at learning_rate 1e-4 for 5 epochs: on 400
# rows (100 optimizer steps) it stays at chance; on 2,000 rows it reaches ~94% (measured).
SENTIMENT_ROWS = 2000


class _Sample(NamedTuple):
    writer: Callable[[Path], Path]
    folder: bool
    description: str


# Name under the data root -> how to write it. Order is the order of ``ensure_samples``.
_SAMPLES: dict[str, _Sample] = {
    TABULAR_FILE: _Sample(write_tabular, False, "600 rows, 4 features, 3 classes"),
    TEXT_FILE: _Sample(
        partial(write_text, rows=SENTIMENT_ROWS),
        False,
        f"{SENTIMENT_ROWS} reviews, positive/negative",
    ),
    IMAGE_FOLDER: _Sample(
        write_image_classification,
        True,
        f"{len(IMAGE_CLASSES)} classes x {IMAGE_PER_CLASS} PNGs, {IMAGE_SIZE}x{IMAGE_SIZE}",
    ),
    CIFAR10_FOLDER: _Sample(write_cifar10, True, "10 classes x 20 PNGs, 32x32"),
}


def _present(target: Path, folder: bool) -> bool:
    if folder and target.is_dir():
        return any(target.iterdir())
    return target.exists()


def ensure_samples(root: Path) -> list[Path]:
    """Create every sample data set under ``root`` that does not exist yet.

    Existing files, and existing non-empty folders, are left alone (a user may have
    edited them); an empty folder is filled. Returns only the paths written by this
    call; an empty list means everything was already there.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, sample in _SAMPLES.items():
        target = root / name
        if not _present(target, sample.folder):
            written.append(sample.writer(target))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainyard.sample_data [--root DIR]``: write missing sample data sets."""
    parser = argparse.ArgumentParser(
        prog="python -m trainyard.sample_data",
        description="Write Trainyard's sample data sets into a folder (existing ones are kept).",
    )
    parser.add_argument(
        "--root",
        type=Path,
        help="folder to write into (default: the default data root, data/ in the checkout "
        "or in $TRAINYARD_HOME; see trainyard.paths)",
    )
    args = parser.parse_args(argv)
    if args.root is None:
        from .paths import default_paths

        args.root = default_paths().data_root
    start = time.perf_counter()
    written = ensure_samples(args.root)
    elapsed = time.perf_counter() - start
    for path in written:
        sample = _SAMPLES[path.name]
        kind = "folder" if sample.folder else "file"
        print(f"wrote {path} ({kind}: {sample.description})")
    if written:
        print(f"{len(written)} of {len(_SAMPLES)} sample data sets written in {elapsed:.2f}s")
    else:
        names = ", ".join(_SAMPLES)
        print(f"all sample data already present in {args.root} ({names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
