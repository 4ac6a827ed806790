"""PyTorch text classification: ``bert`` and ``transformer`` (DistilBERT, RoBERTa or BERT
encoders) built from a configuration sized by hyperparameters, never downloaded.

Implements the contract in :mod:`.base`. A WordPiece tokenizer is trained on the job's own
training texts, unless the job fine-tunes (``pretrained_path`` in the data root, or an
earlier Trainyard model as ``base_model``), which brings its own tokenizer. Models are
saved with ``save_pretrained`` as safetensors and loaded with ``use_safetensors=True``.
Works on torch 2.0 + transformers 4.49 and torch 2.1 + transformers 4.55.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError

from . import textdata
from .base import (
    BaseModelRef,
    ModelMeta,
    TrainContext,
    TrainRequest,
    TrainResult,
    UserError,
    answer_slots,
    child_device,
    parse_slots,
    predict_one,
)
from .torch_common import (
    autocast,
    check_number,
    peak_gpu_memory,
    prepare_torch,
    softmax,
    train_epochs,
)

# transformers' annotations are partial (untyped constructors): use it as untyped.
hf: Any = transformers

__all__ = [
    "ARCHITECTURES",
    "HYPERPARAMETERS",
    "PREDICT_PARAMETERS",
    "TextModel",
    "load",
    "predict",
    "predict_many",
    "train",
]

ARCHITECTURES = ("distilbert", "roberta", "bert")
HYPERPARAMETERS = (
    "architecture", "batch_size", "dropout", "epochs", "hidden_size", "intermediate_size",
    "learning_rate", "max_length", "num_heads", "num_layers", "pretrained_path", "seed",
    "test_size", "vocab_size", "weight_decay",
)  # fmt: skip
# Ignored when the weights come from pretrained_path or base_model (the model fixes them).
_SIZE_HYPERPARAMETERS = (
    "architecture", "dropout", "hidden_size", "intermediate_size", "num_heads", "num_layers",
    "vocab_size",
)  # fmt: skip
PREDICT_PARAMETERS = textdata.PREDICT_PARAMETERS
# Position ids of these start after the padding index (RoBERTa's offset of pad_token_id + 1).
_OFFSET_POSITION_TYPES = ("roberta", "xlm-roberta", "camembert")
_EVAL_BATCH = 64


@dataclass(frozen=True)
class _Params:
    epochs: int
    learning_rate: float
    batch_size: int
    max_length: int
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    dropout: float
    weight_decay: float
    vocab_size: int
    test_size: float
    seed: int
    architecture: str
    pretrained_path: str | None


@dataclass
class TextModel:
    """What :func:`load` returns and :func:`predict` uses."""

    model: Any  # a transformers *ForSequenceClassification
    tokenizer: Any  # a transformers tokenizer
    device: torch.device
    max_length: int


# ---------------------------------------------------------------- hyperparameters


def _read_params(model_type: str, hp: dict[str, Any]) -> _Params:
    unknown = sorted(k for k in hp if k not in HYPERPARAMETERS)
    if unknown:
        raise UserError(
            f"unknown hyperparameter(s) for {model_type}: {', '.join(unknown)}; "
            f"accepted: {', '.join(HYPERPARAMETERS)}"
        )
    default_arch = "bert" if model_type == "bert" else "distilbert"
    arch = hp.get("architecture", default_arch)
    if arch not in ARCHITECTURES:
        raise UserError(
            f"hyperparameters.architecture must be one of {', '.join(ARCHITECTURES)}, got {arch!r}"
        )
    if model_type == "bert" and arch != "bert":
        raise UserError(
            f"hyperparameters.architecture {arch!r} does not apply to model_type 'bert' "
            "(always a BERT encoder); use model_type 'transformer' to choose one"
        )
    hidden = check_number(hp, "hidden_size", 128, 16, 1024, integer=True)
    heads = check_number(hp, "num_heads", 2, 1, 16, integer=True)
    if hidden % heads:
        raise UserError(
            f"hyperparameters.hidden_size ({hidden}) must be divisible by "
            f"hyperparameters.num_heads ({heads})"
        )
    pretrained = hp.get("pretrained_path")
    if pretrained is not None and (not isinstance(pretrained, str) or not pretrained.strip()):
        raise UserError(
            f"hyperparameters.pretrained_path must be a folder path in the data root, "
            f"got {pretrained!r}"
        )
    return _Params(
        epochs=check_number(hp, "epochs", 3, 1, 1000, integer=True),
        learning_rate=check_number(hp, "learning_rate", 5e-4, 1e-7, 1.0),
        batch_size=check_number(hp, "batch_size", 16, 1, 1024, integer=True),
        max_length=check_number(hp, "max_length", 128, 8, 512, integer=True),
        num_layers=check_number(hp, "num_layers", 2, 1, 24, integer=True),
        hidden_size=hidden,
        num_heads=heads,
        intermediate_size=check_number(hp, "intermediate_size", 4 * hidden, 16, 8192, True),
        dropout=check_number(hp, "dropout", 0.1, 0.0, 0.9),
        weight_decay=check_number(hp, "weight_decay", 0.01, 0.0, 1.0),
        vocab_size=check_number(hp, "vocab_size", 8000, 100, 50000, integer=True),
        test_size=check_number(hp, "test_size", 0.2, 0.0, 0.5),
        seed=check_number(hp, "seed", 42, 0, 2**32 - 1, integer=True),
        architecture=str(arch),
        pretrained_path=pretrained,
    )


# ---------------------------------------------------------------- tokenizer and model


def _train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> Any:
    """The job's own WordPiece vocabulary (:func:`.textdata.train_wordpiece`) as a
    transformers tokenizer, saved and loaded with the model."""
    return hf.PreTrainedTokenizerFast(
        tokenizer_object=textdata.train_wordpiece(texts, vocab_size),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        # DistilBERT and RoBERTa take no token_type_ids; we never send them.
        model_input_names=["input_ids", "attention_mask"],
    )


def _build_model(p: _Params, tokenizer: Any, labels: list[str]) -> Any:
    heads = {"id2label": dict(enumerate(labels)), "label2id": {x: i for i, x in enumerate(labels)}}
    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **heads}
    if p.architecture == "distilbert":
        dconfig = hf.DistilBertConfig(
            max_position_embeddings=p.max_length, n_layers=p.num_layers, n_heads=p.num_heads,
            dim=p.hidden_size, hidden_dim=p.intermediate_size, dropout=p.dropout,
            attention_dropout=p.dropout, seq_classif_dropout=p.dropout, **common,
        )  # fmt: skip
        return hf.DistilBertForSequenceClassification(dconfig)
    sizes: dict[str, Any] = {
        "num_hidden_layers": p.num_layers, "num_attention_heads": p.num_heads,
        "hidden_size": p.hidden_size, "intermediate_size": p.intermediate_size,
        "hidden_dropout_prob": p.dropout, "attention_probs_dropout_prob": p.dropout,
    }  # fmt: skip
    if p.architecture == "roberta":
        rconfig = hf.RobertaConfig(
            max_position_embeddings=p.max_length + tokenizer.pad_token_id + 1,
            type_vocab_size=1, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id, **sizes, **common,
        )  # fmt: skip
        return hf.RobertaForSequenceClassification(rconfig)
    bconfig = hf.BertConfig(max_position_embeddings=p.max_length, **sizes, **common)
    return hf.BertForSequenceClassification(bconfig)


def _position_capacity(config: Any) -> int:
    n = int(getattr(config, "max_position_embeddings", 512))
    if config.model_type in _OFFSET_POSITION_TYPES:
        n -= int(config.pad_token_id or 0) + 1
    return n


def _from_pretrained(
    folder: Path, labels: list[str], what: str, ctx: TrainContext
) -> tuple[Any, Any]:
    """Model (with a ``len(labels)`` head) and tokenizer from a save_pretrained folder.
    A head trained for other labels is re-initialised, even when its size fits."""
    old_labels = textdata.saved_model_labels(folder, what)
    try:
        # trust_remote_code=False: a config's auto_map naming Python files in the folder
        # is refused, never imported (the default may prompt, or trust, per version).
        model = hf.AutoModelForSequenceClassification.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True,
            num_labels=len(labels), ignore_mismatched_sizes=True, trust_remote_code=False,
        )  # fmt: skip
        tokenizer = hf.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise UserError(f"{what}: cannot load the model or tokenizer: {exc}") from None
    if tokenizer.pad_token_id is None:
        raise UserError(f"{what}: the tokenizer has no padding token")
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"{what}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
            f"only {model.config.vocab_size}"
        )
    if old_labels != labels:
        head = getattr(model, "classifier", None)
        if isinstance(head, torch.nn.Module):
            head.apply(model._init_weights)
        ctx.log(f"{what} was trained for labels {old_labels}, not {labels}: new head")
    return model, tokenizer


def _start_from(
    request: TrainRequest, p: _Params, labels: list[str], ctx: TrainContext
) -> tuple[Any, Any, str]:
    """(model, tokenizer, where it came from) for fine-tuning, or (None, None, "")."""
    base: BaseModelRef | None = request.base_model
    if p.pretrained_path is not None and base is not None:
        raise UserError("use either hyperparameters.pretrained_path or base_model_id, not both")
    if p.pretrained_path is not None:
        folder = textdata.pretrained_folder(request.data_root, p.pretrained_path)
        model, tokenizer = _from_pretrained(folder, labels, "hyperparameters.pretrained_path", ctx)
        return model, tokenizer, f"pretrained_path {p.pretrained_path}"
    if base is None:
        return None, None, ""
    if base.meta.model_type not in ("bert", "transformer"):
        raise UserError(f"base model {base.meta.model_id!r} is a {base.meta.model_type}, not text")
    model, tokenizer = _from_pretrained(Path(base.model_dir), labels, "base model", ctx)
    return model, tokenizer, f"base model {base.meta.model_id}"


# ---------------------------------------------------------------- batching


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    ids: list[list[int]] = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return ids


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pads to the longest row of this batch (not to max_length)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _logits(model: Any, rows: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    """Logits of every row, in ``rows`` order, from batches of at most ``_EVAL_BATCH`` rows
    (the memory bound); rows of similar length share a batch, so little is padding."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), _EVAL_BATCH):
            batch = _pad([rows[i] for i in order[start : start + _EVAL_BATCH]], pad_id, device)
            outputs.append(model(**batch).logits.float().cpu())
    logits = torch.cat(outputs)
    restored = torch.empty_like(logits)
    restored[torch.tensor(order, dtype=torch.long)] = logits
    return restored


