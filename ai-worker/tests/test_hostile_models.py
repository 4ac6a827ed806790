"""Hostile files in the deep-learning runtimes' environments (PRODUCT.md §10): malformed
images and image folders, symlinks out of the data root, malformed text CSVs, and files
posing as models: a pickle with a payload as a pretrained_path's weights, Python code a
config names, a ``.keras`` file with a Lambda layer swapped into the model store.

Runs in the pytorch and tensorflow environments (``TRAINYARD_REQUIRE_RUNTIME``); the image
cases use that environment's image runtime, the text and torch cases need torch, the
Keras cases TensorFlow. Bad data is a :class:`UserError` naming the file; a model file is
never unpickled and its code never runs (each payload's marker file must not appear, and
a control shows the payload is live when loaded unsafely).
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from runtime_support import REQUIRED_RUNTIME, Recorder, require_framework

from trainyard.routing import RUNTIMES
from trainyard_worker.runtimes.base import BaseModelRef, ModelMeta, TrainRequest, UserError

RUNTIME = RUNTIMES.get(REQUIRED_RUNTIME)


# ---------------------------------------------------------------- payloads


class Payload:
    """Unpickling this creates ``marker`` (through ``Path.touch``): it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_the_pickle_payload_is_live(tmp_path: Path) -> None:
    # The control: loading it unsafely does run it, so "no marker" below means "not loaded".
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# ---------------------------------------------------------------- images


def _png(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (RGB) with whatever data follows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _valid_png(size: int = 8, shade: int = 0) -> bytes:
    rows = b"".join(b"\x00" + bytes([shade, 255 - shade, 128]) * size for _ in range(size))
    return _png(size, size, zlib.compress(rows))


def _image_runtime() -> tuple[ModuleType, str, dict[str, Any]]:
    """This environment's image runtime, a model type, and hyperparameters small enough that
    a regression (training on what should have been refused) stays cheap."""
    framework = RUNTIME.framework if RUNTIME is not None else None
    if framework is None:  # no runtime required: whichever is installed
        for module in ("torch", "tensorflow"):
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            framework = "pytorch" if module == "torch" else "tensorflow"
            break
    if framework == "pytorch":
        require_framework("torch")
        from trainyard_worker.runtimes import torch_vision

        hp = {"architecture": "resnet18", "epochs": 1, "image_size": 32, "batch_size": 4}
        return torch_vision, "resnet", hp
    if framework == "tensorflow":
        require_framework("tensorflow")
        from trainyard_worker.runtimes import tensorflow_runtime

        return tensorflow_runtime, "mobilenet", {"epochs": 1, "image_size": 32, "batch_size": 4}
    pytest.skip("needs an image runtime (pytorch or tensorflow)")


def _ok(folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"ok{i}.png").write_bytes(_valid_png(shade=40 * i))


def _truncated(b: Path, outside: Path) -> None:
    (b / "cut.png").write_bytes(_valid_png(64)[:-30])


def _text_as_jpg(b: Path, outside: Path) -> None:
    (b / "photo.jpg").write_text("this is not a JPEG\n")


def _zero_bytes(b: Path, outside: Path) -> None:
    (b / "empty.png").write_bytes(b"")


def _bomb_30000(b: Path, outside: Path) -> None:
    (b / "bomb.png").write_bytes(_png(30_000, 30_000, zlib.compress(b"\x00" * 1000)))


def _bomb_10000(b: Path, outside: Path) -> None:
    # Between Pillow's limit and twice it Pillow only warns, then allocates 300 MB.
    (b / "bomb.png").write_bytes(_png(10_000, 10_000, zlib.compress(b"\x00" * 1000)))


def _empty_class(b: Path, outside: Path) -> None:
    shutil.rmtree(b)
    b.mkdir()


def _only_a_non_image(b: Path, outside: Path) -> None:
    shutil.rmtree(b)
    b.mkdir()
    (b / "notes.txt").write_text("not an image")


def _symlinked_image(b: Path, outside: Path) -> None:
    os.symlink(outside / "secret.png", b / "leak.png")


def _symlinked_class(b: Path, outside: Path) -> None:
    shutil.rmtree(b)
    os.symlink(outside, b)


def _single_class(b: Path, outside: Path) -> None:
    shutil.rmtree(b)


IMAGE_FOLDERS = [
    ("truncated png", _truncated, "cut.png is not a readable image"),
    ("text file named .jpg", _text_as_jpg, "photo.jpg is not a readable image"),
    ("zero-byte png", _zero_bytes, "empty.png is not a readable image"),
    ("30000x30000 header", _bomb_30000, "too large to decode"),
    ("10000x10000 header", _bomb_10000, "too large to decode"),
    ("empty class folder", _empty_class, "has no image files"),
    ("only a non-image in a class folder", _only_a_non_image, "has no image files"),
    ("image symlinked out of the root", _symlinked_image, "outside the data root"),
    ("class folder symlinked out of the root", _symlinked_class, "outside the data root"),
    ("a single class folder", _single_class, "only one class folder"),
]


@dataclass(frozen=True)
class ImageCase:
    data_root: Path
    folder: Path


def _image_case(tmp_path: Path, make: Any) -> ImageCase:
    root, outside = tmp_path / "data", tmp_path / "outside"
    _ok(outside)
    (outside / "secret.png").write_bytes(_valid_png(shade=99))
    folder = root / "images"
    _ok(folder / "a")
    _ok(folder / "b")
    make(folder / "b", outside)
    return ImageCase(root, folder)


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in IMAGE_FOLDERS],
                         ids=[c[0] for c in IMAGE_FOLDERS])  # fmt: skip
