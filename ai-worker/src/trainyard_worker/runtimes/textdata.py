"""Text data for the text runtimes: the standard library, NumPy and ``tokenizers`` only (no
torch, no transformers, which imports torch).

Training data is a CSV file with a header row, one text column and one label column.
A WordPiece vocabulary is counted from the training texts, deterministically. Pretrained
folders (``save_pretrained`` output) are checked before any framework loads them, and the
prediction inputs and parameters are checked before any model runs.
Every problem is a :class:`UserError` that names the field, row or file and the reason.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy.typing as npt
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from trainyard.datapaths import DataPathError, resolve_data_path

from .base import UserError
from .params import read_csv_rows

__all__ = [
    "PREDICT_PARAMETERS",
    "SPECIAL_TOKENS",
    "check_predict_params",
    "check_texts",
    "pretrained_folder",
    "ranked_predictions",
    "read_text_csv",
    "saved_model_labels",
    "stratified_split",
    "train_wordpiece",
]

PREDICT_PARAMETERS = ("max_length", "temperature", "top_k")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# ---------------------------------------------------------------- training data


def read_text_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """(texts, labels) from a CSV file with a header row; blank lines are skipped."""
    rows = read_csv_rows(path, "a header row (text,label) and data rows")
    header = [h.strip() for h in rows[0]]
    for role, name in (("text", text_column), ("label", label_column)):
        if name not in header:
            raise UserError(
                f"{role} column '{name}' not found; the columns are: {', '.join(header)}"
            )
    if len(rows) == 1:
        raise UserError("data file has a header but no data rows")
    if text_column == label_column:
        raise UserError(f"text column and label column are both '{text_column}'")
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    for n, row in enumerate(rows[1:], start=1):
        if len(row) <= max(ti, li):
            raise UserError(f"row {n} has {len(row)} values but the header has {len(header)}")
        text, label = row[ti].strip(), row[li].strip()
        if not text:
            raise UserError(f"row {n}, column '{text_column}': empty text")
        if not label:
            raise UserError(f"row {n}, column '{label_column}': empty label")
        texts.append(text)
        labels.append(label)
    counts = Counter(labels)
    if len(counts) < 2:
        raise UserError(
            f"label column '{label_column}' has only one class ({next(iter(counts))!r}); "
            "need at least 2"
        )
    return texts, labels


def stratified_split(labels: list[int], test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified (train, test) row indices; no held-out rows when a class has one row."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    if test_size <= 0 or min(len(rows) for rows in by_class.values()) < 2:
        return list(range(len(labels))), []
    rng = random.Random(seed)
    train_rows, test_rows = [], []
    for y in sorted(by_class):
        rows = by_class[y][:]
        rng.shuffle(rows)
        n_test = min(len(rows) - 1, max(1, round(len(rows) * test_size)))
        test_rows += rows[:n_test]
        train_rows += rows[n_test:]
    return sorted(train_rows), sorted(test_rows)


def train_wordpiece(texts: list[str], vocab_size: int) -> Tokenizer:
    """A WordPiece tokenizer whose vocabulary is learnt from ``texts``: the special tokens,
    every character seen (as a word start and as a ``##`` continuation, so no word is ever
    unknown), then whole words by frequency, up to ``vocab_size``. Built by counting, not
    with tokenizers' WordPieceTrainer, whose merges break ties in hash order: it gave a
    different vocabulary in every process, so a seeded run was not reproducible."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars: Counter[str] = Counter()
    for word, n in words.items():
        chars.update({c: n for c in word})
    by_count = sorted(chars, key=lambda c: (-chars[c], c))
    candidates = [*SPECIAL_TOKENS, *by_count, *(f"##{c}" for c in by_count)]
    candidates += [w for w in sorted(words, key=lambda w: (-words[w], w)) if len(w) > 1]
    vocab: dict[str, int] = {}
    for token in candidates:
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


# ---------------------------------------------------------------- pretrained folders