def _accuracy(model: Any, rows: list[list[int]], targets: list[int], pad_id: int,
              device: torch.device) -> float:  # fmt: skip
    model.eval()
    with autocast(device):
        predicted = _logits(model, rows, pad_id, device).argmax(dim=-1)
    return float((predicted == torch.tensor(targets)).float().mean())


def _held_out(model: Any, rows: list[list[int]], targets: list[int], pad_id: int,
              device: torch.device) -> dict[str, float]:  # fmt: skip
    """``val_loss`` and ``val_accuracy`` on the held-out rows, in evaluation mode."""
    model.eval()
    with autocast(device):
        logits = _logits(model, rows, pad_id, device)
    y = torch.tensor(targets)
    return {
        "val_loss": float(torch.nn.functional.cross_entropy(logits, y)),
        "val_accuracy": float((logits.argmax(dim=-1) == y).float().mean()),
    }


# ---------------------------------------------------------------- train


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 10% of steps, then linear decay to zero: the usual
    transformer schedule (a constant rate from step one destabilises fresh attention)."""
    warmup = max(1, total // 10)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(request: TrainRequest, ctx: TrainContext) -> TrainResult:
    """Fine-tune or train from scratch; saves safetensors weights + tokenizer in out_dir."""
    p = _read_params(request.model_type, dict(request.hyperparameters))
    text_col, label_col = request.text_column or "text", request.label_column or "label"
    texts, raw_labels = textdata.read_text_csv(Path(request.data_file), text_col, label_col)
    labels = sorted(set(raw_labels))
    targets = [labels.index(y) for y in raw_labels]
    train_rows, test_rows = textdata.stratified_split(targets, p.test_size, p.seed)
    if p.test_size > 0 and not test_rows:
        ctx.log("a class has a single row: training on all rows, no held-out accuracy")
    device = prepare_torch(request.device, p.seed)
    train_texts = [texts[i] for i in train_rows]

    model, tokenizer, source = _start_from(request, p, labels, ctx)
    max_length = p.max_length
    if model is None:
        tokenizer = _train_tokenizer(train_texts, p.vocab_size, p.max_length)
        model = _build_model(p, tokenizer, labels)
        architecture = p.architecture
    else:
        architecture = str(model.config.model_type)
        capacity = _position_capacity(model.config)
        if "max_length" not in request.hyperparameters:
            max_length = min(max_length, capacity)
        elif max_length > capacity:
            ctx.log(f"max_length {max_length} exceeds the model's {capacity} positions: using it")
            max_length = capacity
        given = sorted(k for k in _SIZE_HYPERPARAMETERS if k in request.hyperparameters)
        ctx.log(
            f"fine-tuning a {architecture} model from {source}; its size is fixed"
            + (f", ignoring hyperparameters {', '.join(given)}" if given else "")
        )
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {x: i for i, x in enumerate(labels)}
    model.to(device)
    num_parameters = sum(t.numel() for t in model.parameters())
    ctx.log(
        f"{architecture}: {num_parameters} parameters, vocabulary {len(tokenizer)}, "
        f"{len(train_rows)} training rows, {len(test_rows)} held-out, labels {labels}"
    )

    pad_id = int(tokenizer.pad_token_id)
    encoded = _encode(tokenizer, texts, max_length)
    train_ids = [encoded[i] for i in train_rows]
    train_targets = [targets[i] for i in train_rows]
    steps = (len(train_rows) + p.batch_size - 1) // p.batch_size

    def batches(epoch: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        order = torch.randperm(
            len(train_ids), generator=torch.Generator().manual_seed(p.seed + epoch)
        ).tolist()
        for step, start in enumerate(range(0, len(order), p.batch_size)):
            _set_lr(optimizer, p.learning_rate * _lr_factor(epoch * steps + step, steps * p.epochs))
            chunk = order[start : start + p.batch_size]
            inputs = _pad([train_ids[i] for i in chunk], pad_id, device)
            yield inputs, torch.tensor([train_targets[i] for i in chunk], device=device)

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits: torch.Tensor = model(**inputs).logits
        return logits

    # The usual transformer recipe: no weight decay on biases and LayerNorm weights.
    groups = [
        {"params": [t for t in model.parameters() if t.ndim >= 2], "weight_decay": p.weight_decay},
        {"params": [t for t in model.parameters() if t.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=p.learning_rate)
    test_ids, test_targets = [encoded[i] for i in test_rows], [targets[i] for i in test_rows]
    history = train_epochs(
        model=model, optimizer=optimizer, batches=batches, forward=forward, epochs=p.epochs,
        steps_per_epoch=steps, device=device, ctx=ctx,
        validate=(
            (lambda: _held_out(model, test_ids, test_targets, pad_id, device))
            if test_rows else None
        ),
    )  # fmt: skip

    metrics: dict[str, float] = {
        "train_accuracy": _accuracy(model, train_ids, train_targets, pad_id, device),
        "loss": history[-1].loss,
        "n_train": float(len(train_rows)),
        "n_test": float(len(test_rows)),
        **peak_gpu_memory(device),
    }
    if test_rows:
        held = _held_out(model, test_ids, test_targets, pad_id, device)
        metrics.update(accuracy=held["val_accuracy"], val_loss=held["val_loss"])
        ctx.log(f"held-out accuracy {metrics['accuracy']:.4f} on {len(test_rows)} rows")

    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    details: dict[str, Any] = {
        "max_length": max_length,
        "architecture": architecture,
        "text_column": text_col,
        "label_column": label_col,
        "num_parameters": num_parameters,
        "vocab_size": len(tokenizer),
        "example_input": train_texts[0],
    }
    if source:
        details["fine_tuned_from"] = source
    return TrainResult(metrics=metrics, label_names=labels, details=details)


# ---------------------------------------------------------------- load and predict


def load(model_dir: Path, meta: ModelMeta) -> TextModel:
    """The saved model (safetensors only) and its tokenizer, in eval mode on the child's
    device. A cuda child without CUDA is an infrastructure fault, never a CPU run."""
    wanted = child_device()
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this inference process was given a GPU but CUDA is not available")
    device = torch.device("cuda" if wanted == "cuda" else "cpu")
    model = hf.AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), local_files_only=True, use_safetensors=True, trust_remote_code=False
    )
    tokenizer = hf.AutoTokenizer.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False
    )
    model.to(device)
    model.eval()
    max_length = int(meta.details.get("max_length") or _position_capacity(model.config))
    return TextModel(model=model, tokenizer=tokenizer, device=device, max_length=max_length)


def predict_many(
    model: TextModel, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
) -> list[dict[str, Any] | UserError]:
    """The texts of every input tokenised together and classified in one padded batch
    (chunked at ``_EVAL_BATCH``); slot ``i`` is what :func:`predict` gives for ``inputs[i]``
    (see :mod:`.base`)."""
    # At least one text token besides [CLS]/[SEP]; the model's own max_length at most.
    shortest = model.tokenizer.num_special_tokens_to_add() + 1
    temperature, max_length, top_k = textdata.check_predict_params(
        dict(parameters or {}), model.max_length, shortest
    )
    slots, texts = parse_slots(inputs, textdata.check_texts)
    if not texts:  # every input was refused (or none was given): no model call
        return [slot for slot in slots if isinstance(slot, UserError)]
    labels = list(meta.label_names)
    if len(labels) != int(model.model.config.num_labels):
        raise RuntimeError(
            f"model {meta.model_id} has {model.model.config.num_labels} outputs but "
            f"{len(labels)} label names"
        )
    rows = _encode(model.tokenizer, texts, max_length)
    probs = softmax(_logits(model.model, rows, int(model.tokenizer.pad_token_id), model.device),
                    temperature)  # fmt: skip
    return answer_slots(
        slots,
        lambda slot: textdata.ranked_predictions(
            probs[slot.start : slot.stop], labels, top_k, slot.single
        ),
    )


def predict(
    model: TextModel, meta: ModelMeta, input_data: str | list[str], parameters: dict[str, Any]
) -> dict[str, Any]:
    """One text -> ``{"prediction", "scores"}``; a list -> ``{"predictions": [{"label",
    "scores"}, ...]}``. Scores are softmax(logits / temperature), best first."""
    return predict_one(predict_many, model, meta, input_data, parameters)
