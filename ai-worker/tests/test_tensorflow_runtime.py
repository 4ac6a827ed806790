"""Real training/serving tests for the TensorFlow runtime: InceptionV3 and MobileNet built
from their architecture (no downloaded weights) and trained on generated images, with no
queue and no Redis. Trained models are shared through module-scoped fixtures."""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from predict_many_support import assert_many_matches_predict
from runtime_support import Recorder, require_framework

from trainyard.sample_images import encode_png, write_cifar10, write_image_folder
from trainyard_worker.runtimes.base import (
    DATA_ROOT_ENV,
    BaseModelRef,
    ModelMeta,
    TrainRequest,
    TrainResult,
    UserError,
)

tf = require_framework("tensorflow")
keras = require_framework("keras")

# Imported once the framework is known to be there (imagedata needs Pillow, which only the
# image runtimes' environments install).
from trainyard_worker.runtimes import imagedata, load_runtime_module  # noqa: E402
from trainyard_worker.runtimes import tensorflow_runtime as rt  # noqa: E402

# Keras converts TF tensors with np.array(copy=False), which NumPy 2 deprecates: not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# The first four CIFAR-10 classes, so that the seed's "/data/cifar10/cat/0.png" is an
# image of a class these models know (the generator gives class i the same look in both).
CLASSES = ("airplane", "automobile", "bird", "cat")
SEED_IMAGE_PARAMS = {"top_k": 5, "confidence_threshold": 0.8}
# Small but real: 40 images, 8 held out for validation, one full batch per epoch (eager).
# MobileNetV2 at 32 px memorises 32 images long before it generalises with Adam at 1e-3
# (training accuracy 1.0, new images ~0.45); SGD at 0.03 learns the classes (measured over
# seeds: training accuracy 0.97-1.0, new images 0.78-0.95).
MOBILENET_HP = {
    "epochs": 12,
    "batch_size": 32,
    "optimizer": "sgd",
    "learning_rate": 0.03,
    "dropout_rate": 0.3,
}
INCEPTION_HP = {"epochs": 6, "batch_size": 32, "learning_rate": 1e-3, "dropout_rate": 0.2}


@dataclass
class Trained:
    result: TrainResult
    ctx: Recorder
    out_dir: Path
    seconds: float
    hp: dict[str, Any]
    model_type: str

    @property
    def meta(self) -> ModelMeta:
        return ModelMeta(
            model_id=f"{self.model_type}-test",
            model_type=self.model_type,
            label_names=self.result.label_names,
            details=self.result.details,
        )


def _train(
    model_type: str, data: Path, out: Path, hp: dict[str, Any], **request: Any
) -> tuple[TrainResult, Recorder]:
    ctx = Recorder()
    req = TrainRequest(
        model_type=model_type, data_file=data, hyperparameters=dict(hp), out_dir=out, **request
    )
    return rt.train(req, ctx), ctx


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf") / "data"
    write_image_folder(root / "cifar4", CLASSES, per_class=10, size=32, seed=10)
    write_cifar10(root / "cifar10")
    return root


@pytest.fixture(autouse=True)
def _data_root_env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    yield


def _trained(model_type: str, hp: dict[str, Any], data_root: Path, out: Path) -> Trained:
    start = time.perf_counter()
    result, ctx = _train(model_type, data_root / "cifar4", out, hp)
    return Trained(result, ctx, out, time.perf_counter() - start, hp, model_type)


