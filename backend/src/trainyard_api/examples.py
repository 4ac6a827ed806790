"""The seed README's request bodies (``trainyard.seed_examples``, verbatim) as OpenAPI
examples, alone and in batches (the tests check that each one validates and is accepted)."""

from __future__ import annotations

from typing import Any

from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES

__all__ = ["BATCH_EXAMPLES", "INFERENCE_EXAMPLES", "TRAINING_EXAMPLES"]

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

BATCH_EXAMPLES: dict[str, dict[str, Any]] = {
    "mixed": {
        "summary": "A training job and an inference job (the seed's scikit-learn bodies)",
        "value": {
            "jobs": [
                {"type": "training", **TRAINING_BODIES["random_forest"]},
                {"type": "inference", **INFERENCE_BODIES["tabular"]},
            ]
        },
    },
    "sweep": {
        "summary": "A small hyperparameter sweep: one random forest per max_depth",
        "value": {
            "jobs": [
                {
                    "type": "training",
                    "model_type": "random_forest",
                    "data_path": "/data/tabular_data.csv",
                    "hyperparameters": {"n_estimators": 100, "max_depth": depth},
                    "model_name": f"rf_depth_{depth}",
                    "idempotency_key": f"sweep-rf-depth-{depth}",
                }
                for depth in (4, 8, 16)
            ]
        },
    },
}
