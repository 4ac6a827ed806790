"""scikit-learn runtime: ``random_forest`` and ``svm`` classifiers on numeric CSV data.

Implements the contract in :mod:`trainyard_worker.runtimes.base`. Models are saved with
skops (no pickle) and loaded trusting only an explicit allow-list of types.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils._param_validation import InvalidParameterError

from .base import (
    BatchSlot,
    ModelMeta,
    TrainContext,
    TrainRequest,
    TrainResult,
    UserError,
    answer_slots,
    parse_slots,
    predict_one,
)
from .params import read_csv_rows
from .sklearn_forest import fit_forest_in_batches, grows_in_batches

__all__ = [
    "MODEL_FILE",
    "MODEL_TYPES",
    "TRUSTED_TYPES",
    "UntrustedModelError",
    "load",
    "predict",
    "predict_many",
    "train",
]

MODEL_FILE = "model.skops"
MODEL_TYPES = ("random_forest", "svm")
_LABEL_DEFAULTS = ("label", "target", "class")
_PREDICT_PARAMS = ("probability",)
_DEFAULT_TEST_SIZE = 0.2
_DEFAULT_SPLIT_SEED = 42

# Types skops does not trust by default but our two pipelines legitimately contain.
# Never extend this from what a file claims to hold: a tampered file must fail to load.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


class UntrustedModelError(RuntimeError):
    """The model file is not a skops file or holds types outside ``TRUSTED_TYPES``.

    Not a :class:`UserError`: the user never sends model files, so this means a
    corrupted or tampered artifact and must surface as a crash, not a user mistake.
    """


# ---------------------------------------------------------------- estimators


def _svc_param_names() -> list[str]:
    # SVC's own `probability` is deprecated in sklearn 1.9, and we always calibrate.
    return sorted(p for p in SVC().get_params() if p != "probability")


def _valid_hyperparameters(model_type: str) -> list[str]:
    if model_type == "random_forest":
        names = list(RandomForestClassifier().get_params())
    else:
        names = _svc_param_names()
    return sorted([*names, "test_size"])


def _build_estimator(model_type: str, params: dict[str, Any], min_class_count: int) -> Any:
    if model_type == "random_forest":
        # The worker box has 2 cores and runs other children: default to one job.
        return RandomForestClassifier(**{"n_jobs": 1, **params})
    # SVM probabilities: SVC(probability=True) is deprecated in sklearn 1.9, so we wrap
    # SVC in CalibratedClassifierCV(ensemble=False), which keeps one SVC fitted on all
    # training data and adds a sigmoid calibrator. We do it for every svm model, not only
    # "when needed", because `probability` is a predict-time option and a model cannot be
    # re-trained at predict time; the cost is a few extra SVC fits at train time.
    cv = max(2, min(5, min_class_count))
    svc = SVC(**params)
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("clf", calibrated)])


# Values sklearn accepts but that only buy unbounded work: 10**30 trees are built one by one
# until memory runs out; libsvm with C=1e308 never converges (SVC has no iteration limit).
_UPPER_BOUNDS: dict[str, dict[str, float]] = {
    "random_forest": {"n_estimators": 1_000_000},
    "svm": {"C": 1e10},
}
_LARGEST_INT = 2**32  # past this sklearn's C code overflows (OverflowError), e.g. max_depth


def _check_values(model_type: str, params: dict[str, Any]) -> None:
    """What sklearn's own parameter validation lets through: true/false where a number
    belongs (True is an int to Python: n_estimators=true would train one tree), integers
    too large for its C code, non-finite floats (a job enqueued without the API) and
    absurd sizes."""
    estimator = RandomForestClassifier() if model_type == "random_forest" else SVC()
    defaults = estimator.get_params()
    bounds = _UPPER_BOUNDS[model_type]
    for name, value in params.items():
        if isinstance(value, bool):
            if not isinstance(defaults.get(name), bool):
                raise UserError(f"hyperparameter '{name}' must not be true/false, got {value}")
            continue
        if isinstance(value, int) and abs(value) > _LARGEST_INT:
            raise UserError(f"hyperparameter '{name}' is too large: {value:.3g}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"hyperparameter '{name}' must be a finite number, got {value}")
        limit = bounds.get(name)
        if limit is not None and isinstance(value, int | float) and value > limit:
            raise UserError(f"hyperparameter '{name}' must be at most {limit:g}, got {value:g}")


def _estimator_name(model_type: str) -> str:
    return "RandomForestClassifier" if model_type == "random_forest" else "SVC"


# ---------------------------------------------------------------- CSV reading


def _parse_number(cell: str, where: str, column: str) -> float:
    text = cell.strip()
    if not text:
        raise UserError(f"{where}, column '{column}': empty value, expected a number")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}, column '{column}': {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}, column '{column}': {text!r} is not a finite number")
    return value


def _pick_label_column(header: list[str], requested: str | None) -> int:
    if requested is not None:
        if requested in header:
            return header.index(requested)
        raise UserError(
            f"label column '{requested}' not found; the columns are: {', '.join(header)}"
        )
    lowered = [h.lower() for h in header]
    for name in _LABEL_DEFAULTS:
        if name in lowered:
            return lowered.index(name)
    return len(header) - 1  # no conventional name: the last column


def _read_csv(
    path: Path, label_column: str | None
) -> tuple[list[str], str, np.ndarray, np.ndarray, list[str]]:
    """Returns (feature_names, label_name, X, y, first_row_features_as_text)."""
    rows = read_csv_rows(path, "a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise UserError("data file needs at least two columns (features and a label)")
    if any(not h for h in header):
        raise UserError(f"header has an empty column name: {rows[0]}")
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise UserError(f"header has duplicate column names: {', '.join(dupes)}")
    if len(rows) == 1:
        raise UserError("data file has a header but no data rows")
    li = _pick_label_column(header, label_column)
    feature_idx = [i for i in range(len(header)) if i != li]
    features, labels = [], []
    for n, row in enumerate(rows[1:], start=1):
        where = f"row {n}"
        if len(row) != len(header):
            raise UserError(
                f"{where} has {len(row)} values but the header has {len(header)} columns"
            )
        label = row[li].strip()
        if not label:
            raise UserError(f"{where}, column '{header[li]}': empty label")
        features.append([_parse_number(row[i], where, header[i]) for i in feature_idx])
        labels.append(label)
    counts = Counter(labels)
    if len(counts) < 2:
        raise UserError(
            f"label column '{header[li]}' has only one class ({next(iter(counts))!r}); "
            "need at least 2"
        )
    rare = sorted(c for c, k in counts.items() if k < 2)
    if rare:
        raise UserError(
            f"classes with a single row cannot be split into train and test: "
            f"{', '.join(rare[:10])}{' ...' if len(rare) > 10 else ''}"
        )
    example = [rows[1][i].strip() for i in feature_idx]
    return (
        [header[i] for i in feature_idx],
        header[li],
        np.asarray(features, dtype=np.float64),
        np.asarray(labels, dtype=str),
        example,
    )


# ---------------------------------------------------------------- train


def _split_hyperparameters(model_type: str, hp: dict[str, Any]) -> tuple[dict[str, Any], float]:
    valid = _valid_hyperparameters(model_type)
    unknown = sorted(k for k in hp if k not in valid)
    if unknown:
        hint = ""
        if model_type == "svm" and "probability" in unknown:
            hint = " ('probability' is not needed: svm models always support probabilities)"
        raise UserError(
            f"unknown hyperparameter(s) for {model_type}: {', '.join(unknown)}{hint}; "
            f"valid: {', '.join(valid)}"
        )
    params = {k: v for k, v in hp.items() if k != "test_size"}
    _check_values(model_type, params)
    test_size = hp.get("test_size", _DEFAULT_TEST_SIZE)
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, (int, float))
        or not 0 < test_size < 1
    ):
        raise UserError(
            f"hyperparameter 'test_size' must be a number between 0 and 1, got {test_size!r}"
        )
    return params, float(test_size)


def train(request: TrainRequest, ctx: TrainContext) -> TrainResult:
    """Fit ``request.model_type`` on the CSV and save ``out_dir/model.skops``."""
    if request.model_type not in MODEL_TYPES:
        raise UserError(
            f"unknown model_type {request.model_type!r}; valid: {', '.join(MODEL_TYPES)}"
        )
    params, test_size = _split_hyperparameters(request.model_type, dict(request.hyperparameters))
    names, label_name, X, y, example = _read_csv(Path(request.data_file), request.label_column)
    ctx.log(f"read {len(y)} rows, {len(names)} features, label column '{label_name}'")

    seed = params.get("random_state")
    split_seed = (
        seed if isinstance(seed, int) and not isinstance(seed, bool) else _DEFAULT_SPLIT_SEED
    )
    try:
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=split_seed
        )
    except ValueError as exc:  # e.g. test set smaller than the number of classes
        raise UserError(f"cannot split {len(y)} rows with test_size={test_size}: {exc}") from None
    min_class = min(Counter(y_tr.tolist()).values())
    try:
        model = _build_estimator(request.model_type, params, min_class)
    except TypeError as exc:  # defensive: names were checked, but keep the message readable
        raise UserError(f"invalid hyperparameters: {exc}") from None
    batches = grows_in_batches(model)
    steps = int(model.n_estimators) if batches else 1
    ctx.progress(
        epoch=1, epochs=1, step=0, steps=steps, phase="fit",
        message=f"fitting {request.model_type} on {len(y_tr)} rows",
    )  # fmt: skip
    try:
        if batches:
            fit_forest_in_batches(model, X_tr, y_tr, X_te, y_te, ctx)
        else:
            model.fit(X_tr, y_tr)
    except InvalidParameterError as exc:
        # sklearn's message already names the parameter and the allowed range/type.
        raise UserError(f"invalid hyperparameter: {exc}") from None
    except (ValueError, OverflowError) as exc:
        # After our data checks, fit's ValueErrors come from option combinations
        # (e.g. oob_score without bootstrap), OverflowErrors from numbers its C code cannot
        # hold: the user's to fix, not a crash.
        raise UserError(f"training failed with hyperparameters {params}: {exc}") from None

    classes = [str(c) for c in model.classes_]
    metrics: dict[str, float] = {
        "accuracy": float(accuracy_score(y_te, model.predict(X_te))),
        "train_accuracy": float(accuracy_score(y_tr, model.predict(X_tr))),
        "n_train": float(len(y_tr)),
        "n_test": float(len(y_te)),
    }
    held = {"val_accuracy": metrics["accuracy"]}
    if hasattr(model, "predict_proba"):
        metrics["log_loss"] = float(
            log_loss(y_te, model.predict_proba(X_te), labels=model.classes_)
        )
        held["val_loss"] = metrics["log_loss"]
    ctx.progress(
        epoch=1,
        epochs=1,
        step=steps,
        steps=steps,
        phase="val",
        loss=metrics.get("log_loss"),
        metrics=held,
        message="trained",
    )
    ctx.log(f"held-out accuracy {metrics['accuracy']:.4f} on {len(y_te)} rows")

    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sio.dump(model, out_dir / MODEL_FILE)
    details: dict[str, Any] = {
        "feature_names": names,
        "label_column": label_name,
        "n_features": len(names),
        "estimator": _estimator_name(request.model_type),
        "artifact": MODEL_FILE,
        "example_input": ",".join(example),
        "test_size": test_size,
    }
    return TrainResult(metrics=metrics, label_names=sorted(classes), details=details)


# ---------------------------------------------------------------- load


def load(model_dir: Path, meta: ModelMeta) -> Any:
    """Load ``model_dir/model.skops`` trusting only ``TRUSTED_TYPES``."""
    path = Path(model_dir) / MODEL_FILE
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # BadZipFile, bad schema...: not something we wrote
        raise UntrustedModelError(f"{path} is not a readable skops file: {exc}") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise UntrustedModelError(
            f"{path} contains types outside the allow-list: {', '.join(refused)}"
        )
    # Pass our own allow-list, never `untrusted`: skops re-checks every node against it.
    model = sio.load(path, trusted=list(TRUSTED_TYPES))
    expected = RandomForestClassifier if meta.model_type == "random_forest" else Pipeline
    if meta.model_type not in MODEL_TYPES or not isinstance(model, expected):
        raise UntrustedModelError(
            f"{path} holds a {type(model).__name__}, not a {meta.model_type} model"
        )
    return model


# ---------------------------------------------------------------- predict


def _parse_input_row(text: Any, index: int, names: list[str], example: str) -> list[float]:
    if not isinstance(text, str):
        raise UserError(f"input row {index}: expected a CSV string, got {type(text).__name__}")
    try:
        cells = [c.strip() for c in next(csv.reader([text]), [])]
    except csv.Error as exc:  # a field past csv's size limit, a stray newline...
        raise UserError(f"input row {index} is not a CSV row: {exc}") from None
    if [c.lower() for c in cells] == [n.lower() for n in names]:
        raise UserError(
            f"input row {index} looks like the header row ({text!r}); send feature values "
            f"instead, e.g. {example!r}"
        )
    if len(cells) != len(names):
        raise UserError(
            f"input row {index} has {len(cells)} values, expected {len(names)} "
            f"({', '.join(names)}), e.g. {example!r}"
        )
    return [_parse_number(c, f"input row {index}", n) for c, n in zip(cells, names, strict=True)]


def _want_probability(parameters: dict[str, Any] | None) -> bool:
    params = dict(parameters or {})
    unknown = sorted(k for k in params if k not in _PREDICT_PARAMS)
    if unknown:
        raise UserError(
            f"unknown prediction parameter(s): {', '.join(unknown)}; "
            f"accepted: {', '.join(_PREDICT_PARAMS)}"
        )
    value = params.get("probability", False)
    if not isinstance(value, bool):
        raise UserError(f"prediction parameter 'probability' must be true or false, got {value!r}")
    return value


def _feature_names(model: Any, meta: ModelMeta) -> tuple[list[str], str]:
    """(feature names, an example row for error messages)."""
    names = [str(n) for n in meta.details.get("feature_names", [])]
    if not names:  # older records: fall back to generic names from the model itself
        names = [f"feature{i + 1}" for i in range(int(model.n_features_in_))]
    example = str(meta.details.get("example_input") or ",".join(["1.0"] * len(names)))
    return names, example


def _parse_input(input_data: Any, names: list[str], example: str) -> tuple[list[list[float]], bool]:
    """(rows of feature values, whether one row string was sent)."""
    single = isinstance(input_data, str)
    rows = [input_data] if single else input_data
    if not isinstance(rows, list) or not rows:
        raise UserError("input_data must be a CSV row string or a non-empty list of them")
    return [_parse_input_row(r, i, names, example) for i, r in enumerate(rows)], single


def _label_is_argmax(model: Any) -> bool:
    """Whether ``model.predict(X)`` is, by sklearn's own code, exactly
    ``classes_[argmax(predict_proba(X))]``: true for RandomForestClassifier (one output) and
    for CalibratedClassifierCV (the svm pipeline's last step). Not for a bare SVC, whose
    predict follows the decision function and can disagree with its probabilities."""
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(final, RandomForestClassifier):
        return int(getattr(final, "n_outputs_", 1)) == 1
    return isinstance(final, CalibratedClassifierCV)


def _classify(model: Any, X: np.ndarray, want_proba: bool) -> tuple[list[str], np.ndarray | None]:
    """(labels, probabilities or None), walking the model once where the labels follow
    from the probabilities (a forest's predict is its predict_proba and an argmax)."""
    if not want_proba:
        return [str(c) for c in model.predict(X)], None
    probas = np.asarray(model.predict_proba(X))
    if _label_is_argmax(model):
        labels = np.asarray(model.classes_).take(np.argmax(probas, axis=1), axis=0)
    else:
        labels = model.predict(X)
    return [str(c) for c in labels], probas


def predict_many(
    model: Any, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
) -> list[dict[str, Any] | UserError]:
    """Every input's rows in one matrix, one model walk; slot ``i`` is what :func:`predict`
    gives for ``inputs[i]`` (see :mod:`.base`)."""
    want_proba = _want_probability(parameters)
    names, example = _feature_names(model, meta)
    slots, rows = parse_slots(inputs, lambda item: _parse_input(item, names, example))
    if not rows:  # every input was refused (or none was given): no model call
        return [slot for slot in slots if isinstance(slot, UserError)]
    labels, probas = _classify(model, np.asarray(rows, dtype=np.float64), want_proba)
    classes = [str(c) for c in model.classes_]

    def item(i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"label": labels[i]}
        if probas is not None:
            out["probabilities"] = {c: float(p) for c, p in zip(classes, probas[i], strict=True)}
        return out

    def answer(slot: BatchSlot) -> dict[str, Any]:
        if not slot.single:
            return {"predictions": [item(i) for i in range(slot.start, slot.stop)]}
        one = item(slot.start)
        result: dict[str, Any] = {"prediction": one.pop("label")}
        result.update(one)
        return result

    return answer_slots(slots, answer)


def predict(
    model: Any, meta: ModelMeta, input_data: str | list[str], parameters: dict[str, Any]
) -> dict[str, Any]:
    """Classify one CSV row (``{"prediction", "probabilities"?}``) or a list of rows
    (``{"predictions": [{"label", "probabilities"?}, ...]}``)."""
    return predict_one(predict_many, model, meta, input_data, parameters)