def test_a_hostile_image_folder_is_a_user_error(tmp_path: Path, make: Any, fragment: str) -> None:
    runtime, model_type, hp = _image_runtime()
    case = _image_case(tmp_path, make)
    request = TrainRequest(model_type, case.folder, hp, tmp_path / "out", data_root=case.data_root)
    with pytest.raises(UserError) as info:
        runtime.train(request, Recorder())
    assert fragment in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_csv_given_to_an_image_model_is_a_user_error(tmp_path: Path) -> None:
    runtime, model_type, hp = _image_runtime()
    (tmp_path / "data.csv").write_text("a,label\n1,x\n")
    request = TrainRequest(model_type, tmp_path / "data.csv", hp, tmp_path / "out",
                           data_root=tmp_path)  # fmt: skip
    with pytest.raises(UserError, match="is a file"):
        runtime.train(request, Recorder())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NESTED: Any = "x"
for _ in range(500):
    NESTED = [NESTED]

IMAGE_INPUTS = [
    ("path dot-dot", "/data/../etc/passwd.png", "'..'"),
    ("path outside the root", "/etc/hosts.png", "must start with /data/"),
    ("path through a symlink out", "/data/leak.png", "outside the data root"),
    ("path to a FIFO", "/data/pipe.png", "not a regular file"),
    ("path with a NUL", "/data/ok0.png\x00.png", "NUL"),
    ("path name too long", "/data/" + "p" * 300 + ".png", "too long"),
    ("base64 decompression bomb", _b64(_png(30_000, 30_000)), "too large to decode"),
    ("base64 truncated png", _b64(_valid_png(64)[:-30]), "not a readable image"),
    ("base64 of text", _b64(b"hello, world"), "not a readable image"),
    ("data URL of text", "data:image/png;base64," + _b64(b"plain text"), "not a readable image"),
    ("a number", 12345, "must be an image path"),
    ("nested 500 deep", NESTED, "must be an image path"),
]


@pytest.mark.parametrize(("item", "fragment"), [c[1:] for c in IMAGE_INPUTS],
                         ids=[c[0] for c in IMAGE_INPUTS])  # fmt: skip
def test_a_hostile_image_input_is_a_user_error(tmp_path: Path, item: Any, fragment: str) -> None:
    _image_runtime()  # an environment with Pillow
    from trainyard_worker.runtimes import imagedata

    root, outside = tmp_path / "data", tmp_path / "outside"
    _ok(root)
    outside.mkdir()
    (outside / "secret.png").write_bytes(_valid_png())
    os.symlink(outside / "secret.png", root / "leak.png")
    os.mkfifo(root / "pipe.png")
    with pytest.raises(UserError) as info:
        imagedata.decode_inference_images([item], 32, root)
    assert fragment in str(info.value), str(info.value)


# ---------------------------------------------------------------- Keras files


