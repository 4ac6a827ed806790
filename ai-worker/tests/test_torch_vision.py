"""Real training and serving tests for the PyTorch image runtime (``resnet``, ``vgg``) on the
generated image sets, through the PyTorch runtime's dispatch. No queue, no Redis."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from predict_many_support import assert_many_matches_predict
from runtime_support import Recorder, require_framework

torch = require_framework("torch")

from safetensors.torch import load_file  # noqa: E402

from trainyard.sample_images import CIFAR10_CLASSES, write_cifar10, write_image_folder  # noqa: E402
from trainyard_worker.runtimes import load_runtime_module  # noqa: E402
from trainyard_worker.runtimes import torch_runtime as rt  # noqa: E402
from trainyard_worker.runtimes.base import (  # noqa: E402
    DATA_ROOT_ENV,
    DEVICE_ENV,
    BaseModelRef,
    ModelMeta,
    TrainRequest,
    TrainResult,
    UserError,
)

SHAPES = ("circles", "squares", "stripes")  # names for write_image_folder's first classes
SEED_PARAMS = {"top_k": 5, "confidence_threshold": 0.8}  # the seed's image inference example
RESNET_HP = {"architecture": "resnet18", "epochs": 4, "batch_size": 16}
# A compact VGG: global pooling and a 64-wide head (torchvision's is 25088->4096->4096).
VGG_HP = {
    "architecture": "vgg11",
    "global_pool": True,
    "classifier_width": 64,
    "dropout": 0.0,
    "learning_rate": 3e-4,
    "batch_size": 8,
    "epochs": 6,
}


@dataclass
class Trained:
    result: TrainResult
    ctx: Recorder
    out_dir: Path
    meta: ModelMeta
    model: Any  # loaded back from out_dir


def _train(
    model_type: str,
    data: Path,
    out: Path,
    hp: dict[str, Any],
    base: BaseModelRef | None = None,
) -> tuple[TrainResult, Recorder]:
    ctx = Recorder()
    request = TrainRequest(
        model_type=model_type, data_file=data, hyperparameters=hp, out_dir=out, base_model=base
    )
    return rt.train(request, ctx), ctx


def _trained(model_type: str, data: Path, out: Path, hp: dict[str, Any]) -> Trained:
    result, ctx = _train(model_type, data, out, hp)
    meta = ModelMeta(f"{model_type}_test", model_type, result.label_names, result.details)
    return Trained(result, ctx, out, meta, rt.load(out, meta))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision") / "data"
    write_cifar10(root / "cifar10")
    write_image_folder(root / "four", CIFAR10_CLASSES[:4], per_class=25, size=32, seed=4)
    return root


@pytest.fixture(scope="module")
def resnet(data_root: Path) -> Trained:
    return _trained("resnet", data_root / "cifar10", data_root.parent / "resnet", RESNET_HP)


@pytest.fixture(scope="module")
def vgg(data_root: Path) -> Trained:
    return _trained("vgg", data_root / "four", data_root.parent / "vgg", VGG_HP)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    """The inference child's environment: CPU, image paths resolve under the data root."""
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    return data_root


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _scores(out: dict[str, Any]) -> dict[str, float]:
    return {item["label"]: item["score"] for item in out["top_k"]}


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_training_learns_and_reports(kind: str, request: pytest.FixtureRequest) -> None:
    trained: Trained = request.getfixturevalue(kind)
    metrics, details = trained.result.metrics, trained.result.details
    assert metrics["train_accuracy"] >= 0.9, metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["n_validation"] > 0  # 20 images a class: a stratified held-out set
    hp = RESNET_HP if kind == "resnet" else VGG_HP
    n_epochs = int(hp["epochs"])
    events = trained.ctx.events
    for event in events:
        assert {"epoch", "epochs", "step", "steps", "loss", "phase", "fraction"} <= event.keys()
        assert event["epochs"] == n_epochs
    # step-level train events: training start, every 10 global steps, every epoch's end
    train = [e for e in events if e["phase"] == "train"]
    assert (train[0]["step"], train[0]["fraction"]) == (0, 0.0)
    steps = train[0]["steps"]
    ends = [e["epoch"] for e in train if e["step"] == steps]
    assert ends == list(range(1, n_epochs + 1))
    for event in train[1:]:
        m = event["metrics"]
        assert set(m) == {"loss", "train_accuracy", "learning_rate", "samples_per_s"}, m
        assert m["learning_rate"] == hp.get("learning_rate", 1e-3) and 0 <= m["train_accuracy"] <= 1
        assert "accuracy" not in m  # training accuracy is train_accuracy, never accuracy
    global_steps = [(e["epoch"] - 1) * steps + e["step"] for e in train]
    assert global_steps == sorted(set(global_steps))
    # one validation event per epoch, on the held-out images, in evaluation mode
    val = [e for e in events if e["phase"] == "val"]
    assert [e["epoch"] for e in val] == list(range(1, n_epochs + 1))
    assert all(set(e["metrics"]) == {"val_loss", "val_accuracy"} for e in val)
    assert val[-1]["metrics"]["val_accuracy"] == pytest.approx(metrics["accuracy"])
    assert val[-1]["metrics"]["val_loss"] == pytest.approx(metrics["val_loss"])
    assert val[-1]["loss"] < val[0]["loss"] * 0.5, [e["loss"] for e in val]  # epoch means
    assert metrics["loss"] == pytest.approx(val[-1]["loss"])
    assert details["architecture"] == hp["architecture"]
    assert details["image_size"] == 32
    assert details["num_classes"] == len(trained.result.label_names)
    assert len(details["normalization"]["mean"]) == len(details["normalization"]["std"]) == 3
    # Only a safetensors file is written: nothing that unpickles.
    assert sorted(p.name for p in trained.out_dir.iterdir()) == ["model.safetensors"]
    assert all(t.is_contiguous() for t in load_file(trained.out_dir / "model.safetensors").values())


