"""The runtime contract's framework-free parts: the batched-prediction helpers of
:mod:`trainyard_worker.runtimes.base` and the check that every runtime module exposes the
whole contract. (Each runtime's own ``predict_many`` is tested with its framework.)"""

from __future__ import annotations

from typing import Any

import pytest
from runtime_support import require_framework

from trainyard_worker.runtimes import CONTRACT, RUNTIME_MODULES, load_runtime_module
from trainyard_worker.runtimes.base import (
    BatchSlot,
    ModelMeta,
    UserError,
    answer_slots,
    parse_slots,
    predict_each,
    predict_one,
)

META = ModelMeta("m", "toy", ["a", "b"], {})


def _toy_predict(model: Any, meta: ModelMeta, input_data: Any, parameters: dict[str, Any]) -> Any:
    """Upper-cases words; a number is bad input, "boom" a crash, "shout" a known parameter."""
    unknown = sorted(set(parameters) - {"shout"})
    if unknown:
        raise UserError(f"unknown parameter(s): {', '.join(unknown)}")
    if input_data == "boom":
        raise RuntimeError("the model crashed")
    if not isinstance(input_data, str):
        raise UserError(f"input_data must be a string, got {type(input_data).__name__}")
    word = input_data.upper() + ("!" if parameters.get("shout") else "")
    return {"prediction": word}


def test_predict_each_keeps_each_inputs_error_in_its_slot() -> None:
    results = predict_each(_toy_predict, None, META, ["hi", 3, "yo"], {"shout": True})
    assert results[0] == {"prediction": "HI!"} and results[2] == {"prediction": "YO!"}
    assert isinstance(results[1], UserError) and str(results[1]) == (
        "input_data must be a string, got int"
    )
    assert predict_each(_toy_predict, None, META, [], {}) == []
    with pytest.raises(RuntimeError, match="crashed"):  # not the user's: the call crashes
        predict_each(_toy_predict, None, META, ["hi", "boom"], {})


def test_parse_and_answer_slots_flatten_and_split_rows() -> None:
    def parse(item: Any) -> tuple[list[str], bool]:
        if isinstance(item, str):
            return [item], True
        if isinstance(item, list) and item:
            return [str(x) for x in item], False
        raise UserError("bad input")

    slots, rows = parse_slots(["a", ["b", "c"], 7, [], ["d"]], parse)
    assert rows == ["a", "b", "c", "d"]
    assert slots[0] == BatchSlot(0, 1, True) and slots[1] == BatchSlot(1, 3, False)
    assert isinstance(slots[2], UserError) and isinstance(slots[3], UserError)
    assert slots[4] == BatchSlot(3, 4, False)
    answers = answer_slots(slots, lambda s: {"rows": rows[s.start : s.stop], "one": s.single})
    assert answers[0] == {"rows": ["a"], "one": True}
    assert answers[1] == {"rows": ["b", "c"], "one": False}
    assert answers[2] is slots[2] and answers[4] == {"rows": ["d"], "one": False}


def test_predict_one_raises_its_slots_error() -> None:
    def many(model: Any, meta: ModelMeta, inputs: list[Any], parameters: dict[str, Any]) -> Any:
        return predict_each(_toy_predict, model, meta, inputs, parameters)

    assert predict_one(many, None, META, "hi", {}) == {"prediction": "HI"}
    with pytest.raises(UserError, match="must be a string"):
        predict_one(many, None, META, 3, {})


def test_load_runtime_module_demands_the_whole_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "predict_many" in CONTRACT
    require_framework("sklearn")
    sklearn_runtime = load_runtime_module("sklearn")
    assert all(callable(getattr(sklearn_runtime, name)) for name in CONTRACT)
    # A module that lacks predict_many (params has none of the contract) is refused.
    monkeypatch.setitem(RUNTIME_MODULES, "toy", "trainyard_worker.runtimes.params")
    with pytest.raises(TypeError, match="lacks train, load, predict, predict_many"):
        load_runtime_module("toy")
    with pytest.raises(LookupError, match="no runtime module"):
        load_runtime_module("nothing")