@pytest.fixture(scope="module")
def mobilenet(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _trained("mobilenet", MOBILENET_HP, data_root, tmp_path_factory.mktemp("mobilenet"))


@pytest.fixture(scope="module")
def inception(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _trained("inception", INCEPTION_HP, data_root, tmp_path_factory.mktemp("inception"))


@pytest.fixture(scope="module", params=["mobilenet", "inception"])
def trained(request: pytest.FixtureRequest) -> Trained:
    value: Trained = request.getfixturevalue(request.param)
    return value


@pytest.fixture(scope="module")
def loaded(trained: Trained) -> Any:
    return rt.load(trained.out_dir, trained.meta)


@pytest.fixture(scope="module")
def mobilenet_model(mobilenet: Trained) -> Any:
    return rt.load(mobilenet.out_dir, mobilenet.meta)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# ------------------------------------------------------------------------ training


def test_threads_follow_omp_num_threads() -> None:
    # conftest sets OMP_NUM_THREADS=1 unless the caller set it
    assert tf.config.threading.get_intra_op_parallelism_threads() == int(
        os.environ["OMP_NUM_THREADS"]
    )
    assert tf.config.threading.get_inter_op_parallelism_threads() == 1


def test_training_reaches_high_accuracy(trained: Trained) -> None:
    metrics = trained.result.metrics
    print(f"{trained.model_type}: {trained.seconds:.1f} s, metrics {metrics}")
    assert metrics["train_accuracy"] >= 0.9
    assert metrics["n_train"] == 32 and metrics["n_val"] == 8
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    assert trained.result.label_names == list(CLASSES)
    details = trained.result.details
    expected = ("mobilenet_v2", 32) if trained.model_type == "mobilenet" else ("inception_v3", 75)
    assert (details["architecture"], details["image_size"]) == expected
    assert details["run_eagerly"] is True  # "auto" with 6-12 steps in all: eager
    assert (trained.out_dir / "model.keras").is_file()


def test_progress_events_and_the_loss_goes_down(trained: Trained) -> None:
    events = trained.ctx.events
    epochs = trained.hp["epochs"]
    assert (events[0]["phase"], events[0]["step"], events[0]["fraction"]) == ("train", 0, 0.0)
    # one step an epoch: its train event, then the epoch's validation event
    assert [(e["epoch"], e["phase"]) for e in events[1:]] == [
        (epoch, phase) for epoch in range(1, epochs + 1) for phase in ("train", "val")
    ]
    for event in events[1:]:
        assert event["epochs"] == epochs
        assert event["step"] == event["steps"] == 1
        assert event["fraction"] == pytest.approx(event["epoch"] / epochs, abs=1e-6)
        assert math.isfinite(event["loss"])
    train = [e for e in events[1:] if e["phase"] == "train"]
    val = [e for e in events if e["phase"] == "val"]
    for event in train:
        assert set(event["metrics"]) == {"loss", "train_accuracy", "learning_rate", "samples_per_s"}
        assert event["metrics"]["learning_rate"] == pytest.approx(trained.hp["learning_rate"])
    for event in val:
        assert set(event["metrics"]) == {"val_loss", "val_accuracy"}
    # one 32-image batch an epoch: Keras's running mean is that batch's loss
    assert val[-1]["loss"] == pytest.approx(train[-1]["metrics"]["loss"], rel=1e-5)
    assert val[-1]["loss"] < val[0]["loss"] / 2


def test_validation_curve_ends_at_the_saved_models_accuracy(trained: Trained) -> None:
    # Validation runs after the BN statistics are recalibrated, as they are before saving:
    # the last epoch's numbers are the saved model's (Keras's own val_accuracy read chance).
    val = [e for e in trained.ctx.events if e["phase"] == "val"]
    metrics = trained.result.metrics
    assert val[-1]["metrics"]["val_accuracy"] == pytest.approx(metrics["accuracy"])
    assert val[-1]["metrics"]["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert metrics["loss"] == metrics["train_loss"]  # `loss` is the training loss


def test_dropout_rate_is_honoured(trained: Trained, loaded: Any) -> None:
    assert loaded.get_layer("dropout").rate == pytest.approx(trained.hp["dropout_rate"])


def test_save_load_round_trip_gives_identical_probabilities(
    trained: Trained, loaded: Any, data_root: Path
) -> None:
    # The training loss in the metrics came from the in-memory model on the training
    # images; the loaded model must give the same numbers.
    folder = imagedata.scan_image_folder(data_root / "cifar4")
    images = imagedata.load_images(folder, trained.result.details["image_size"])
    train_idx, _, _ = rt._split(folder.labels, 0.2, 42)
    probs = rt._probabilities(loaded, images[train_idx])
    assert rt._cross_entropy(probs, folder.labels[train_idx]) == pytest.approx(
        trained.result.metrics["train_loss"], rel=1e-5, abs=1e-7
    )
    again = rt.load(trained.out_dir, trained.meta)
    np.testing.assert_array_equal(
        rt._probabilities(again, images), rt._probabilities(loaded, images)
    )


def test_fine_tuning_starts_from_the_base_model(
    mobilenet: Trained, data_root: Path, tmp_path: Path
) -> None:
    base = BaseModelRef(model_dir=mobilenet.out_dir, meta=mobilenet.meta)
    hp = {"epochs": 1, "learning_rate": 1e-7}  # the base's split: the same 32 images
    result, ctx = _train("mobilenet", data_root / "cifar4", tmp_path, hp, base_model=base)
    # one step at a negligible learning rate: only the carried-over weights can score
    assert result.metrics["train_accuracy"] >= 0.9
    assert result.details["image_size"] == 32
    assert any("fine-tuning from model" in line for line in ctx.lines)
    with pytest.raises(UserError, match=r"hyperparameters\.image_size is 64 but base model"):
        _train(
            "mobilenet", data_root / "cifar4", tmp_path, {**hp, "image_size": 64}, base_model=base
        )


def test_graph_mode_with_augmentation(data_root: Path, tmp_path: Path) -> None:
    hp = {
        "architecture": "mobilenet",
        "epochs": 2,
        "batch_size": 16,
        "run_eagerly": False,
        "augment": True,
        "validation_split": 0,
        "optimizer": "sgd",
        "learning_rate": 0.01,
    }
    result, ctx = _train("mobilenet", data_root / "cifar4", tmp_path, hp)
    assert result.details["run_eagerly"] is False
    assert result.details["architecture"] == "mobilenet"
    ends = [e for e in ctx.events if e["step"] == e["steps"]]
    assert [(e["epoch"], e["phase"]) for e in ends] == [(1, "train"), (2, "train")]
    assert ends[0]["steps"] == 3
    # no held-out images: no validation events and no `accuracy`, only train_accuracy
    assert "accuracy" not in result.metrics and "val_loss" not in result.metrics
    assert 0 <= result.metrics["train_accuracy"] <= 1
    model = rt.load(tmp_path, ModelMeta("m", "mobilenet", result.label_names, result.details))
    assert model.get_layer("augment_flip") is not None
    # augmentation is active only in training: inference is deterministic
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(rt._probabilities(model, x), rt._probabilities(model, x))


def test_graph_mode_validation_through_traced_passes(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long graph-mode runs recalibrate through a traced forward pass and validate through
    # Keras's traced predict loop; make this short run take those paths.
    from trainyard_worker.runtimes import tensorflow_progress

    monkeypatch.setattr(tensorflow_progress, "EAGER_MAX_CALLS", 0)
    hp = {"architecture": "mobilenet", "epochs": 2, "batch_size": 16, "run_eagerly": False,
          "optimizer": "sgd", "learning_rate": 0.03}  # fmt: skip
    result, ctx = _train("mobilenet", data_root / "cifar4", tmp_path, hp)
    assert result.details["run_eagerly"] is False
    val = [e for e in ctx.events if e["phase"] == "val"]
    assert [e["epoch"] for e in val] == [1, 2]
    # the traced predict loop and the eager serving path agree on the saved model
    assert val[-1]["metrics"]["val_accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert val[-1]["metrics"]["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-3)


@pytest.mark.parametrize("architecture", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_mobilenet_v3_takes_the_same_input_and_round_trips(
    architecture: str, tmp_path: Path
) -> None:
    hp = {"architecture": architecture}
    cfg = rt._parse_config("mobilenet", hp)
    model = rt._build_model(cfg, rt.MIN_IMAGE_SIZE[architecture], 3, mixed=False)
    # v3's own [0, 255] preprocessing is off: the model's one Rescaling maps [0, 1] to [-1, 1]
    backbone = model.get_layer("backbone")
    assert not [layer for layer in backbone.layers if isinstance(layer, keras.layers.Rescaling)]
    rescale = model.get_layer("rescale")
    assert (float(rescale.scale), float(rescale.offset)) == (2.0, -1.0)
    model.save(tmp_path / "model.keras")
    again = rt.load(tmp_path, ModelMeta("m", "mobilenet", ["a", "b", "c"], {}))
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(rt._probabilities(again, x), rt._probabilities(model, x))


def test_auto_picks_eager_only_for_short_trainings() -> None:
    assert rt._pick_eager(None, "inception_v3", 20) is True
    assert rt._pick_eager(None, "inception_v3", 21) is False
    assert rt._pick_eager(None, "mobilenet_v2", 100) is False
    assert rt._pick_eager(True, "mobilenet_v2", 1000) is True
    assert rt._pick_eager(False, "mobilenet_v2", 1) is False


def test_validation_split_is_stratified_and_skipped_for_small_classes() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train_idx, val_idx, _ = rt._split(labels, 0.2, 1)
    assert np.bincount(labels[val_idx]).tolist() == [2, 4, 1]
    assert sorted([*train_idx, *val_idx]) == list(range(len(labels)))
    small = np.repeat(np.arange(2), [10, 4])
    train_idx, val_idx, note = rt._split(small, 0.2, 1)
    assert len(val_idx) == 0 and len(train_idx) == 14 and "only 4 images" in note


def test_a_nan_loss_stops_training_and_names_the_learning_rate() -> None:
    # With batch norm everywhere a real NaN is hard to provoke on CPU; drive the callback
    # with the logs Keras would hand it (running means over the epoch's samples).
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    ctx = Recorder()
    callback = rt.KerasProgress(ctx, epochs=3, steps=20, n_train=640, batch_size=32)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in range(10):  # batch i's own loss is i: the running mean is i / 2
        callback.on_train_batch_end(batch, {"loss": batch / 2, "accuracy": 0.5})
    start, tenth = ctx.events
    assert start["step"] == 0 and start["metrics"] is None
    assert {k: tenth[k] for k in ("epoch", "epochs", "step", "steps", "phase")} == {
        "epoch": 1, "epochs": 3, "step": 10, "steps": 20, "phase": "train",
    }  # fmt: skip
    metrics = tenth["metrics"]
    assert metrics["loss"] == pytest.approx(4.5) and metrics["train_accuracy"] == 0.5
    assert metrics["learning_rate"] == pytest.approx(0.05)
    callback.on_train_batch_end(10, {"loss": float("nan")})
    assert model.stop_training is True
    assert callback.diverged == "the loss became nan at epoch 1 step 11"
    callback.on_epoch_end(0, {"loss": float("nan"), "accuracy": 0.1})
    assert len(ctx.events) == 2


# ------------------------------------------------------------------------ predict


def test_predict_the_seed_example_on_a_data_root_path(
    trained: Trained, loaded: Any, data_root: Path
) -> None:
    out = rt.predict(loaded, trained.meta, "/data/cifar10/cat/0.png", dict(SEED_IMAGE_PARAMS))
    assert set(out) == {"prediction", "top_k"}
    assert len(out["top_k"]) <= 1  # 0.8 leaves room for one class at most
    assert all(t["score"] >= 0.8 for t in out["top_k"])
    assert out["prediction"] == (out["top_k"][0]["label"] if out["top_k"] else None)
    # the path resolved to the right file: the same answer as for its bytes
    as_b64 = _b64(data_root / "cifar10" / "cat" / "0.png")
    assert rt.predict(loaded, trained.meta, as_b64, dict(SEED_IMAGE_PARAMS)) == out
    ranked = rt.predict(loaded, trained.meta, "/data/cifar10/cat/0.png", {})["top_k"]
    if ranked[0]["score"] >= 0.8:
        assert out["top_k"] == ranked[:1]
    else:
        assert out["prediction"] is None


def test_the_models_recognise_images_they_never_saw(trained: Trained, loaded: Any) -> None:
    # The CIFAR-10-shaped sample's images of the same four classes (another random draw)
    paths = [f"/data/cifar10/{name}/{i}.png" for name in CLASSES for i in range(20)]
    out = rt.predict(loaded, trained.meta, paths, {"top_k": 1})
    predicted = [p["label"] for p in out["predictions"]]
    truth = [name for name in CLASSES for _ in range(20)]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    print(f"{trained.model_type}: accuracy on unseen images {accuracy:.3f}")
    assert accuracy >= 0.7


def test_predict_base64_and_a_list(trained: Trained, loaded: Any, data_root: Path) -> None:
    path = data_root / "cifar10" / "bird" / "3.png"
    by_path = rt.predict(loaded, trained.meta, "/data/cifar10/bird/3.png", {})
    by_b64 = rt.predict(loaded, trained.meta, _b64(path), {})
    assert by_b64 == by_path
    assert len(by_path["top_k"]) == 4  # default top_k: min(5, classes)
    assert abs(sum(t["score"] for t in by_path["top_k"]) - 1) < 1e-4
    url = "data:image/png;base64," + _b64(data_root / "cifar10" / "airplane" / "5.png")
    batch = rt.predict(loaded, trained.meta, ["/data/cifar10/bird/3.png", url], {"top_k": 2})
    assert [len(p["top_k"]) for p in batch["predictions"]] == [2, 2]
    first = batch["predictions"][0]["top_k"]  # a batch of two: float rounding may differ
    assert [t["label"] for t in first] == [t["label"] for t in by_path["top_k"][:2]]
    assert [t["score"] for t in first] == pytest.approx(
        [t["score"] for t in by_path["top_k"][:2]], rel=1e-4, abs=1e-6
    )
    # The data URL decodes to the same image as its path: the same answer. (Which class one
    # image gets depends on the training run; accuracy is checked above, not here.)
    alone = rt.predict(loaded, trained.meta, "/data/cifar10/airplane/5.png", {"top_k": 2})
    assert batch["predictions"][1]["label"] == alone["prediction"]


def test_top_k_and_confidence_threshold(trained: Trained, loaded: Any) -> None:
    grey = encode_png(32, 32, bytes([128]) * (32 * 32 * 3))  # no class's signature
    item = base64.b64encode(grey).decode()
    full = rt.predict(loaded, trained.meta, item, {"top_k": 3, "confidence_threshold": 0})
    scores = [t["score"] for t in full["top_k"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    top = scores[0]
    assert top < 1.0
    above = rt.predict(loaded, trained.meta, item, {"confidence_threshold": (top + 1) / 2})
    assert above == {"prediction": None, "top_k": []}


def test_predict_many_is_one_batch_with_predicts_answers(
    trained: Trained, loaded: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = trained.meta
    assert load_runtime_module("tensorflow").predict_many is rt.predict_many
    images = [f"/data/cifar10/bird/{i}.png" for i in range(6)]
    inputs: list[Any] = [
        images[0], images[1:3], "/data/cifar10/cat/999.png", _b64(data_root / "cifar4/cat/3.png"),
        [images[4], "/etc/hosts.png"], [], [images[5]],
    ]  # fmt: skip
    batches: list[int] = []
    real = rt._probabilities

    def counted(model: Any, x: Any) -> Any:
        batches.append(len(x))
        return real(model, x)

    monkeypatch.setattr(rt, "_probabilities", counted)
    for parameters in ({}, {"top_k": 1}, {"top_k": 2, "confidence_threshold": 0.3}):
        batches.clear()
        many = rt.predict_many(loaded, meta, inputs, parameters)
        assert batches == [5]  # five images of four jobs: one batch
        assert [i for i, r in enumerate(many) if isinstance(r, UserError)] == [2, 4, 5]
        assert_many_matches_predict(rt, loaded, meta, inputs, parameters)
        first = many[0]
        assert isinstance(first, dict)
        assert len(first["top_k"]) <= parameters.get("top_k", 4)
    assert str(many[4]).startswith("input_data[1]: absolute image path must start with /data/")
    assert rt.predict_many(loaded, meta, [], {}) == []
    with pytest.raises(UserError, match=r"parameters\.top_k"):
        rt.predict_many(loaded, meta, inputs, {"top_k": 0})  # shared: fails the call


@pytest.mark.parametrize(
    ("input_data", "parameters", "message"),
    [
        (base64.b64encode(b"definitely not a png").decode(), {}, "not a readable image"),
        ("/data/../etc/passwd.png", {}, "must not contain '..'"),
        ("/etc/hosts.png", {}, "must start with /data/"),
        ("This is a great product!", {}, "input_data"),
        ([], {}, "non-empty list"),
        ("/data/cifar10/cat/0.png", {"temperature": 0.7}, "accepted: top_k"),
        ("/data/cifar10/cat/0.png", {"top_k": 0}, "parameters.top_k"),
    ],
)
def test_bad_prediction_inputs_are_user_errors(
    mobilenet: Trained,
    mobilenet_model: Any,
    input_data: Any,
    parameters: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(UserError, match=message):
        rt.predict(mobilenet_model, mobilenet.meta, input_data, parameters)


# ------------------------------------------------------------------------ bad training input


@pytest.fixture
def one_class(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "one", ["only"], per_class=3, size=8, seed=1)


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    root = write_image_folder(tmp_path / "corrupt", ["a", "b"], per_class=3, size=8, seed=1)
    (root / "b" / "9.png").write_bytes(b"\x89PNG but not really")
    return root


@pytest.mark.parametrize(
    ("model_type", "data", "hp", "message"),
    [
        ("mobilenet", "file", {}, "is a file"),
        ("mobilenet", "one_class", {}, "only one class folder"),
        ("mobilenet", "corrupt", {}, r"image b/9\.png is not a readable image"),
        ("mobilenet", "cifar4", {"num_classes": 10}, "num_classes is 10 but data_path has 4"),
        ("inception", "cifar4", {"image_size": 32}, "between 75 and 512, got 32.*at least 75"),
        (
            "inception",
            "cifar4",
            {"dropout_rate": 2},
            r"^hyperparameters\.dropout_rate must be between 0 and 0\.95, got 2$",
        ),
        ("mobilenet", "cifar4", {"batch_size": 0}, "batch_size must be between 1 and 4096, got 0"),
        ("mobilenet", "cifar4", {"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ("mobilenet", "cifar4", {"max_depth": 3}, "unknown hyperparameter.*max_depth.*accepted:"),
        ("mobilenet", "cifar4", {"architecture": "resnet50"}, "architecture must be one of"),
        ("inception", "cifar4", {"optimizer": "adagrad"}, "optimizer must be one of adam"),
        ("mobilenet", "cifar4", {"run_eagerly": "yes"}, "run_eagerly must be true, false"),
        ("mobilenet", "cifar4", {"augment": "yes"}, "augment must be true or false"),
        ("mobilenet", "cifar4", {"validation_split": 0.9}, "validation_split must be between"),
        ("vgg", "cifar4", {}, "unknown model_type 'vgg'"),
    ],
)
def test_bad_training_input_is_a_user_error(
    request: pytest.FixtureRequest,
    data_root: Path,
    tmp_path: Path,
    model_type: str,
    data: str,
    hp: dict[str, Any],
    message: str,
) -> None:
    if data == "file":
        path = data_root / "cifar4" / "cat" / "0.png"
    elif data == "cifar4":
        path = data_root / "cifar4"
    else:
        path = request.getfixturevalue(data)
    with pytest.raises(UserError, match=message):
        _train(model_type, path, tmp_path / "out", hp)
    assert not (tmp_path / "out" / "model.keras").exists()


def test_a_gpu_job_without_a_gpu_is_a_crash_not_a_cpu_run(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="TensorFlow sees none"):
        _train("mobilenet", data_root / "cifar4", tmp_path, {"epochs": 1}, device="cuda")
    assert not (tmp_path / "model.keras").exists()
