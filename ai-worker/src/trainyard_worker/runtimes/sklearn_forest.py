"""Progress while a random forest grows: the forest is fitted in batches of trees with
``warm_start``, reporting the partial forest's held-out metrics after each batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, log_loss

from .base import TrainContext

__all__ = ["FOREST_BATCHES", "fit_forest_in_batches", "grows_in_batches"]

FOREST_BATCHES = 10  # a forest grows in this many batches of trees, one event each


def grows_in_batches(model: Any) -> bool:
    """Whether the forest can be grown in batches of trees (``warm_start``) for progress
    reports. It gives the very same trees as one fit (sklearn draws each tree's seed from
    ``random_state`` in the same order; test_sklearn_runtime checks it). Not with the
    "balanced" class-weight presets, for which sklearn warns against warm starts."""
    if not isinstance(model, RandomForestClassifier) or isinstance(model.class_weight, str):
        return False
    n = model.n_estimators  # not validated yet: sklearn's fit says what is wrong with it
    return isinstance(n, int) and not isinstance(n, bool) and n >= 2


def fit_forest_in_batches(
    model: RandomForestClassifier,
    X_tr: np.ndarray,
    y_tr: np.ndarray,
    X_te: np.ndarray,
    y_te: np.ndarray,
    ctx: TrainContext,
) -> None:
    """Grow ``model`` to its ``n_estimators`` in up to ``FOREST_BATCHES`` batches, with a
    ``fit`` event after each: the trees so far and their held-out accuracy and log loss
    (predicting with the partial forest costs far less than growing it)."""
    total, warm, oob = int(model.n_estimators), model.warm_start, model.oob_score
    sizes = sorted({math.ceil(total * i / FOREST_BATCHES) for i in range(1, FOREST_BATCHES + 1)})
    try:
        for n in sizes:
            # The out-of-bag score needs every tree: computed once, with the last batch.
            last = n == total
            model.set_params(warm_start=True, n_estimators=n, oob_score=oob if last else False)
            model.fit(X_tr, y_tr)
            probs = model.predict_proba(X_te)
            predicted = model.classes_.take(np.argmax(probs, axis=1), axis=0)
            loss = float(log_loss(y_te, probs, labels=model.classes_))
            ctx.progress(
                epoch=1, epochs=1, step=n, steps=total, phase="fit", loss=loss,
                metrics={"val_accuracy": float(accuracy_score(y_te, predicted)), "val_loss": loss},
            )  # fmt: skip
    finally:
        model.set_params(warm_start=warm, oob_score=oob)  # saved as the user asked
