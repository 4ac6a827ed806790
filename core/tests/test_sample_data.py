"""Sample data: valid PNGs (checked by a tiny reader here), the right class layout and
sizes, byte-for-byte determinism, a balanced text set, and a fast, idempotent
``ensure_samples``. Standard library only, like the module under test."""

from __future__ import annotations

import csv
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from trainyard import sample_data as sd
from trainyard.sample_data import (
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    IMAGE_CLASSES,
    IMAGE_FOLDER,
    TABULAR_CLASSES,
    TABULAR_FILE,
    TEXT_FILE,
    TEXT_LABELS,
    encode_png,
    ensure_samples,
    write_image_folder,
    write_tabular,
    write_text,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Parse an 8-bit RGB, non-interlaced PNG; check every CRC; return the rows."""
    assert data[:8] == PNG_SIGNATURE
    pos = 8
    chunks: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert len(body) == length, f"truncated {kind!r}"
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows), "filter type must be 0 (None)"
    return width, height, [row[1:] for row in rows]


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def mean_rgb(rows: list[bytes]) -> tuple[float, float, float]:
    flat = b"".join(rows)
    n = len(flat) // 3
    return (sum(flat[0::3]) / n, sum(flat[1::3]) / n, sum(flat[2::3]) / n)


# ------------------------------------------------------------------------------- png


def test_encode_png_round_trips_exact_pixels() -> None:
    pixels = bytes(range(256)) * 3  # 16 x 16 RGB
    width, height, rows = read_png(encode_png(16, 16, pixels))
    assert (width, height) == (16, 16)
    assert b"".join(rows) == pixels


def test_encode_png_rejects_a_wrong_buffer() -> None:
    with pytest.raises(ValueError):
        encode_png(4, 4, b"\x00" * 47)


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("writer", "classes", "per_class", "size"),
    [
        (sd.write_image_classification, IMAGE_CLASSES, 24, 64),
        (sd.write_cifar10, CIFAR10_CLASSES, 20, 32),
    ],
)
def test_image_sets_have_the_right_layout_and_valid_pngs(
    tmp_path: Path,
    writer: Callable[[Path], Path],
    classes: tuple[str, ...],
    per_class: int,
    size: int,
) -> None:
    root = writer(tmp_path / "set")
    assert root == tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == sorted(classes)
    for name in classes:
        files = sorted((root / name).iterdir(), key=lambda p: int(p.stem))
        assert [p.name for p in files] == [f"{n}.png" for n in range(per_class)]
        for path in files:
            width, height, _ = read_png(path.read_bytes())
            assert (width, height) == (size, size)
    # No temporary folder is left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_cifar10_uses_the_cifar10_class_names() -> None:
    assert CIFAR10_CLASSES == (
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


def test_images_are_deterministic_and_differ_by_seed(tmp_path: Path) -> None:
    a = write_image_folder(tmp_path / "a", ["x", "y"], per_class=3, size=16, seed=5)
    b = write_image_folder(tmp_path / "b", ["x", "y"], per_class=3, size=16, seed=5)
    c = write_image_folder(tmp_path / "c", ["x", "y"], per_class=3, size=16, seed=6)
    assert folder_bytes(a) == folder_bytes(b)
    assert folder_bytes(a) != folder_bytes(c)
    # Images of one class are not copies of each other.
    assert len(set(folder_bytes(a).values())) == 6


def test_each_class_has_its_own_dominant_colour(tmp_path: Path) -> None:
    root = sd.write_image_classification(tmp_path / "img")
    means: dict[str, tuple[float, float, float]] = {}
    for name in IMAGE_CLASSES:
        per_image = [mean_rgb(read_png(p.read_bytes())[2]) for p in (root / name).iterdir()]
        r, g, b = (sum(m[i] for m in per_image) / len(per_image) for i in range(3))
        means[name] = (r, g, b)
    # circles red, squares green, stripes blue, checkers yellow (red + green).
    assert means["circles"][0] > means["circles"][1] + 20
    assert means["squares"][1] > means["squares"][0] + 20
    assert means["stripes"][2] > means["stripes"][0] + 20
    assert means["checkers"][0] > means["checkers"][2] + 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": [], "per_class": 1, "size": 8},
        {"classes": [str(i) for i in range(11)], "per_class": 1, "size": 8},
        {"classes": ["a", "a"], "per_class": 1, "size": 8},
        {"classes": ["a/b"], "per_class": 1, "size": 8},
        {"classes": ["a"], "per_class": 0, "size": 8},
        {"classes": ["a"], "per_class": 1, "size": 2},
    ],
)
def test_write_image_folder_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        write_image_folder(tmp_path / "x", seed=0, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ text


def test_text_is_balanced_quoted_and_deterministic(tmp_path: Path) -> None:
    a = write_text(tmp_path / "a.csv")
    b = write_text(tmp_path / "b.csv")
    assert a.read_bytes() == b.read_bytes()
    assert write_text(tmp_path / "c.csv", seed=99).read_bytes() != a.read_bytes()
    with a.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["text", "label"]
    body = rows[1:]
    assert len(body) == 400
    assert all(len(row) == 2 and row[0] for row in body)
    labels = [row[1] for row in body]
    assert set(labels) == set(TEXT_LABELS) == {"positive", "negative"}
    assert labels.count("positive") == labels.count("negative") == 200
    assert len({row[0] for row in body}) == 400  # distinct reviews
    # Some reviews contain commas, so the csv module had to quote them.
    assert any("," in row[0] for row in body)
    assert '"' in a.read_text(encoding="utf-8")


def test_text_is_not_a_single_keyword_lookup(tmp_path: Path) -> None:
    with write_text(tmp_path / "t.csv").open(newline="", encoding="utf-8") as fh:
        body = list(csv.reader(fh))[1:]
    words = {w for text, _ in body for w in text.lower().replace(",", " ").split()}
    best = 0.0
    for word in words:
        hits = sum((word in text.lower().split()) == (label == "positive") for text, label in body)
        best = max(best, hits / len(body), 1 - hits / len(body))
    assert best < 0.8
    # Negation is consistent: "not <negative adjective>" only ever appears in positive rows.
    for text, label in body:
        for adjective in sd._ADJECTIVES["negative"]:
            if f"is not {adjective}" in text and " but " not in text and " and " not in text:
                assert label == "positive", text


def test_write_text_rejects_too_few_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_text(tmp_path / "t.csv", rows=3)


# --------------------------------------------------------------------------- tabular


def test_tabular_keeps_its_shape(tmp_path: Path) -> None:
    path = write_tabular(tmp_path / "t.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["feature1", "feature2", "feature3", "feature4", "label"]
    assert len(rows) == 601
    labels = [row[4] for row in rows[1:]]
    assert {label: labels.count(label) for label in TABULAR_CLASSES} == dict.fromkeys(
        TABULAR_CLASSES, 200
    )
    assert path.read_bytes() == write_tabular(tmp_path / "u.csv").read_bytes()


# ---------------------------------------------------------------------------- ensure


def test_ensure_samples_writes_everything_once_and_fast(tmp_path: Path) -> None:
    root = tmp_path / "data"
    start = time.perf_counter()
    written = ensure_samples(root)
    elapsed = time.perf_counter() - start
    assert written == [
        root / TABULAR_FILE,
        root / TEXT_FILE,
        root / IMAGE_FOLDER,
        root / CIFAR10_FOLDER,
    ]
    assert elapsed < 10, f"ensure_samples took {elapsed:.2f}s"
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in written)
    assert len(list((root / IMAGE_FOLDER).rglob("*.png"))) == 4 * 24
    assert len(list((root / CIFAR10_FOLDER).rglob("*.png"))) == 10 * 20
    before = folder_bytes(root)
    start = time.perf_counter()
    assert ensure_samples(root) == []
    assert time.perf_counter() - start < 1
    assert folder_bytes(root) == before
    # Another root gets the very same bytes.
    ensure_samples(tmp_path / "other")
    assert folder_bytes(tmp_path / "other") == before


def test_ensure_samples_keeps_user_data_and_fills_only_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / IMAGE_FOLDER / "mine").mkdir(parents=True)
    (root / IMAGE_FOLDER / "mine" / "a.png").write_bytes(b"user")
    (root / CIFAR10_FOLDER).mkdir()  # empty: counts as missing
    (root / TEXT_FILE).write_text("text,label\nok,positive\n", encoding="utf-8")
    assert ensure_samples(root) == [root / TABULAR_FILE, root / CIFAR10_FOLDER]
    assert (root / TEXT_FILE).read_text(encoding="utf-8") == "text,label\nok,positive\n"
    assert [p.name for p in (root / IMAGE_FOLDER).iterdir()] == ["mine"]
    assert sorted(p.name for p in (root / CIFAR10_FOLDER).iterdir()) == sorted(CIFAR10_CLASSES)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_main_reports_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sd.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in (TABULAR_FILE, TEXT_FILE, IMAGE_FOLDER, CIFAR10_FOLDER):
        assert f"wrote {tmp_path / name}" in out
    assert "4 of 4" in out
    assert sd.main(["--root", str(tmp_path)]) == 0
    assert "already present" in capsys.readouterr().out