def pretrained_folder(data_root: Path | None, path: str) -> Path:
    """The folder that ``hyperparameters.pretrained_path`` names inside the data root."""
    if data_root is None:
        raise RuntimeError("hyperparameters.pretrained_path needs the job's data root")
    try:
        folder = resolve_data_path(data_root, path)
    except DataPathError as exc:
        raise UserError(f"hyperparameters.pretrained_path: {exc}") from None
    if not folder.is_dir():
        raise UserError(f"hyperparameters.pretrained_path {path!r}: not a folder")
    # The folder is inside the root, but its files may be symlinks leading out of it.
    root = Path(os.path.realpath(data_root))
    for entry in sorted(folder.rglob("*")):
        real = Path(os.path.realpath(entry))
        if real != root and root not in real.parents:
            raise UserError(
                f"hyperparameters.pretrained_path: {entry.relative_to(folder)} is a symlink "
                "to a place outside the data root"
            )
    return folder


def saved_model_labels(folder: Path, what: str) -> list[str]:
    """The labels a ``save_pretrained`` folder was trained for (from its config.json), once
    the folder is known to hold safetensors weights: a pickle alone is refused, never loaded."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        id2label = config.get("id2label") or {}
        labels = [id2label[k] for k in sorted(id2label, key=int)]
    except FileNotFoundError:
        raise UserError(f"{what}: no config.json (expected a save_pretrained model)") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{what}: config.json is not a model configuration: {exc}") from None
    if not any(folder.glob("*.safetensors")):
        found = "pytorch_model.bin (a pickle, never loaded)" if any(folder.glob("*.bin")) else ""
        raise UserError(
            f"{what}: no model.safetensors in the folder; safetensors is required"
            + (f", found only {found}" if found else "")
        )
    return labels


# ---------------------------------------------------------------- prediction


def check_texts(input_data: Any) -> tuple[list[str], bool]:
    """(texts, single): one text or a non-empty list of non-blank texts."""
    single = isinstance(input_data, str)
    texts = [input_data] if single else input_data
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise UserError("input_data must be a string or a list of strings for a text model")
    for i, text in enumerate(texts):
        if not str(text).strip():
            raise UserError(f"input_data[{i}] is an empty text")
    return [str(t) for t in texts], single


def check_predict_params(
    parameters: dict[str, Any], max_length: int, shortest: int
) -> tuple[float, int, int | None]:
    """(temperature, max_length, top_k) from the prediction parameters. A ``max_length``
    from ``shortest`` (one text token besides the special ones; below that the tokenizer
    would not truncate) up is accepted, and capped to the model's own ``max_length``: the
    model cannot read more tokens."""
    unknown = sorted(k for k in parameters if k not in PREDICT_PARAMETERS)
    if unknown:
        raise UserError(
            f"unknown prediction parameter(s): {', '.join(unknown)}; "
            f"accepted: {', '.join(PREDICT_PARAMETERS)}"
        )
    temperature = parameters.get("temperature", 1.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 < temperature <= 100
    ):
        raise UserError(
            f"parameters.temperature must be a number > 0 and <= 100, got {temperature!r}"
        )
    if "max_length" in parameters:
        asked = _int_param(parameters["max_length"], "max_length", shortest, 100_000)
        max_length = min(asked, max_length)
    top_k = None
    if parameters.get("top_k") is not None:
        top_k = _int_param(parameters["top_k"], "top_k", 1, 10**9)
    return float(temperature), max_length, top_k


def _int_param(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"parameters.{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def ranked_predictions(
    probabilities: npt.NDArray[Any], labels: list[str], top_k: int | None, single: bool
) -> dict[str, Any]:
    """One text -> ``{"prediction", "scores"}``; a batch -> ``{"predictions": [{"label",
    "scores"}, ...]}``. Scores best first (ties keep label order), the ``top_k`` best."""
    out = []
    for row in probabilities:
        order = sorted(range(len(labels)), key=lambda j: -float(row[j]))[:top_k]
        out.append({"label": labels[order[0]], "scores": {labels[j]: float(row[j]) for j in order}})
    if single:
        return {"prediction": out[0]["label"], "scores": out[0]["scores"]}
    return {"predictions": out}