def test_labels_are_class_folders(resnet: Trained, vgg: Trained) -> None:
    assert resnet.result.label_names == list(CIFAR10_CLASSES)
    assert vgg.result.label_names == list(CIFAR10_CLASSES[:4])
    assert vgg.result.details["classifier_width"] == 64
    assert vgg.result.details["global_pool"] is True
    head = load_file(vgg.out_dir / "model.safetensors")["classifier.0.weight"]
    assert tuple(head.shape) == (64, 512)  # the compact head, not 25088 -> 4096


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_round_trip_matches_training(
    kind: str, request: pytest.FixtureRequest, served: Path
) -> None:
    trained: Trained = request.getfixturevalue(kind)
    data = served / ("cifar10" if kind == "resnet" else "four")
    paths = sorted(data.glob("*/*.png"))
    inputs = [f"/data/{p.relative_to(served).as_posix()}" for p in paths]
    full = {"top_k": len(trained.meta.label_names)}
    first = rt.predict(trained.model, trained.meta, inputs, full)["predictions"]
    # The loaded model reproduces the trained one: as many images right as training measured.
    m = trained.result.metrics
    expected = round(m["train_accuracy"] * m["n_train"] + m["accuracy"] * m["n_validation"])
    correct = sum(row["label"] == p.parent.name for row, p in zip(first, paths, strict=True))
    assert correct == expected
    # A second, independent load gives identical probabilities.
    again = rt.load(trained.out_dir, trained.meta)
    second = rt.predict(again, trained.meta, inputs, full)["predictions"]
    assert second == first


def test_default_resnet50_trains_a_tiny_epoch(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "tiny", SHAPES[:2], per_class=3, size=32, seed=1)
    result, ctx = _train("resnet", data, tmp_path / "out", {"epochs": 1})
    assert result.details["architecture"] == "resnet50"
    assert result.metrics["n_validation"] == 0  # under 5 images a class: no held-out set
    # `accuracy` is held-out accuracy only: none here
    assert "accuracy" not in result.metrics and 0 <= result.metrics["train_accuracy"] <= 1
    assert [(e["phase"], e["step"]) for e in ctx.events] == [("train", 0), ("train", 1)]
    assert (tmp_path / "out" / "model.safetensors").stat().st_size > 50_000_000  # ~23.5M params