def _keras_with_a_lambda(path: Path, marker: Path, armed: Path) -> None:
    """A model whose Lambda creates ``marker`` when it runs and ``armed`` exists (so that
    building it here does not)."""
    keras = require_framework("keras")
    code = (
        f"lambda x: (__import__('pathlib').Path({str(armed)!r}).exists() "
        f"and __import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    )
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(eval(code))(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled)).save(path)


@pytest.fixture
def lambda_model(tmp_path: Path) -> tuple[Path, Path]:
    """(model folder, marker): a model store artifact swapped for a Lambda model, armed."""
    folder = tmp_path / "store" / "m" / "job-1"
    marker, armed = tmp_path / "pwned", tmp_path / "armed"
    folder.mkdir(parents=True)
    _keras_with_a_lambda(folder / "model.keras", marker, armed)
    assert not marker.exists()
    armed.touch()
    return folder, marker


META = {"architecture": "mobilenet_v2", "image_size": 32, "num_classes": 2}


def test_the_keras_payload_is_live(lambda_model: tuple[Path, Path]) -> None:
    keras = require_framework("keras")
    folder, marker = lambda_model
    keras.models.load_model(folder / "model.keras", compile=False, safe_mode=False)
    assert marker.exists()  # the control: an unsafe load does run the Lambda


def test_a_lambda_model_in_the_store_is_never_run(lambda_model: tuple[Path, Path]) -> None:
    require_framework("tensorflow")
    from trainyard_worker.runtimes import tensorflow_runtime as tf_rt

    folder, marker = lambda_model
    # Not the user's doing (they cannot write the model store): a crash, never a result.
    with pytest.raises(ValueError, match="Lambda"):
        tf_rt.load(folder, ModelMeta("m", "mobilenet", ["a", "b"], META))
    assert not marker.exists()


def test_fine_tuning_from_a_lambda_model_never_runs_it(
    lambda_model: tuple[Path, Path], tmp_path: Path
) -> None:
    require_framework("tensorflow")
    from trainyard_worker.runtimes import tensorflow_runtime as tf_rt

    folder, marker = lambda_model
    case = _image_case(tmp_path, lambda b, outside: None)
    base = BaseModelRef(folder, ModelMeta("m", "mobilenet", ["a", "b"], META))
    request = TrainRequest("mobilenet", case.folder, {"epochs": 1}, tmp_path / "out",
                           data_root=case.data_root, base_model=base)  # fmt: skip
    with pytest.raises(ValueError, match="Lambda"):
        tf_rt.train(request, Recorder())
    assert not marker.exists()


def test_a_pickle_posing_as_a_keras_file_is_never_unpickled(tmp_path: Path) -> None:
    require_framework("tensorflow")
    from trainyard_worker.runtimes import tensorflow_runtime as tf_rt

    marker = tmp_path / "pwned"
    (tmp_path / "model.keras").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError):
        tf_rt.load(tmp_path, ModelMeta("m", "mobilenet", ["a", "b"], META))
    assert not marker.exists()


