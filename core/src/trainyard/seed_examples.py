"""The seed README's request bodies, verbatim: its quick start and its "API Examples".

One copy for everything that shows or checks them: the backend's OpenAPI examples, the
schema tests and the end-to-end tests. (``scripts/test_api.py`` keeps its own copy, as it
runs on a bare Python without trainyard; a backend test checks that it equals this one.)

Read-only: copy a body before changing it (``{**body, ...}`` or ``copy.deepcopy``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["INFERENCE_BODIES", "QUICK_START", "TRAINING_BODIES"]

# POST /jobs/training, in the README's order: the quick start's, then the "API Examples".
TRAINING_BODIES: dict[str, dict[str, Any]] = {
    "bert_quickstart": {
        "model_type": "bert",
        "data_path": "/data/sentiment_analysis.csv",
        "hyperparameters": {"epochs": 5, "learning_rate": 0.001, "batch_size": 16},
        "description": "BERT sentiment analysis training",
        "requires_gpu": False,
    },
    "bert": {
        "model_type": "bert",
        "data_path": "/data/sentiment_analysis.csv",
        "hyperparameters": {
            "epochs": 5,
            "learning_rate": 0.0001,
            "batch_size": 16,
            "max_length": 512,
        },
        "description": "Fine-tune BERT for sentiment analysis",
        "requires_gpu": False,
        "framework_override": "pytorch-2.1",
    },
    "resnet": {
        "model_type": "resnet",
        "data_path": "/data/image_classification",
        "hyperparameters": {
            "epochs": 10,
            "learning_rate": 0.001,
            "batch_size": 32,
            "num_classes": 1000,
        },
        "description": "Train ResNet-50 for image classification",
        "requires_gpu": True,
        "framework_override": "pytorch-2.0-gpu",
    },
    "inception": {
        "model_type": "inception",
        "data_path": "/data/cifar10",
        "hyperparameters": {
            "epochs": 20,
            "learning_rate": 0.01,
            "batch_size": 64,
            "dropout_rate": 0.2,
        },
        "description": "Train Inception v3 on CIFAR-10",
        "requires_gpu": False,
        "framework_override": "tensorflow",
    },
    "random_forest": {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {
            "n_estimators": 100,
            "max_depth": 10,
            "min_samples_split": 5,
            "random_state": 42,
        },
        "description": "Train Random Forest for classification",
        "requires_gpu": False,
        "framework_override": "sklearn",
    },
}

# POST /jobs/inference, in the README's order: the quick start's, then the "API Examples".
INFERENCE_BODIES: dict[str, dict[str, Any]] = {
    "quickstart": {
        "model_id": "model_123",
        "input_data": "This is a great product!",
        "parameters": {"temperature": 0.7, "max_length": 100},
    },
    "text": {
        "model_id": "bert_model_123",
        "input_data": "This is a great product!",
        "parameters": {"temperature": 0.7, "max_length": 100},
    },
    "image": {
        "model_id": "resnet_model_456",
        "input_data": "/path/to/image.jpg",
        "parameters": {"top_k": 5, "confidence_threshold": 0.8},
    },
    "tabular": {
        "model_id": "random_forest_model_789",
        "input_data": "feature1,feature2,feature3,feature4",
        "parameters": {"probability": True},
    },
}

# The names of the quick start's bodies (the others are the README's "API Examples").
QUICK_START = frozenset({"bert_quickstart", "quickstart"})