def test_augmented_sgd_training_is_seeded(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "d", SHAPES[:2], per_class=6, size=32, seed=2)
    hp = {
        "architecture": "resnet18",
        "epochs": 2,
        "batch_size": 4,
        "augment": True,
        "optimizer": "sgd",
        "momentum": 0.5,
        "learning_rate": 0.01,
        "weight_decay": 1e-4,
        "validation_split": 0,
    }
    runs = [
        _train("resnet", data, tmp_path / f"o{i}", {**hp, "seed": s})
        for i, s in enumerate((7, 7, 8))
    ]
    losses = [[e["loss"] for e in ctx.events] for _, ctx in runs]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]
    assert runs[0][0].details["augment"] is True and runs[0][0].details["optimizer"] == "sgd"


def test_fine_tune_from_base_model(resnet: Trained, tmp_path: Path, served: Path) -> None:
    data = write_image_folder(tmp_path / "shapes", SHAPES[:3], per_class=16, size=32, seed=5)
    base = BaseModelRef(resnet.out_dir, resnet.meta)
    # The smallest learning rate: the result must stay next to the base model's weights.
    hp = {"epochs": 1, "batch_size": 2, "learning_rate": 1e-7}
    result, ctx = _train("resnet", data, tmp_path / "ft", hp, base=base)
    assert result.details["architecture"] == "resnet18"  # inherited from the base model
    assert result.details["num_classes"] == 3
    assert result.details["base_model_id"] == resnet.meta.model_id
    assert result.details["normalization"] == resnet.result.details["normalization"]
    assert any("replacing the final layer" in line for line in ctx.lines), ctx.lines
    assert any(e["step"] == 10 and e["steps"] > 10 for e in ctx.events)  # every 10 steps
    tuned = load_file(tmp_path / "ft" / "model.safetensors")
    base_weights = load_file(resnet.out_dir / "model.safetensors")
    assert torch.allclose(tuned["conv1.weight"], base_weights["conv1.weight"], atol=1e-4)
    assert tuple(tuned["fc.weight"].shape) == (3, 512)
    meta = ModelMeta("ft", "resnet", result.label_names, result.details)
    out = rt.predict(rt.load(tmp_path / "ft", meta), meta, _b64(data / "circles" / "0.png"), {})
    assert {item["label"] for item in out["top_k"]} == set(SHAPES[:3])


def test_fine_tune_refuses_conflicts(resnet: Trained, vgg: Trained, data_root: Path) -> None:
    base = BaseModelRef(vgg.out_dir, vgg.meta)
    with pytest.raises(UserError, match="only be fine-tuned from a resnet model"):
        _train("resnet", data_root / "four", data_root / "x", {"epochs": 1}, base=base)
    base = BaseModelRef(resnet.out_dir, resnet.meta)
    with pytest.raises(UserError, match="architecture is 'resnet34' but base model"):
        _train("resnet", data_root / "four", data_root / "x", {"architecture": "resnet34"}, base)


# ------------------------------------------------------------------------------ predict


def test_predict_seed_example_parameters(resnet: Trained, served: Path) -> None:
    full = rt.predict(resnet.model, resnet.meta, "/data/cifar10/cat/0.png", {"top_k": 10})
    assert len(full["top_k"]) == 10
    assert sum(item["score"] for item in full["top_k"]) == pytest.approx(1.0, abs=1e-4)
    out = rt.predict(resnet.model, resnet.meta, "/data/cifar10/cat/0.png", SEED_PARAMS)
    kept = [item for item in full["top_k"][:5] if item["score"] >= 0.8]
    assert out["top_k"] == kept
    assert out["prediction"] == (kept[0]["label"] if kept else None)
    # Most cat images are called cats.
    cats = [f"/data/cifar10/cat/{i}.png" for i in range(20)]
    rows = rt.predict(resnet.model, resnet.meta, cats, {"top_k": 1})["predictions"]
    assert sum(row["label"] == "cat" for row in rows) >= 16