# ---------------------------------------------------------------- text data and models


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small save_pretrained folder (trained here: nothing is downloaded)."""
    require_framework("torch")
    from trainyard.sample_data import write_text
    from trainyard_worker.runtimes import torch_text

    base = tmp_path_factory.mktemp("tiny-bert")
    data = write_text(base / "sentiment.csv")
    hp = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "epochs": 1, "max_length": 16}
    torch_text.train(TrainRequest("bert", data, hp, base / "model"), Recorder())
    return base / "model"


TEXT_CSVS = [
    ("text column missing", "review,label\ngood,pos\nbad,neg\n", "text column 'text' not found"),
    ("label column missing", "text,sentiment\ngood,pos\nbad,neg\n", "label column 'label'"),
    ("header only", "text,label\n", "no data rows"),
    ("empty file", "", "empty"),
    ("10 MB single cell", "text,label\n" + "w" * 10_000_000 + ",pos\ngood,neg\n", "field larger"),
    ("wrong delimiter", "text;label\ngood;pos\nbad;neg\n", "text column 'text' not found"),
    ("ragged rows", "text,label\ngood\nbad,neg\n", "row 1 has 1 values"),
    ("one class only", "text,label\ngood,pos\nfine,pos\n", "only one class"),
]


@pytest.mark.parametrize(("content", "fragment"), [c[1:] for c in TEXT_CSVS],
                         ids=[c[0] for c in TEXT_CSVS])  # fmt: skip
def test_a_hostile_text_csv_is_a_user_error(tmp_path: Path, content: str, fragment: str) -> None:
    require_framework("torch")
    from trainyard_worker.runtimes import torch_text

    data = tmp_path / "data.csv"
    data.write_text(content)
    with pytest.raises(UserError) as info:
        torch_text.train(TrainRequest("bert", data, {"epochs": 1}, tmp_path / "out"), Recorder())
    assert fragment in str(info.value), str(info.value)


def test_a_binary_text_csv_is_a_user_error(tmp_path: Path) -> None:
    require_framework("torch")
    from trainyard_worker.runtimes import torch_text

    (tmp_path / "data.csv").write_bytes(bytes(range(256)) * 64)
    request = TrainRequest("bert", tmp_path / "data.csv", {}, tmp_path / "out")
    with pytest.raises(UserError, match="not UTF-8"):
        torch_text.train(request, Recorder())


def _weights_pickle(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))


def _only_a_pickle(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))


def _weights_symlinked_out(folder: Path, marker: Path) -> None:
    outside = folder.parents[2] / "outside.safetensors"  # next to the data root
    (folder / "model.safetensors").replace(outside)
    os.symlink(outside, folder / "model.safetensors")


def _config_names_code(folder: Path, marker: Path) -> None:
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(
        config.replace(
            '"model_type": "bert"',
            '"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", '
            '"AutoModelForSequenceClassification": "evil.EvilModel"}',
        )
    )


def _tokenizer_names_code(folder: Path, marker: Path) -> None:
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "EvilTokenizer", '
        '"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", null]}}'
    )


PRETRAINED = [
    ("a pickle posing as model.safetensors", _weights_pickle, "cannot load"),
    ("only a pickle as pytorch_model.bin", _only_a_pickle, "safetensors is required"),
    ("weights symlinked out of the root", _weights_symlinked_out, "outside the data root"),
    ("config naming code in the folder", _config_names_code, "cannot load"),
    ("tokenizer naming code in the folder", _tokenizer_names_code, "cannot load"),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in PRETRAINED],
                         ids=[c[0] for c in PRETRAINED])  # fmt: skip
def test_a_hostile_pretrained_path_is_refused_never_run(
    tiny_bert: Path, tmp_path: Path, make: Any, fragment: str
) -> None:
    from trainyard.sample_data import write_text
    from trainyard_worker.runtimes import torch_text

    root, marker = tmp_path / "data", tmp_path / "pwned"
    folder = root / "models" / "hostile"
    shutil.copytree(tiny_bert, folder)
    make(folder, marker)
    data = write_text(root / "sentiment.csv")
    hp = {"pretrained_path": "/data/models/hostile", "epochs": 1}
    request = TrainRequest("bert", data, hp, tmp_path / "out", data_root=root)
    with pytest.raises(UserError) as info:
        torch_text.train(request, Recorder())
    assert str(info.value).startswith("hyperparameters.pretrained_path"), str(info.value)
    assert fragment in str(info.value), str(info.value)
    assert not marker.exists()


def test_a_pickle_swapped_into_the_model_store_is_never_unpickled(
    tiny_bert: Path, tmp_path: Path
) -> None:
    require_framework("torch")
    from trainyard_worker.runtimes import torch_text, torch_vision

    marker = tmp_path / "pwned"
    text_model = tmp_path / "text"
    shutil.copytree(tiny_bert, text_model)
    _weights_pickle(text_model, marker)
    with pytest.raises(Exception) as text_info:  # a crash: the store was tampered with
        torch_text.load(text_model, ModelMeta("t", "bert", ["negative", "positive"], {}))
    vision_model = tmp_path / "vision"
    vision_model.mkdir()
    _weights_pickle(vision_model, marker)
    details = {"architecture": "resnet18", "num_classes": 2}
    with pytest.raises(Exception) as vision_info:
        torch_vision.load(vision_model, ModelMeta("v", "resnet", ["a", "b"], details))
    assert not marker.exists()
    for info in (text_info, vision_info):
        assert not isinstance(info.value, pickle.UnpicklingError), info.value
