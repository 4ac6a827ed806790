"""Real training/serving tests for the PyTorch text runtime (``bert``, ``transformer``) on
the generated sentiment sample set: small models trained from scratch on one CPU thread,
fine-tuning from a pretrained folder and from an earlier model, and the input checks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from predict_many_support import assert_close, assert_many_matches_predict
from runtime_support import Recorder, require_framework

torch = require_framework("torch")

from safetensors.torch import load_file  # noqa: E402

from trainyard.sample_data import write_text  # noqa: E402
from trainyard_worker.runtimes import load_runtime_module  # noqa: E402
from trainyard_worker.runtimes import torch_text as tt  # noqa: E402
from trainyard_worker.runtimes.base import (  # noqa: E402
    DEVICE_ENV,
    BaseModelRef,
    ModelMeta,
    TrainRequest,
    TrainResult,
    UserError,
)

# Small enough for a few seconds per training on one thread, big enough to learn the
# negations ("not bad") that a bag of words gets wrong (it stalls near 92%).
SMALL = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "dropout": 0.0,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "bert": {**SMALL, "epochs": 12},  # default max_length (128)
    "transformer": {**SMALL, "epochs": 12, "max_length": 64, "architecture": "distilbert"},
}
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "epochs": 1, "max_length": 16}
SEED_PARAMS = {"temperature": 0.7, "max_length": 100}  # what the seed script sends


@dataclass
class Trained:
    result: TrainResult
    ctx: Recorder
    out_dir: Path
    meta: ModelMeta
    seconds: float


def _train(
    data: Path,
    out: Path,
    model_type: str = "bert",
    hp: dict[str, Any] | None = None,
    **request: Any,
) -> Trained:
    ctx = Recorder()
    started = time.perf_counter()
    req = TrainRequest(
        model_type=model_type,
        data_file=data,
        hyperparameters=dict(hp or {}),
        out_dir=out,
        **request,
    )
    result = tt.train(req, ctx)
    seconds = time.perf_counter() - started
    meta = ModelMeta(f"test-{model_type}", model_type, result.label_names, result.details)
    return Trained(result, ctx, out, meta, seconds)


def _write_csv(
    path: Path, rows: list[list[str]], header: tuple[str, ...] = ("text", "label")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text(tmp_path_factory.mktemp("data") / "sentiment_analysis.csv")


@pytest.fixture(scope="module")
def trained(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """One model per type, trained once for the whole module."""
    return {mt: _train(sample, tmp_path_factory.mktemp(mt), mt, CONFIGS[mt]) for mt in CONFIGS}


@pytest.fixture(scope="module")
def loaded(trained: dict[str, Trained]) -> dict[str, Any]:
    return {mt: tt.load(t.out_dir, t.meta) for mt, t in trained.items()}


def _vocab(model_dir: Path) -> dict[str, int]:
    vocab: dict[str, int] = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    return vocab


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_trains_to_90_percent(trained: dict[str, Trained], model_type: str) -> None:
    t = trained[model_type]
    m = t.result.metrics
    print(f"{model_type}: {t.seconds:.1f} s, metrics {m}")
    assert m["train_accuracy"] >= 0.9, m
    assert 0.5 < m["accuracy"] <= 1.0, m  # held-out, 80 unseen rows
    assert (m["n_train"], m["n_test"]) == (320, 80)
    assert t.result.label_names == ["negative", "positive"]
    details = t.result.details
    assert details["architecture"] == ("bert" if model_type == "bert" else "distilbert")
    assert details["max_length"] == CONFIGS[model_type].get("max_length", 128)
    assert (details["text_column"], details["label_column"]) == ("text", "label")
    assert 10_000 < details["num_parameters"] < 1_000_000
    files = {p.name for p in t.out_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickle


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_progress_reports_epochs_steps_and_falling_loss(
    trained: dict[str, Trained], model_type: str
) -> None:
    events = trained[model_type].ctx.events
    epochs = CONFIGS[model_type]["epochs"]
    for e in events:
        assert {"epoch", "epochs", "step", "steps", "loss"} <= e.keys(), e
        assert e["epochs"] == epochs and e["steps"] == 20  # 320 rows / batch 16
    ends = [e for e in events if e["phase"] == "val"]  # one per epoch, on the held-out rows
    assert [e["epoch"] for e in ends] == list(range(1, epochs + 1))
    assert [e["epoch"] for e in events if e["step"] == 10] == list(range(1, epochs + 1))
    assert ends[-1]["loss"] < ends[0]["loss"] * 0.5, [e["loss"] for e in ends]
    metrics = trained[model_type].result.metrics
    assert all(set(e["metrics"]) == {"val_loss", "val_accuracy"} for e in ends)
    assert ends[-1]["metrics"]["val_accuracy"] == pytest.approx(metrics["accuracy"])
    assert ends[-1]["metrics"]["val_loss"] == pytest.approx(metrics["val_loss"])
    # step-level train events carry the schedule: warm-up, then linear decay
    train = [e for e in events if e["phase"] == "train" and e["step"] > 0]
    assert all(
        set(e["metrics"]) == {"loss", "train_accuracy", "learning_rate", "samples_per_s"}
        for e in train
    )
    rates = [e["metrics"]["learning_rate"] for e in train]
    peak = rates.index(max(rates))
    assert 0 < peak < len(rates) - 1 and rates[-1] < rates[peak] / 10, rates
    assert 0.5 < max(rates) / CONFIGS[model_type]["learning_rate"] <= 1


def test_same_seed_same_model(sample: Path, tmp_path: Path) -> None:
    hp = {**TINY, "seed": 7}
    a = _train(sample, tmp_path / "a", "transformer", hp)
    b = _train(sample, tmp_path / "b", "transformer", hp)
    assert a.result.metrics == b.result.metrics
    wa, wb = (
        load_file(str(a.out_dir / "model.safetensors")),
        load_file(str(b.out_dir / "model.safetensors")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(("architecture", "max_length"), [("roberta", 8), ("bert", 512)])
def test_other_architectures(
    sample: Path, tmp_path: Path, architecture: str, max_length: int
) -> None:
    # RoBERTa numbers positions from pad_token_id + 1: max_length 8 must still fit.
    hp = {**TINY, "architecture": architecture, "max_length": max_length}
    t = _train(sample, tmp_path, "transformer", hp)
    assert t.result.details["architecture"] == architecture
    model = tt.load(t.out_dir, t.meta)
    long_text = "The phone is not bad at all and I would buy it again. " * 60
    out = tt.predict(model, t.meta, [long_text, "I love it!"], {})
    assert len(out["predictions"]) == 2


def test_single_row_class_trains_without_held_out(tmp_path: Path) -> None:
    rows = [["good thing", "pos"], ["nice thing", "pos"], ["great thing", "pos"], ["bad", "neg"]]
    t = _train(_write_csv(tmp_path / "d.csv", rows), tmp_path / "out", "bert", TINY)
    assert t.result.metrics["n_test"] == 0 and "accuracy" not in t.result.metrics
    assert any("no held-out" in line for line in t.ctx.lines)


# ---------------------------------------------------------------- load / predict


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_save_load_round_trip(
    trained: dict[str, Trained], loaded: dict[str, Any], sample: Path, model_type: str
) -> None:
    t = trained[model_type]
    rows = _rows(sample)
    out = tt.predict(loaded[model_type], t.meta, [r[0] for r in rows], {})["predictions"]
    correct = sum(o["label"] == r[1] for o, r in zip(out, rows, strict=True))
    # The loaded model gets exactly the rows right that the trained one did.
    m = t.result.metrics
    assert correct == round(m["train_accuracy"] * m["n_train"]) + round(m["accuracy"] * m["n_test"])
    again = tt.load(t.out_dir, t.meta)
    batch = [r[0] for r in rows[:7]]
    assert tt.predict(again, t.meta, batch, {}) == tt.predict(loaded[model_type], t.meta, batch, {})


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_seed_request_parameters(
    trained: dict[str, Trained], loaded: dict[str, Any], model_type: str
) -> None:
    meta = trained[model_type].meta
    out = tt.predict(loaded[model_type], meta, "This is a great product!", SEED_PARAMS)
    assert out["prediction"] == "positive"
    assert set(out["scores"]) == {"negative", "positive"}
    assert sum(out["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    neg = tt.predict(loaded[model_type], meta, "This is an awful product!", SEED_PARAMS)
    assert neg["prediction"] == "negative"


def test_temperature_sharpens_scores(trained: dict[str, Trained], loaded: dict[str, Any]) -> None:
    meta, model = trained["bert"].meta, loaded["bert"]
    text = "The lid is good."
    scores = {
        temp: tt.predict(model, meta, text, {"temperature": temp})["scores"]
        for temp in (0.5, 1.0, 2.0)
    }
    top = [max(scores[temp].values()) for temp in (0.5, 1.0, 2.0)]
    assert top[0] > top[1] > top[2] > 0.5
    assert (
        len(
            {
                tt.predict(model, meta, text, {"temperature": x})["prediction"]
                for x in (0.5, 2.0, 100)
            }
        )
        == 1
    )


def test_max_length_truncates(trained: dict[str, Trained], loaded: dict[str, Any]) -> None:
    meta, model = trained["transformer"].meta, loaded["transformer"]
    start = "the phone is truly great and"  # 6 tokens: [CLS] + 6 + [SEP] = 8
    texts = [f"{start} I love it.", f"{start} I regret buying it, it is awful and useless."]
    full = tt.predict(model, meta, texts, {})["predictions"]
    assert full[0]["scores"] != full[1]["scores"]
    cut = tt.predict(model, meta, texts, {"max_length": 8})["predictions"]
    assert cut[0]["scores"] == cut[1]["scores"]
    alone = tt.predict(model, meta, start, {"max_length": 8})
    assert alone["scores"] == pytest.approx(cut[0]["scores"], abs=1e-6)  # batch of 1 vs 2
    # Above the model's max_length (64) the request is capped to it, as the seed's 100 is.
    long_text = f"{start} I love it. " + "It arrived on a Tuesday. " * 30
    capped = tt.predict(model, meta, long_text, {"max_length": 100})["scores"]
    assert capped == tt.predict(model, meta, long_text, {"max_length": 64})["scores"]
    assert capped != tt.predict(model, meta, long_text, {"max_length": 63})["scores"]


def test_batch_shape_and_top_k(trained: dict[str, Trained], loaded: dict[str, Any]) -> None:
    meta, model = trained["bert"].meta, loaded["bert"]
    texts = ["I love it!", "One star from me.", "The kettle is not flimsy."]
    out = tt.predict(model, meta, texts, {})
    assert list(out) == ["predictions"] and len(out["predictions"]) == 3
    for item in out["predictions"]:
        assert set(item) == {"label", "scores"}
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert item["label"] == max(item["scores"], key=item["scores"].get)
    top = tt.predict(model, meta, texts, {"top_k": 1})["predictions"]
    assert [list(i["scores"]) for i in top] == [[i["label"]] for i in out["predictions"]]


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_predict_many_is_one_forward_pass_with_predicts_answers(
    trained: dict[str, Trained], loaded: dict[str, Any], model_type: str
) -> None:
    meta, model = trained[model_type].meta, loaded[model_type]
    inputs: list[Any] = [
        "I love it!", ["One star from me.", "The kettle is not flimsy.", "Works well."], "  ",
        "It broke after a day.", ["fine", 3], [], ["A long review that goes on. " * 5],
    ]  # fmt: skip
    calls: list[int] = []
    hook = model.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for parameters in ({}, {"top_k": 1}, {"temperature": 0.5, "max_length": 8}):
            calls.clear()
            many = tt.predict_many(model, meta, inputs, parameters)
            assert len(calls) == 1  # 7 texts of 5 jobs: one padded batch
            assert [i for i, r in enumerate(many) if isinstance(r, UserError)] == [2, 4, 5]
            assert_many_matches_predict(tt, model, meta, inputs, parameters)
            widths = {len(r["scores"]) for r in many[:2] if isinstance(r, dict) and "scores" in r}
            assert widths == ({1} if parameters.get("top_k") == 1 else {2})
    finally:
        hook.remove()
    assert str(many[2]) == "input_data[0] is an empty text"  # indexed within its own job
    dispatched = load_runtime_module("pytorch").predict_many(model, meta, inputs[:2], {})
    assert dispatched == tt.predict_many(model, meta, inputs[:2], {})
    assert tt.predict_many(model, meta, [], {}) == []
    with pytest.raises(UserError, match=r"parameters\.temperature"):
        tt.predict_many(model, meta, inputs, {"temperature": 0})  # shared: fails the call


def test_predict_many_chunks_by_length_and_keeps_the_order(
    trained: dict[str, Trained], loaded: dict[str, Any], sample: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    meta, model = trained["bert"].meta, loaded["bert"]
    texts = [row[0] for row in _rows(sample)[:10]]
    alone = [tt.predict(model, meta, text, {}) for text in texts]  # no padding at all
    monkeypatch.setattr(tt, "_EVAL_BATCH", 4)
    calls: list[int] = []
    hook = model.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        many = tt.predict_many(model, meta, [texts[0], texts[1:6], texts[6], texts[7:]], {})
    finally:
        hook.remove()
    assert len(calls) == 3  # 10 texts, at most 4 a batch
    flat: list[dict[str, Any]] = []
    for result in many:
        assert isinstance(result, dict)
        flat += result.get("predictions") or [
            {"label": result["prediction"], "scores": result["scores"]}
        ]
    assert_close(flat, [{"label": a["prediction"], "scores": a["scores"]} for a in alone])


def test_load_refuses_cpu_when_cuda_was_asked(
    trained: dict[str, Trained], monkeypatch: pytest.MonkeyPatch
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        tt.load(trained["bert"].out_dir, trained["bert"].meta)


# ---------------------------------------------------------------- fine-tuning


def test_fine_tune_from_pretrained_path(trained: dict[str, Trained], tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    shutil.copytree(trained["bert"].out_dir, data_root / "models" / "tiny-bert")
    data = write_text(data_root / "sentiment_analysis.csv")
    # 1 epoch at 1e-5 leaves a fresh model at chance: >= 90% means the weights were loaded.
    hp = {
        "pretrained_path": "/data/models/tiny-bert",
        "epochs": 1,
        "learning_rate": 1e-5,
        "hidden_size": 512,
        "max_length": 64,
    }
    t = _train(data, tmp_path / "out", "transformer", hp, data_root=data_root)
    assert t.result.metrics["train_accuracy"] >= 0.9
    assert t.result.details["architecture"] == "bert"
    assert t.result.details["max_length"] == 64
    assert t.result.details["num_parameters"] == trained["bert"].result.details["num_parameters"]
    assert any("ignoring hyperparameters hidden_size" in line for line in t.ctx.lines)
    assert not any("new head" in line for line in t.ctx.lines)  # same labels: head kept
    assert _vocab(t.out_dir) == _vocab(trained["bert"].out_dir)  # the folder's own tokenizer
    out = tt.predict(tt.load(t.out_dir, t.meta), t.meta, "I love it!", {})
    assert out["prediction"] == "positive"


def test_fine_tune_from_base_model(
    trained: dict[str, Trained], sample: Path, tmp_path: Path
) -> None:
    base = trained["transformer"]
    ref = BaseModelRef(base.out_dir, base.meta)
    t = _train(
        sample,
        tmp_path / "same",
        "transformer",
        {"epochs": 1, "learning_rate": 1e-5},
        base_model=ref,
    )
    assert t.result.metrics["train_accuracy"] >= 0.9
    assert t.result.details["max_length"] == base.result.details["max_length"]
    assert not any("new head" in line for line in t.ctx.lines)


def test_base_model_with_other_labels_gets_a_new_head(
    trained: dict[str, Trained], sample: Path, tmp_path: Path
) -> None:
    base = trained["transformer"]
    names = {"positive": "no", "negative": "yes"}  # same count, other meaning per index
    relabeled = _write_csv(tmp_path / "r.csv", [[x, names[y]] for x, y in _rows(sample)])
    t = _train(
        relabeled,
        tmp_path / "out",
        "transformer",
        {"epochs": 1, "learning_rate": 1e-7},
        base_model=BaseModelRef(base.out_dir, base.meta),
    )
    assert t.result.label_names == ["no", "yes"]
    assert any("new head" in line for line in t.ctx.lines)
    old, new = (
        load_file(str(base.out_dir / "model.safetensors")),
        load_file(str(t.out_dir / "model.safetensors")),
    )
    body = "distilbert.transformer.layer.0.attention.q_lin.weight"
    assert (old[body] - new[body]).abs().max() < 1e-4  # the encoder carried over
    assert not torch.allclose(old["classifier.weight"], new["classifier.weight"], atol=1e-2)


# ---------------------------------------------------------------- bad training input


def test_textdata_imports_no_framework() -> None:
    # The data side stays framework-free (transformers counts: importing it imports torch).
    code = (
        "import sys, trainyard_worker.runtimes.textdata; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def _error(tmp_path: Path, data: Path, hp: dict[str, Any] | None = None, **req: Any) -> str:
    with pytest.raises(UserError) as info:
        _train(data, tmp_path / "out", req.pop("model_type", "bert"), {**TINY, **(hp or {})}, **req)
    return str(info.value)


def test_missing_columns(sample: Path, tmp_path: Path) -> None:
    msg = _error(tmp_path, sample, text_column="review")
    assert "text column 'review' not found" in msg and "text, label" in msg
    msg = _error(tmp_path, sample, label_column="sentiment")
    assert "label column 'sentiment' not found" in msg and "text, label" in msg
    assert "both 'text'" in _error(tmp_path, sample, label_column="text")


def test_pretrained_path_and_base_model_together(
    trained: dict[str, Trained], sample: Path, tmp_path: Path
) -> None:
    ref = BaseModelRef(trained["bert"].out_dir, trained["bert"].meta)
    hp = {"pretrained_path": "/data/x"}
    msg = _error(tmp_path, sample, hp, data_root=tmp_path, base_model=ref)
    assert "either hyperparameters.pretrained_path or base_model_id" in msg


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty"),
        ("text,label\n", "no data rows"),
        ("text,label\ngood,a\nfine,a\n", "only one class"),
        ("text,label\ngood,a\n ,b\n", "row 2, column 'text': empty text"),
    ],
)
def test_bad_data(tmp_path: Path, content: str, expected: str) -> None:
    data = tmp_path / "d.csv"
    data.write_text(content, encoding="utf-8")
    assert expected in _error(tmp_path, data)


@pytest.mark.parametrize(
    ("hp", "expected"),
    [
        ({"max_length": 0}, "hyperparameters.max_length must be between 8 and 512, got 0"),
        ({"max_length": 10000}, "hyperparameters.max_length must be between 8 and 512"),
        ({"batch_size": 0}, "hyperparameters.batch_size must be between 1 and 1024, got 0"),
        ({"epochs": 2.5}, "hyperparameters.epochs must be an integer"),
        ({"hidden_size": 100, "num_heads": 3}, "hidden_size (100) must be divisible by"),
        ({"learning_rate": "fast"}, "hyperparameters.learning_rate must be a number"),
        ({"layers": 2}, "unknown hyperparameter(s) for bert: layers; accepted: architecture"),
        ({"architecture": "gpt2"}, "hyperparameters.architecture must be one of"),
        ({"architecture": "roberta"}, "does not apply to model_type 'bert'"),
        ({"pretrained_path": 3}, "hyperparameters.pretrained_path must be a folder path"),
    ],
)
def test_bad_hyperparameters(
    sample: Path, tmp_path: Path, hp: dict[str, Any], expected: str
) -> None:
    assert expected in _error(tmp_path, sample, hp)


@pytest.mark.parametrize("path", ["/etc", "../outside", "/data/../etc", "/data/missing"])
def test_pretrained_path_outside_or_missing(sample: Path, tmp_path: Path, path: str) -> None:
    (tmp_path / "data").mkdir()
    msg = _error(tmp_path, sample, {"pretrained_path": path}, data_root=tmp_path / "data")
    assert msg.startswith("hyperparameters.pretrained_path")


def test_pretrained_folder_with_only_a_pickle(
    trained: dict[str, Trained], sample: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "data" / "pickled"
    folder.mkdir(parents=True)
    shutil.copy(trained["bert"].out_dir / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    hp = {"pretrained_path": "/data/pickled"}
    msg = _error(tmp_path, sample, hp, data_root=tmp_path / "data")
    assert "safetensors is required" in msg and "pytorch_model.bin" in msg


# ---------------------------------------------------------------- bad inference input


@pytest.mark.parametrize("bad", [123, None, [], [1, 2], ["ok", 3], {"text": "hi"}])
def test_non_string_input(trained: dict[str, Trained], loaded: dict[str, Any], bad: Any) -> None:
    with pytest.raises(UserError, match="input_data must be a string or a list of strings"):
        tt.predict(loaded["bert"], trained["bert"].meta, bad, {})


def test_blank_input_names_the_index(trained: dict[str, Trained], loaded: dict[str, Any]) -> None:
    with pytest.raises(UserError, match=r"input_data\[1\]"):
        tt.predict(loaded["bert"], trained["bert"].meta, ["fine", "  "], {})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temp": 1}, "unknown prediction parameter(s): temp; accepted: max_length"),
        ({"temperature": 0}, "parameters.temperature must be a number > 0"),
        ({"temperature": 101}, "parameters.temperature must be a number > 0"),
        ({"temperature": "hot"}, "parameters.temperature must be a number > 0"),
        ({"max_length": 0}, "parameters.max_length must be an integer from 3 to 100000, got 0"),
        ({"max_length": 2}, "parameters.max_length must be an integer from 3 to 100000, got 2"),
        ({"max_length": 8.5}, "parameters.max_length must be an integer"),
        ({"top_k": 0}, "parameters.top_k must be an integer from 1"),
    ],
)
def test_bad_parameters(
    trained: dict[str, Trained], loaded: dict[str, Any], params: dict[str, Any], expected: str
) -> None:
    with pytest.raises(UserError) as info:
        tt.predict(loaded["bert"], trained["bert"].meta, "I love it", params)
    assert expected in str(info.value)
