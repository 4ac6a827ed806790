"""Sample data: valid PNGs (checked by a tiny reader here), the right class layout and
sizes, byte-for-byte determinism, a balanced text set, and a fast, idempotent
``ensure_samples``. Standard library only, like the module under test."""

from __future__ import annotations

import csv
import hashlib
import statistics
import struct
import time
import zlib
from pathlib import Path

import pytest

from trainyard import sample_data as sd
from trainyard import sample_images as sd_images
from trainyard.sample_data import (
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    IMAGE_CLASSES,
    IMAGE_FOLDER,
    IMAGE_PER_CLASS,
    IMAGE_SIZE,
    TABULAR_CLASSES,
    TABULAR_FILE,
    TEXT_FILE,
    TEXT_LABELS,
    encode_png,
    ensure_samples,
    image_class_names,
    write_image_folder,
    write_tabular,
    write_text,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# pixel_digest of write_cifar10's output before the generator grew to 1000 classes.
CIFAR10_PIXELS = "078d96519ec778da7aeb1058d99156bc99a75c9c01539cf14e8cb53b15baae13"


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


def pixel_digest(root: Path) -> str:
    """SHA-256 of every image's name, size and decoded pixels (independent of zlib's
    compressed bytes, which may differ between zlib builds)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        width, height, rows = read_png(path.read_bytes())
        digest.update(f"{path.relative_to(root).as_posix()}:{width}x{height}:".encode())
        digest.update(b"".join(rows))
    return digest.hexdigest()


def class_means(root: Path, name: str) -> tuple[float, float, float]:
    """Mean RGB over all images of one class."""
    per_image = [mean_rgb(read_png(p.read_bytes())[2]) for p in (root / name).iterdir()]
    r, g, b = (sum(m[i] for m in per_image) / len(per_image) for i in range(3))
    return r, g, b


@pytest.fixture(scope="module")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1000-class image_classification sample, written once for this module."""
    parent = tmp_path_factory.mktemp("image_set")
    root = sd.write_image_classification(parent / IMAGE_FOLDER)
    assert root == parent / IMAGE_FOLDER
    # No temporary folder is left behind.
    assert [p.name for p in parent.iterdir()] == [IMAGE_FOLDER]
    return root


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


def test_image_classification_is_imagenet_shaped_with_valid_pngs(image_set: Path) -> None:
    assert (IMAGE_PER_CLASS, IMAGE_SIZE) == (5, 32)
    assert len(IMAGE_CLASSES) == 1000
    # Sorted folder order (how ImageFolder readers number classes) is class index order.
    folders = sorted(p.name for p in image_set.iterdir())
    assert folders == list(IMAGE_CLASSES)
    assert all(p.is_dir() for p in image_set.iterdir())
    for name in IMAGE_CLASSES:
        files = sorted((image_set / name).iterdir(), key=lambda p: int(p.stem))
        assert [p.name for p in files] == [f"{n}.png" for n in range(IMAGE_PER_CLASS)]
        for path in files:
            width, height, _ = read_png(path.read_bytes())
            assert (width, height) == (32, 32)


def test_image_class_names_are_readable_sortable_folder_names() -> None:
    names = image_class_names()
    assert names == IMAGE_CLASSES
    assert len(set(names)) == 1000
    assert list(names) == sorted(names)
    assert names[0] == "c000_red_circle_on_grey"
    assert names[1] == "c001_green_square_on_grey"
    assert names[123] == "c123_cyan_checkers_on_maroon"
    assert names[999] == "c999_brown_diamond_on_plum"
    for i, name in enumerate(names):
        assert name.startswith(f"c{i:03d}_")
        assert name.replace("_", "").isalnum() and name.isascii() and name == name.lower()
    assert image_class_names(4) == names[:4]
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            image_class_names(bad)


def test_class_signatures_are_distinct_and_keep_the_first_ten() -> None:
    signatures = [sd_images._signature(i) for i in range(1000)]
    assert len(set(signatures)) == 1000
    assert all(0 <= f < 10 for sig in signatures for f in sig)
    # Classes 0..9 (all of cifar10) keep pattern i, colour i and the grey background.
    assert signatures[:10] == [(i, i, 0) for i in range(10)]
    with pytest.raises(ValueError):
        sd_images._signature(1000)


def test_cifar10_is_unchanged(tmp_path: Path) -> None:
    root = sd.write_cifar10(tmp_path / "set")
    assert sorted(p.name for p in root.iterdir()) == sorted(CIFAR10_CLASSES)
    for name in CIFAR10_CLASSES:
        files = sorted((root / name).iterdir(), key=lambda p: int(p.stem))
        assert [p.name for p in files] == [f"{n}.png" for n in range(20)]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    # The exact pixels of the set as first released (10 classes x 20 images, 32x32).
    assert pixel_digest(root) == CIFAR10_PIXELS


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
    # Tinted classes (index >= 100) are deterministic too.
    many = image_class_names(230)
    d = write_image_folder(tmp_path / "d", many, per_class=1, size=8, seed=5)
    e = write_image_folder(tmp_path / "e", many, per_class=1, size=8, seed=5)
    f = write_image_folder(tmp_path / "f", many, per_class=1, size=8, seed=6)
    assert folder_bytes(d) == folder_bytes(e) != folder_bytes(f)
    assert len(set(folder_bytes(d).values())) == 230


def saturated_mean(root: Path, name: str) -> tuple[float, float, float]:
    """Mean RGB of the strongly coloured pixels of one class: on the grey background
    those are the pattern's pixels."""
    strong: list[bytes] = []
    total = 0
    for path in (root / name).iterdir():
        flat = b"".join(read_png(path.read_bytes())[2])
        pixels = [flat[i : i + 3] for i in range(0, len(flat), 3)]
        total += len(pixels)
        strong.extend(px for px in pixels if max(px) - min(px) >= 100)
    assert len(strong) > total // 10, name
    return mean_rgb(strong)


def test_each_colour_shows_on_the_grey_background(image_set: Path) -> None:
    red, green, blue, yellow, purple, cyan = (
        saturated_mean(image_set, name) for name in IMAGE_CLASSES[:6]
    )
    assert red[0] > max(red[1], red[2]) + 100
    assert green[1] > max(green[0], green[2]) + 80
    assert blue[2] > max(blue[0], blue[1]) + 100
    assert min(yellow[0], yellow[1]) > yellow[2] + 120
    assert purple[2] > purple[0] > purple[1] + 50
    assert min(cyan[1], cyan[2]) > cyan[0] + 120
    # Whole-image means differ too, by pattern area and colour.
    means = [class_means(image_set, name) for name in IMAGE_CLASSES[:10]]
    assert len({tuple(round(c) for c in m) for m in means}) == 10


# Background tints 1..9 (see sample_images._TINTS): class 100 * t + 90 draws a white
# circle, so its mean colour is the tint's hue, lightened.
TINTS = {
    1: (115, 17, 17),
    2: (115, 82, 17),
    3: (82, 115, 17),
    4: (17, 115, 17),
    5: (17, 115, 82),
    6: (17, 82, 115),
    7: (17, 17, 115),
    8: (82, 17, 115),
    9: (115, 17, 82),
}


def test_each_background_tint_shows(image_set: Path) -> None:
    seen = set()
    for tint, rgb in TINTS.items():
        name = IMAGE_CLASSES[100 * tint + 90]
        assert name.startswith(f"c{tint}90_white_circle_on_")
        mean = class_means(image_set, name)
        for a in range(3):
            for b in range(3):
                if rgb[a] - rgb[b] >= 60:
                    assert mean[a] > mean[b] + 20, (name, mean)
        seen.add(tuple(round(c / 10) for c in mean))
    assert len(seen) == len(TINTS)
    grey = class_means(image_set, IMAGE_CLASSES[90])
    assert max(grey) - min(grey) < 30, grey


def brightness_profiles(root: Path, name: str) -> tuple[float, float]:
    """Mean variance of the row means and of the column means of brightness."""
    across_rows, across_cols = [], []
    for path in (root / name).iterdir():
        width, _, rows = read_png(path.read_bytes())
        lum = [[sum(row[3 * x : 3 * x + 3]) for x in range(width)] for row in rows]
        across_rows.append(statistics.pvariance([sum(r) / width for r in lum]))
        columns = zip(*lum, strict=True)
        across_cols.append(statistics.pvariance([sum(c) / len(lum) for c in columns]))
    return statistics.mean(across_rows), statistics.mean(across_cols)


def test_patterns_survive_every_tint(image_set: Path) -> None:
    # hstripes (pattern 2) vary from row to row, vstripes (pattern 4) from column to
    # column, whatever the colour and background.
    for tint in (0, 3, 7, 9):
        for block in (0, 5):
            first = 100 * tint + 10 * block
            h_rows, h_cols = brightness_profiles(image_set, IMAGE_CLASSES[first + 2])
            v_rows, v_cols = brightness_profiles(image_set, IMAGE_CLASSES[first + 4])
            assert h_rows > 5 * h_cols, (tint, block, h_rows, h_cols)
            assert v_cols > 5 * v_rows, (tint, block, v_rows, v_cols)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": [], "per_class": 1, "size": 8},
        {"classes": [str(i) for i in range(1001)], "per_class": 1, "size": 8},
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


def test_ensure_samples_writes_everything_once_and_fast(tmp_path: Path, image_set: Path) -> None:
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
    assert len(list((root / IMAGE_FOLDER).rglob("*.png"))) == 1000 * 5
    assert len(list((root / CIFAR10_FOLDER).rglob("*.png"))) == 10 * 20
    before = folder_bytes(root)
    start = time.perf_counter()
    assert ensure_samples(root) == []
    assert time.perf_counter() - start < 1
    assert folder_bytes(root) == before
    # An independent write of the 1000-class set gets the very same bytes.
    assert folder_bytes(root / IMAGE_FOLDER) == folder_bytes(image_set)


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


def test_the_shipped_sentiment_set_is_large_enough_for_the_seeds_bert_example(
    tmp_path: Path,
) -> None:
    # The seed's BERT body trains from scratch at learning_rate 1e-4 for 5 epochs: 400 rows
    # are 100 optimizer steps, too few to leave chance; the shipped set has 2,000.
    sd.ensure_samples(tmp_path)
    with (tmp_path / sd.TEXT_FILE).open(newline="", encoding="utf-8") as fh:
        body = list(csv.reader(fh))[1:]
    assert len(body) == sd.SENTIMENT_ROWS == 2000
    assert len({row[0] for row in body}) == 2000
