"""Real training/serving tests for the scikit-learn runtime (no queue, no Redis)."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from predict_many_support import assert_many_matches_predict

from trainyard.sample_data import TABULAR_CLASSES, ensure_samples, write_tabular
from trainyard_worker.runtimes import load_runtime_module
from trainyard_worker.runtimes import sklearn_runtime as rt
from trainyard_worker.runtimes.base import (
    ModelMeta,
    TrainRequest,
    TrainResult,
    UserError,
)

RF_PARAMS = {
    "n_estimators": 100,
    "max_depth": 10,
    "min_samples_split": 5,
    "random_state": 42,
}


class Recorder:
    """A fake TrainContext that keeps what the runtime reports."""

    def __init__(self) -> None:
        self.progress_calls: list[dict[str, Any]] = []
        self.lines: list[str] = []

    def progress(self, **kwargs: Any) -> None:
        self.progress_calls.append(kwargs)

    def log(self, line: str) -> None:
        self.lines.append(line)


def _train(
    data: Path,
    out: Path,
    model_type: str = "random_forest",
    hp: dict[str, Any] | None = None,
    label_column: str | None = None,
) -> tuple[TrainResult, Recorder]:
    ctx = Recorder()
    req = TrainRequest(
        model_type=model_type,
        data_file=data,
        hyperparameters=dict(RF_PARAMS if hp is None else hp),
        out_dir=out,
        label_column=label_column,
    )
    return rt.train(req, ctx), ctx


def _meta(model_type: str, result: TrainResult) -> ModelMeta:
    return ModelMeta(
        model_id="m1",
        model_type=model_type,
        label_names=result.label_names,
        details=result.details,
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tabular(tmp_path_factory.mktemp("data") / "tabular_data.csv")


@pytest.fixture(scope="module", params=["random_forest", "svm"])
def trained(
    request: pytest.FixtureRequest, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, TrainResult, Recorder]:
    out = tmp_path_factory.mktemp(request.param)
    hp = (
        RF_PARAMS
        if request.param == "random_forest"
        else {"C": 1.0, "kernel": "rbf", "random_state": 0}
    )
    result, ctx = _train(data, out, request.param, hp)
    return request.param, out, result, ctx


# ------------------------------------------------------------------ sample data


def test_sample_data_is_deterministic_and_ensure_is_idempotent(tmp_path: Path) -> None:
    a = write_tabular(tmp_path / "a.csv", rows=30, seed=3)
    b = write_tabular(tmp_path / "b.csv", rows=30, seed=3)
    assert a.read_text() == b.read_text()
    lines = a.read_text().splitlines()
    assert lines[0] == "feature1,feature2,feature3,feature4,label"
    assert len(lines) == 31
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} == set(TABULAR_CLASSES)
    assert tmp_path / "root" / "tabular_data.csv" in ensure_samples(tmp_path / "root")
    assert ensure_samples(tmp_path / "root") == []


# ------------------------------------------------------------------ training


def test_train_reaches_accuracy_and_reports(
    trained: tuple[str, Path, TrainResult, Recorder],
) -> None:
    model_type, out, result, ctx = trained
    assert result.metrics["accuracy"] >= 0.9, result.metrics
    assert result.metrics["train_accuracy"] >= 0.9
    assert result.metrics["n_train"] == 480 and result.metrics["n_test"] == 120
    assert 0 <= result.metrics["log_loss"] < 1
    assert result.label_names == sorted(TABULAR_CLASSES)
    d = result.details
    assert d["feature_names"] == ["feature1", "feature2", "feature3", "feature4"]
    assert d["label_column"] == "label" and d["n_features"] == 4
    assert d["estimator"] == ("RandomForestClassifier" if model_type == "random_forest" else "SVC")
    json.dumps(d)  # the registry stores it as JSON
    json.dumps(result.metrics)
    assert (out / "model.skops").is_file()
    assert ctx.progress_calls[-1]["epoch"] == 1 and ctx.progress_calls[-1]["epochs"] == 1
    assert ctx.lines


def test_progress_reports_held_out_metrics_and_forest_batches(
    trained: tuple[str, Path, TrainResult, Recorder],
) -> None:
    model_type, _, result, ctx = trained
    first, *middle, last = ctx.progress_calls
    steps = RF_PARAMS["n_estimators"] if model_type == "random_forest" else 1
    assert (first["phase"], first["step"], first["steps"]) == ("fit", 0, steps)
    # the final event: held-out metrics only, named as validation metrics
    assert (last["phase"], last["step"], last["steps"]) == ("val", steps, steps)
    assert last["metrics"] == {
        "val_accuracy": result.metrics["accuracy"],
        "val_loss": result.metrics["log_loss"],
    }
    if model_type == "svm":
        assert middle == []
        return
    # a forest reports its trees in 10 batches, with the partial forest's held-out metrics
    assert [e["step"] for e in middle] == list(range(10, 101, 10))
    for event in middle:
        assert event["phase"] == "fit" and event["steps"] == 100
        assert set(event["metrics"]) == {"val_accuracy", "val_loss"}
        assert event["loss"] == event["metrics"]["val_loss"]
    assert middle[-1]["metrics"]["val_accuracy"] == result.metrics["accuracy"]


@pytest.mark.parametrize(
    "extra", [{}, {"oob_score": True}, {"bootstrap": False, "max_features": None}]
)
def test_a_forest_grown_in_batches_is_the_one_fit_would_give(
    data: Path, tmp_path: Path, extra: dict[str, Any]
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    hp = {**RF_PARAMS, "n_estimators": 23, **extra}
    result, ctx = _train(data, tmp_path, "random_forest", hp)
    assert [e["step"] for e in ctx.progress_calls[1:-1]] == [3, 5, 7, 10, 12, 14, 17, 19, 21, 23]
    batched = rt.load(tmp_path, _meta("random_forest", result))
    assert batched.warm_start is False  # saved with the user's settings
    _, _, X, y, _ = rt._read_csv(data, None)
    X_tr, X_te, y_tr, _ = rt.train_test_split(X, y, test_size=0.2, stratify=y, random_state=42)
    single = RandomForestClassifier(n_jobs=1, **hp).fit(X_tr, y_tr)
    np.testing.assert_array_equal(batched.predict_proba(X_te), single.predict_proba(X_te))
    np.testing.assert_array_equal(batched.apply(X_te), single.apply(X_te))
    if extra.get("oob_score"):
        assert batched.oob_score_ == single.oob_score_


def test_round_trip_and_probabilities(
    trained: tuple[str, Path, TrainResult, Recorder], data: Path
) -> None:
    model_type, out, result, _ = trained
    meta = _meta(model_type, result)
    rows = [",".join(line.split(",")[:4]) for line in data.read_text().splitlines()[1:21]]
    m1 = rt.load(out, meta)
    m2 = rt.load(out, meta)
    p1 = rt.predict(m1, meta, rows, {"probability": True})
    p2 = rt.predict(m2, meta, rows, {"probability": True})
    assert p1 == p2
    json.dumps(p1)
    assert len(p1["predictions"]) == 20
    for item in p1["predictions"]:
        assert item["label"] in TABULAR_CLASSES
        assert set(item["probabilities"]) == set(TABULAR_CLASSES)
        assert sum(item["probabilities"].values()) == pytest.approx(1.0)
        assert all(isinstance(v, float) for v in item["probabilities"].values())
    single = rt.predict(m1, meta, rows[0], {})
    assert single == {"prediction": p1["predictions"][0]["label"]}
    single_p = rt.predict(m1, meta, rows[0], {"probability": True})
    assert single_p["probabilities"] == p1["predictions"][0]["probabilities"]
    # The model's own answer on a clear point of each blob.
    assert rt.predict(m1, meta, "5.0,3.4,1.5,0.3", {})["prediction"] == "setosa"


def _sample_rows(data: Path) -> list[str]:
    return [",".join(line.split(",")[:4]) for line in data.read_text().splitlines()[1:]]


def _count_calls(estimator: Any, counts: Counter[str]) -> None:
    """Counts the estimator's predict and predict_proba calls (its own predict calls its
    predict_proba through the instance, so that is counted too)."""
    for name in ("predict", "predict_proba"):
        method = getattr(estimator, name)

        def counted(X: Any, _method: Callable[[Any], Any] = method, _name: str = name) -> Any:
            counts[_name] += 1
            return _method(X)

        setattr(estimator, name, counted)


def test_labels_from_one_walk_equal_the_models_predict(
    trained: tuple[str, Path, TrainResult, Recorder], data: Path
) -> None:
    model_type, out, result, _ = trained
    meta = _meta(model_type, result)
    model = rt.load(out, meta)
    rows = _sample_rows(data)
    X = np.asarray([[float(v) for v in row.split(",")] for row in rows])
    expected_labels = [str(c) for c in model.predict(X)]
    expected_probas = model.predict_proba(X)
    # The last step walks the data: the forest itself, or the svm's calibrated classifier.
    final = model.steps[-1][1] if model_type == "svm" else model
    counts: Counter[str] = Counter()
    _count_calls(final, counts)
    got = rt.predict(model, meta, rows, {"probability": True})["predictions"]
    assert counts == {"predict_proba": 1}  # one walk, no second predict
    assert [item["label"] for item in got] == expected_labels
    classes = [str(c) for c in model.classes_]
    for item, probas in zip(got, expected_probas, strict=True):
        assert item["probabilities"] == dict(zip(classes, map(float, probas), strict=True))
    counts.clear()
    plain = rt.predict(model, meta, rows, {})["predictions"]
    assert counts["predict"] == 1 and counts["predict_proba"] <= 1
    assert [item["label"] for item in plain] == expected_labels


def test_predict_many_is_one_walk_with_predicts_answers(
    trained: tuple[str, Path, TrainResult, Recorder], data: Path
) -> None:
    model_type, out, result, _ = trained
    meta = _meta(model_type, result)
    model = rt.load(out, meta)
    assert load_runtime_module("sklearn").predict_many is rt.predict_many
    rows = _sample_rows(data)
    inputs: list[Any] = [
        rows[0], rows[1:4], "1,2,x,4", rows[4], [rows[5], "1,2"], 42, [], rows[6:9],
        "5.0,3.4,1.5,0.3",
    ]  # fmt: skip
    bad = [2, 4, 5, 6]
    counts: Counter[str] = Counter()
    _count_calls(model.steps[-1][1] if model_type == "svm" else model, counts)
    for parameters in ({}, {"probability": True}, {"probability": False}):
        counts.clear()
        many = rt.predict_many(model, meta, inputs, parameters)
        assert counts["predict" if not parameters.get("probability") else "predict_proba"] == 1
        assert [i for i, r in enumerate(many) if isinstance(r, UserError)] == bad
        assert_many_matches_predict(rt, model, meta, inputs, parameters)
        assert ("probabilities" in many[0]) is bool(parameters.get("probability"))
        json.dumps([r for r in many if not isinstance(r, UserError)])
    # A row's number counts within its own job's input, not within the batch.
    assert str(rt.predict_many(model, meta, inputs, {})[4]).startswith("input row 1 has 2 values")
    assert rt.predict_many(model, meta, [], {"probability": True}) == []
    counts.clear()
    assert all(isinstance(r, UserError) for r in rt.predict_many(model, meta, ["x", 1], {}))
    assert not counts  # nothing to classify: no model call
    with pytest.raises(UserError, match="probabilty"):
        rt.predict_many(model, meta, inputs, {"probabilty": True})  # shared: fails the call


# ------------------------------------------------------------------ bad data


@pytest.mark.parametrize(
    ("text", "label_column", "fragments"),
    [
        ("", None, ["empty"]),
        ("a,b,label\n", None, ["header", "no data rows"]),
        ("a,b,label\n1,2,x\n3,4,y\n", "species", ["species", "a, b, label"]),
        ("a,b,label\n1,2,x\n3,4,x\n", None, ["only one class"]),
        ("a,b,label\n1,2,x\n3,4\n", None, ["row 2", "2 values", "3 columns"]),
        (
            "a,b,label\n1,2,x\n3,oops,y\n",
            None,
            ["row 2", "'b'", "oops", "not a number"],
        ),
        ("a,b,label\n1,2,x\n3,nan,y\n", None, ["row 2", "'b'", "finite"]),
        ("a,b,label\n1,2,x\n1,2,x\n3,4,y\n", None, ["single row", "y"]),
    ],
)
def test_bad_data_is_user_error(
    tmp_path: Path, text: str, label_column: str | None, fragments: list[str]
) -> None:
    path = _write(tmp_path / "d.csv", text)
    with pytest.raises(UserError) as info:
        _train(path, tmp_path / "out", label_column=label_column)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_label_column_defaults(tmp_path: Path) -> None:
    rows = "".join(f"{i % 3},{i % 2},{i * 2}\n" for i in range(30))
    target_first = _write(tmp_path / "t.csv", "target,x,y\n" + rows)
    result, _ = _train(target_first, tmp_path / "o1", hp={"n_estimators": 5})
    assert result.details["label_column"] == "target"
    assert result.details["feature_names"] == ["x", "y"]
    last = _write(
        tmp_path / "l.csv",
        "x,y,kind\n" + "".join(f"{i},{i * 2},{'ab'[i % 2]}\n" for i in range(30)),
    )
    result, _ = _train(last, tmp_path / "o2", hp={"n_estimators": 5})
    assert result.details["label_column"] == "kind" and result.label_names == ["a", "b"]
    result, _ = _train(target_first, tmp_path / "o3", hp={"n_estimators": 5}, label_column="x")
    assert result.details["feature_names"] == [
        "target",
        "y",
    ] and result.label_names == ["0", "1"]


# ------------------------------------------------------------------ hyperparameters


def test_unknown_hyperparameter(data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        _train(data, tmp_path, hp={"n_estimator": 10})
    msg = str(info.value)
    assert "n_estimator" in msg and "n_estimators" in msg and "test_size" in msg
    with pytest.raises(UserError, match="probability"):
        _train(data, tmp_path, "svm", hp={"probability": True})


@pytest.mark.parametrize(
    ("model_type", "hp", "name"),
    [
        ("random_forest", {"n_estimators": -3}, "n_estimators"),
        ("random_forest", {"n_estimators": "abc"}, "n_estimators"),
        ("random_forest", {"max_depth": 0}, "max_depth"),
        ("svm", {"C": -1.0}, "'C'"),
        ("svm", {"kernel": "banana"}, "kernel"),
        ("random_forest", {"test_size": 1.5}, "test_size"),
    ],
)
def test_invalid_hyperparameter_value(
    data: Path, tmp_path: Path, model_type: str, hp: dict[str, Any], name: str
) -> None:
    with pytest.raises(UserError) as info:
        _train(data, tmp_path, model_type, hp)
    assert name in str(info.value), str(info.value)


def test_rf_defaults_to_one_job(data: Path, tmp_path: Path) -> None:
    _train(data, tmp_path / "a", hp={"n_estimators": 5})
    meta = ModelMeta("m", "random_forest", [], {})
    assert rt.load(tmp_path / "a", meta).n_jobs == 1
    _train(data, tmp_path / "b", hp={"n_estimators": 5, "n_jobs": 2, "test_size": 0.3})
    assert rt.load(tmp_path / "b", meta).n_jobs == 2


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("input_data", "parameters", "fragments"),
    [
        ("feature1,feature2,feature3,feature4", {}, ["header row", "e.g."]),
        ("1.0,2.0,3.0", {}, ["row 0", "3 values", "expected 4", "feature4"]),
        (["1,2,3,4", "1,2,x,4"], {}, ["row 1", "'feature3'", "not a number"]),
        ([], {}, ["non-empty"]),
        ("1,2,3,4", {"probabilty": True}, ["probabilty", "accepted: probability"]),
        ("1,2,3,4", {"probability": "yes"}, ["probability", "true or false"]),
    ],
)
def test_bad_predict_input(
    trained: tuple[str, Path, TrainResult, Recorder],
    input_data: Any,
    parameters: dict[str, Any],
    fragments: list[str],
) -> None:
    model_type, out, result, _ = trained
    meta = _meta(model_type, result)
    model = rt.load(out, meta)
    with pytest.raises(UserError) as info:
        rt.predict(model, meta, input_data, parameters)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# ------------------------------------------------------------------ untrusted files


class Evil:
    """A type no allow-list knows."""

    def __init__(self) -> None:
        self.x = 1


def test_load_refuses_untrusted_types(tmp_path: Path) -> None:
    meta = ModelMeta("m", "random_forest", [], {})
    sio.dump({"model": Evil()}, tmp_path / "model.skops")
    with pytest.raises(rt.UntrustedModelError, match="Evil"):
        rt.load(tmp_path, meta)


def test_load_refuses_pickle(tmp_path: Path) -> None:
    (tmp_path / "model.skops").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(rt.UntrustedModelError, match="not a readable skops file"):
        rt.load(tmp_path, ModelMeta("m", "random_forest", [], {}))


def test_load_refuses_wrong_model_kind(tmp_path: Path) -> None:
    sio.dump({"a": [1, 2]}, tmp_path / "model.skops")
    with pytest.raises(rt.UntrustedModelError, match="not a svm model"):
        rt.load(tmp_path, ModelMeta("m", "svm", [], {}))
