"""Small, learnable sample data sets for demos, the seed script and tests.

Standard library only: the core package must never import an ML framework (numpy
included), because the backend and the CLI install it without any runtime extras.

Each writer is deterministic for a given ``seed`` so tests and demos are reproducible.
``ensure_samples`` is the one entry point the seed/integration code calls; later data
sets (text, images) are added to its ``_SAMPLES`` table.

Command line::

    python -m trainyard.sample_data --root DIR
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "TABULAR_CLASSES",
    "TABULAR_COLUMNS",
    "TABULAR_FILE",
    "ensure_samples",
    "main",
    "write_tabular",
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

# One centre per class. Neighbouring centres are >= 4 units apart in every feature while
# the per-feature spread is 0.6, so the blobs barely overlap: any reasonable classifier
# (random forest, RBF SVM) reaches well above 90% held-out accuracy.
_CENTRES: dict[str, tuple[float, float, float, float]] = {
    "setosa": (5.0, 3.4, 1.5, 0.3),
    "versicolor": (9.0, 7.4, 5.5, 4.3),
    "virginica": (13.0, 3.4, 9.5, 8.3),
}
_SPREAD = 0.6


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


# File name -> writer. Later issues add the text and image sets here, e.g.
# ``"text_data.csv": write_text`` and ``"images": write_images`` (a folder).
_SAMPLES: dict[str, Callable[[Path], Path]] = {
    TABULAR_FILE: write_tabular,
}


def ensure_samples(root: Path) -> list[Path]:
    """Create every sample data set under ``root`` that does not exist yet.

    Existing files are left alone (a user may have edited them). Returns only the paths
    written by this call; an empty list means everything was already there.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, writer in _SAMPLES.items():
        target = root / name
        if not target.exists():
            written.append(writer(target))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainyard.sample_data --root DIR``: write missing sample data sets."""
    parser = argparse.ArgumentParser(
        prog="python -m trainyard.sample_data",
        description="Write Trainyard's sample data sets into a folder (existing files are kept).",
    )
    parser.add_argument("--root", type=Path, required=True, help="folder to write into")
    args = parser.parse_args(argv)
    written = ensure_samples(args.root)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"all sample data already present in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
