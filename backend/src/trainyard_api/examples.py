"""The seed README's request bodies (``trainyard.seed_examples``, verbatim) as OpenAPI
examples (the tests check that each one validates and is accepted)."""

from __future__ import annotations

from typing import Any

from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES

__all__ = ["INFERENCE_EXAMPLES", "TRAINING_EXAMPLES"]

TRAINING_SUMMARIES = {
    "bert_quickstart": "BERT sentiment analysis (quick start)",
    "bert": "PyTorch BERT model (CPU)",
    "resnet": "PyTorch ResNet model (GPU)",
    "inception": "TensorFlow Inception model",
    "random_forest": "Scikit-learn random forest",
}

INFERENCE_SUMMARIES = {
    "quickstart": "Quick start",
    "text": "Text classification",
    "image": "Image classification",
    "tabular": "Tabular data prediction",
}

TRAINING_EXAMPLES: dict[str, dict[str, Any]] = {
    name: {"summary": TRAINING_SUMMARIES[name], "value": body}
    for name, body in TRAINING_BODIES.items()
}

INFERENCE_EXAMPLES: dict[str, dict[str, Any]] = {
    name: {"summary": INFERENCE_SUMMARIES[name], "value": body}
    for name, body in INFERENCE_BODIES.items()
}
