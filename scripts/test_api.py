#!/usr/bin/env python3
"""Drive a running Trainyard through the seed README's requests and print what came back.

    python scripts/test_api.py [--base-url http://localhost:8000] [--timeout 300]

Standard library only, so it runs with any Python 3. It submits every training example
from the README; those whose runtime has a live worker run to the end and the inference
examples then use the models they registered. Jobs for runtimes with no live worker are
reported with the reason they wait, and cancelled (pass --keep to leave them queued).
Exit code 0 when every job that could run succeeded. When the backend has API keys on,
set TRAINYARD_API_KEY: it is sent as a bearer token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TRAINING = [
    ("Quick start: BERT", {
        "model_type": "bert", "data_path": "/data/sentiment_analysis.csv",
        "hyperparameters": {"epochs": 5, "learning_rate": 0.001, "batch_size": 16},
        "description": "BERT sentiment analysis training", "requires_gpu": False},
     "model_123"),
    ("PyTorch BERT (CPU)", {
        "model_type": "bert", "data_path": "/data/sentiment_analysis.csv",
        "hyperparameters": {"epochs": 5, "learning_rate": 0.0001, "batch_size": 16,
                            "max_length": 512},
        "description": "Fine-tune BERT for sentiment analysis", "requires_gpu": False,
        "framework_override": "pytorch-2.1"}, "bert_model_123"),
    ("PyTorch ResNet (GPU)", {
        "model_type": "resnet", "data_path": "/data/image_classification",
        "hyperparameters": {"epochs": 10, "learning_rate": 0.001, "batch_size": 32,
                            "num_classes": 1000},
        "description": "Train ResNet-50 for image classification", "requires_gpu": True,
        "framework_override": "pytorch-2.0-gpu"}, "resnet_model_456"),
    ("TensorFlow Inception", {
        "model_type": "inception", "data_path": "/data/cifar10",
        "hyperparameters": {"epochs": 20, "learning_rate": 0.01, "batch_size": 64,
                            "dropout_rate": 0.2},
        "description": "Train Inception v3 on CIFAR-10", "requires_gpu": False,
        "framework_override": "tensorflow"}, "inception_cifar10"),
    ("Scikit-learn Random Forest", {
        "model_type": "random_forest", "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 100, "max_depth": 10, "min_samples_split": 5,
                            "random_state": 42},
        "description": "Train Random Forest for classification", "requires_gpu": False,
        "framework_override": "sklearn"}, "random_forest_model_789"),
]  # fmt: skip

# Where no GPU worker is live, the GPU example waits (a GPU job never runs on CPU); this
# CPU variant then trains the model the seed's image inference example asks for.
CPU_VARIANTS = {
    "resnet_model_456": ("PyTorch ResNet (CPU variant)", {
        "model_type": "resnet", "data_path": "/data/cifar10",
        "hyperparameters": {"architecture": "resnet18", "epochs": 5, "learning_rate": 0.001,
                            "batch_size": 32, "num_classes": 10},
        "description": "ResNet-18 on the CIFAR-10-shaped sample, on CPU",
        "requires_gpu": False, "framework_override": "pytorch-2.0"}),
}  # fmt: skip

INFERENCE = [
    ("Quick start: text", {"model_id": "model_123", "input_data": "This is a great product!",
                           "parameters": {"temperature": 0.7, "max_length": 100}}),
    ("Text classification", {"model_id": "bert_model_123", "input_data": "This is a great product!",
                             "parameters": {"temperature": 0.7, "max_length": 100}}),
    ("Image classification", {"model_id": "resnet_model_456", "input_data": "/path/to/image.jpg",
                              "parameters": {"top_k": 5, "confidence_threshold": 0.8}}),
    ("Tabular prediction", {"model_id": "random_forest_model_789",
                            "input_data": "feature1,feature2,feature3,feature4",
                            "parameters": {"probability": True}}),
]  # fmt: skip

# The seed's image path and CSV row are placeholders: their jobs fail, saying why. The same
# requests with real inputs from the sample data must succeed.
REAL_INPUTS = {
    "Image classification": "/data/cifar10/airplane/0.png",
    "Tabular prediction": "5.1,3.5,1.4,0.2",
}

TERMINAL = {"succeeded", "failed", "cancelled", "dead"}


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("TRAINYARD_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['TRAINYARD_API_KEY']}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=330) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait(base: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        _, status = call(base, "GET", f"/jobs/{job_id}/status")
        if (
            status["status"] in TERMINAL
            or status.get("waiting_reason")
            or time.monotonic() > deadline
        ):
            return status
        time.sleep(0.5)


def summary(status: dict[str, Any]) -> str:
    if status.get("status") == "succeeded":
        return json.dumps(status.get("result"))[:110]
    return (status.get("waiting_reason") or status.get("error") or "").splitlines()[0][:110]


def train(
    base: str, name: str, body: dict[str, Any], model_name: str, timeout_s: float
) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """One training example: its table row, and its final status (None if refused)."""
    started = time.monotonic()
    # The seed's body, plus a model name so the seed's inference examples can use it.
    code, status = call(base, "POST", "/jobs/training", {**body, "model_name": model_name})
    if code >= 400:
        return (name, str(code), "refused", "-", "-", status["error"]["message"][:110]), None
    status = wait(base, status["job_id"], timeout_s)
    accuracy = ((status.get("result") or {}).get("metrics") or {}).get("accuracy")
    shown = f"{accuracy:.3f}" if isinstance(accuracy, float) else "-"
    took = f"{time.monotonic() - started:.0f}s"
    return (name, str(code), status["status"], took, shown, summary(status)), status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://localhost:8000")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="leave jobs that cannot run queued")
    args = parser.parse_args()
    base = args.base_url.rstrip("/")

    code, health = call(base, "GET", "/health")
    print(f"GET /health -> {code} {json.dumps(health)}\n")
    rows: list[tuple[str, ...]] = []
    bad = 0
    ready_models: set[str] = set()
    for name, body, model_name in TRAINING:
        row, status = train(base, name, body, model_name, args.timeout)
        rows.append(row)
        if status is None:
            bad += 1
            continue
        if status.get("waiting_reason"):
            if not args.keep:
                call(base, "POST", f"/jobs/{status['job_id']}/cancel")
            if model_name in CPU_VARIANTS:
                variant, variant_body = CPU_VARIANTS[model_name]
                row, status = train(base, variant, variant_body, model_name, args.timeout)
                rows.append(row)
                if status is not None and status.get("waiting_reason") and not args.keep:
                    call(base, "POST", f"/jobs/{status['job_id']}/cancel")
        if status is not None and status["status"] == "succeeded":
            ready_models.add(model_name)
        elif status is None or not status.get("waiting_reason"):
            bad += 1

    for name, body in INFERENCE:
        if body["model_id"] not in ready_models:
            rows.append((name, "-", "skipped", "-", "-",
                         f"model {body['model_id']} was not trained here"))  # fmt: skip
            continue
        code, status = call(base, "POST", "/jobs/inference?wait=120", body)
        rows.append((name, str(code), status.get("status", "?"), "-", "-", summary(status)))
        if name in REAL_INPUTS:
            real = {**body, "input_data": REAL_INPUTS[name]}
            code, status = call(base, "POST", "/jobs/inference?wait=120", real)
            rows.append((f"{name} (real input)", str(code), status.get("status", "?"), "-", "-",
                         summary(status)))  # fmt: skip
        bad += status.get("status") != "succeeded"

    width = max(len(r[0]) for r in rows)
    print(f"{'example':<{width}}  http  state      time  accuracy  result / reason")
    for name, code, state, took, accuracy, detail in rows:
        print(f"{name:<{width}}  {code:<4}  {state:<9}  {took:>4}  {accuracy:>8}  {detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