def test_predict_base64_and_list(resnet: Trained, served: Path) -> None:
    path = served / "cifar10" / "dog" / "3.png"
    by_path = rt.predict(resnet.model, resnet.meta, "/data/cifar10/dog/3.png", {})
    by_b64 = rt.predict(resnet.model, resnet.meta, _b64(path), {})
    by_url = rt.predict(resnet.model, resnet.meta, "data:image/png;base64," + _b64(path), {})
    assert by_path == by_b64 == by_url
    assert len(by_path["top_k"]) == 5  # the default: five classes
    batch = ["/data/cifar10/dog/3.png", _b64(served / "cifar10" / "ship" / "1.png")]
    rows = rt.predict(resnet.model, resnet.meta, batch, {"top_k": 2})["predictions"]
    assert len(rows) == 2
    # Batched and single runs agree up to float rounding.
    assert [i["label"] for i in rows[0]["top_k"]] == [i["label"] for i in by_path["top_k"][:2]]
    assert [i["score"] for i in rows[0]["top_k"]] == pytest.approx(
        [i["score"] for i in by_path["top_k"][:2]], abs=1e-5
    )
    assert rows[0]["label"] == by_path["prediction"]
    assert all(len(row["top_k"]) == 2 for row in rows)


def test_top_k_and_threshold(resnet: Trained, served: Path) -> None:
    one = "/data/cifar10/frog/2.png"
    assert len(rt.predict(resnet.model, resnet.meta, one, {"top_k": 3})["top_k"]) == 3
    assert len(rt.predict(resnet.model, resnet.meta, one, {"top_k": 100})["top_k"]) == 10
    # The least confident of the frogs: a threshold above its best score keeps nothing.
    frogs = [f"/data/cifar10/frog/{i}.png" for i in range(20)]
    rows = rt.predict(resnet.model, resnet.meta, frogs, {"top_k": 1})["predictions"]
    index = min(range(20), key=lambda i: rows[i]["top_k"][0]["score"])
    best = rows[index]["top_k"][0]["score"]
    assert best < 1.0
    above = rt.predict(
        resnet.model, resnet.meta, frogs[index], {"confidence_threshold": (best + 1) / 2}
    )
    assert above == {"prediction": None, "top_k": []}
    below = rt.predict(
        resnet.model, resnet.meta, frogs[index], {"confidence_threshold": best * 0.99}
    )
    assert below["prediction"] == rows[index]["label"]
    assert [item["label"] for item in below["top_k"]] == [rows[index]["label"]]


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_predict_many_is_one_batch_with_predicts_answers(
    kind: str, request: pytest.FixtureRequest, served: Path
) -> None:
    trained: Trained = request.getfixturevalue(kind)
    model, meta = trained.model, trained.meta
    assert load_runtime_module("pytorch").predict_many is rt.predict_many
    folder = "cifar10/cat" if kind == "resnet" else "four/bird"
    images = [f"/data/{folder}/{i}.png" for i in range(6)]
    inputs: list[Any] = [
        images[0], images[1:3], "/data/cifar10/cat/999.png", _b64(served / folder / "3.png"),
        [images[4], "hello there"], "This is a great product!", [images[5]],
    ]  # fmt: skip
    calls: list[int] = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for parameters in ({}, {"top_k": 1}, {"top_k": 2, "confidence_threshold": 0.3}):
            calls.clear()
            many = rt.predict_many(model, meta, inputs, parameters)
            assert len(calls) == 1  # five images of four jobs: one batch
            assert [i for i, r in enumerate(many) if isinstance(r, UserError)] == [2, 4, 5]
            assert_many_matches_predict(rt, model, meta, inputs, parameters)
            first = many[0]
            assert isinstance(first, dict)
            assert len(first["top_k"]) <= parameters.get("top_k", 5)
    finally:
        hook.remove()
    assert "input_data[1] looks like text" in str(many[4])  # indexed within its own job
    assert rt.predict_many(model, meta, [], {}) == []
    with pytest.raises(UserError, match="top_k must be a positive integer"):
        rt.predict_many(model, meta, inputs, {"top_k": 0})  # shared: fails the call


