"""The runtime tests' check of ``predict_many`` against ``predict``: every slot of one batched
call must be what ``predict`` gives for that input alone (same shape, labels and order; the
same numbers up to the rounding of a different batch), or the same UserError."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from trainyard_worker.runtimes.base import ModelMeta, UserError

__all__ = ["TOLERANCE", "assert_close", "assert_many_matches_predict"]

TOLERANCE = 1e-6


def assert_close(got: Any, expected: Any, where: str = "result") -> None:
    """Equal structures: the same dict keys in the same order (scores are ranked), the same
    strings and list lengths; floats within :data:`TOLERANCE`."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list), f"{where}: {got!r} is not a list"
        assert len(got) == len(expected), f"{where}: {len(got)} items != {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(got, float), f"{where}: {got!r} is not a float"
        assert math.isclose(got, expected, rel_tol=0, abs_tol=TOLERANCE), (
            f"{where}: {got} != {expected}"
        )
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def assert_many_matches_predict(
    runtime: ModuleType,
    model: Any,
    meta: ModelMeta,
    inputs: list[Any],
    parameters: dict[str, Any],
) -> list[dict[str, Any] | UserError]:
    """``runtime.predict_many`` over ``inputs``, checked slot by slot against
    ``runtime.predict`` on each input alone; returns the batched results."""
    many: list[dict[str, Any] | UserError] = runtime.predict_many(model, meta, inputs, parameters)
    assert len(many) == len(inputs)
    for i, (input_data, got) in enumerate(zip(inputs, many, strict=True)):
        try:
            expected = runtime.predict(model, meta, input_data, parameters)
        except UserError as exc:
            assert isinstance(got, UserError), f"slot {i}: {got!r} instead of {exc!r}"
            assert str(got) == str(exc)
            continue
        assert not isinstance(got, UserError), f"slot {i}: {got!r}"
        assert_close(got, expected, f"slot {i}")
    return many