@pytest.mark.parametrize(
    ("input_data", "parameters", "message"),
    [
        ("aGVsbG8gd29ybGQ=", {}, r"input_data \(base64\) is not a readable image"),
        ("/etc/passwd", {}, "must start with /data/"),
        ("../x", {}, r"must not contain '\.\.'"),
        ("/data/cifar10/cat/999.png", {}, "does not exist"),
        ("This is a great product!", {}, "looks like text.*expects an image.*base64"),
        (["/data/cifar10/cat/0.png", "hello there"], {}, r"input_data\[1\] looks like text"),
        ([], {}, "non-empty list"),
        ("/data/cifar10/cat/0.png", {"temperature": 0.7}, "unknown prediction parameter"),
        ("/data/cifar10/cat/0.png", {"top_k": 0}, "top_k must be a positive integer"),
        ("/data/cifar10/cat/0.png", {"confidence_threshold": 2}, "confidence_threshold"),
    ],
)
def test_predict_rejects_bad_input(
    resnet: Trained, served: Path, input_data: Any, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        rt.predict(resnet.model, resnet.meta, input_data, parameters)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_load_on_missing_gpu_is_not_a_cpu_fallback(
    resnet: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        rt.load(resnet.out_dir, resnet.meta)


# ---------------------------------------------------------------------- bad training input


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    write_image_folder(root / "one", ["only"], per_class=3, size=32, seed=1)
    corrupt = write_image_folder(root / "corrupt", SHAPES[:2], per_class=3, size=32, seed=1)
    (corrupt / "squares" / "1.png").write_bytes(b"this is not a png")
    write_image_folder(root / "ok", SHAPES[:2], per_class=3, size=32, seed=1)
    return root


@pytest.mark.parametrize(
    ("model_type", "folder", "hp", "message"),
    [
        ("resnet", "ok/circles/0.png", {}, "is a file"),
        ("resnet", "one", {}, "only one class folder"),
        ("resnet", "corrupt", {}, r"squares/1\.png is not a readable image"),
        ("resnet", "ok", {"num_classes": 1000}, "num_classes is 1000 but data_path has 2"),
        ("resnet", "ok", {"image_size": 8}, "image_size must be between 32 and 512, got 8"),
        ("vgg", "ok", {"image_size": 100000}, "image_size must be between 32 and 512"),
        ("resnet", "ok", {"batch_size": 0}, "batch_size must be between 1 and 4096, got 0"),
        ("resnet", "ok", {"batch_size": 1, "architecture": "resnet18"}, "at least 2"),
        ("resnet", "ok", {"architecture": "resnet9000"}, "architecture must be one of resnet18"),
        ("vgg", "ok", {"architecture": "resnet18"}, "architecture must be one of vgg11"),
        ("resnet", "ok", {"dropout_rate": 0.2}, "unknown hyperparameter.*dropout_rate.*accepted"),
        ("resnet", "ok", {"global_pool": True}, "unknown hyperparameter.*global_pool"),
        ("vgg", "ok", {"classifier_width": 8}, "classifier_width must be between 16 and 4096"),
        ("vgg", "ok", {"global_pool": "yes"}, "global_pool must be true or false"),
        ("resnet", "ok", {"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
        ("resnet", "ok", {"momentum": 0.5}, "momentum applies only to optimizer 'sgd'"),
        ("resnet", "ok", {"learning_rate": 0}, "learning_rate must be between"),
        ("resnet", "ok", {"epochs": 2.5}, "epochs must be an integer"),
        ("resnet", "ok", {"validation_split": 0.9}, "validation_split must be between 0 and 0.5"),
    ],
)
def test_training_rejects_bad_input(
    bad_data: Path, tmp_path: Path, model_type: str, folder: str, hp: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _train(model_type, bad_data / folder, tmp_path / "out", hp)
