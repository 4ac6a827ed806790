"""Each deep-learning model type, end to end through the queue, on the runtime whose
environment runs this file (``TRAINYARD_REQUIRE_RUNTIME``; CI runs it once per runtime
environment): a real worker process claims the training job, its child trains on the
generated sample data and publishes per-epoch progress and log lines, the model is
registered, and an inference job with the seed's parameters returns a real prediction
from the same worker's inference process."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from runtime_support import REQUIRED_RUNTIME

from conftest import WorkerFarm, wait_terminal
from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema
from trainyard.routing import MODEL_TYPES, RUNTIMES
from trainyard.types import JobType

RUNTIME = RUNTIMES.get(REQUIRED_RUNTIME)
pytestmark = pytest.mark.skipif(
    RUNTIME is None or RUNTIME.device != "cpu" or RUNTIME.framework == "sklearn",
    reason="runs in a CPU deep-learning runtime's environment (TRAINYARD_REQUIRE_RUNTIME)",
)

TEXT = {"epochs": 3, "learning_rate": 0.001, "batch_size": 16, "max_length": 64,
        "hidden_size": 64, "num_layers": 2, "num_heads": 2}  # fmt: skip
# Small configurations of every model type (the runtime tests check accuracy; this checks
# the path through the queue).
# fmt: off
TRAINING: dict[str, dict[str, Any]] = {
    "bert": {"data_path": "/data/sentiment_analysis.csv", "hyperparameters": TEXT},
    "transformer": {"data_path": "/data/sentiment_analysis.csv", "hyperparameters": TEXT},
    "resnet": {
        "data_path": "/data/cifar10",
        "hyperparameters": {"architecture": "resnet18", "epochs": 2, "batch_size": 32,
                            "num_classes": 10},
    },
    "vgg": {
        "data_path": "/data/cifar10",
        "hyperparameters": {"architecture": "vgg11", "global_pool": True,
                            "classifier_width": 64, "epochs": 2, "num_classes": 10},
    },
    "mobilenet": {
        "data_path": "/data/cifar10",
        "hyperparameters": {"epochs": 2, "batch_size": 32, "dropout_rate": 0.2},
    },
    "inception": {
        "data_path": "/data/cifar10",
        "hyperparameters": {"epochs": 1, "batch_size": 64, "dropout_rate": 0.2},
    },
}
# fmt: on
SERVED = [m for m, route in MODEL_TYPES.items() if RUNTIME and route.framework == RUNTIME.framework]


@pytest.fixture(scope="module")
def worker(
    server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[JobQueue, WorkerFarm]]:
    assert RUNTIME is not None
    farm = WorkerFarm(server, tmp_path_factory.mktemp("runtime-jobs"))
    # Leases renewed often, as in the supervisor tests; an import of torch can take seconds.
    farm.start(WORKER_TYPE=RUNTIME.name, MODEL_FRAMEWORK=RUNTIME.framework, LEASE_S="10",
               RENEW_EVERY_S="1")  # fmt: skip
    queue = JobQueue(connect(server.url))
    yield queue, farm
    farm.stop_all()


def _train(queue: JobQueue, model_type: str) -> tuple[str, dict[str, str]]:
    assert RUNTIME is not None
    request = {"model_type": model_type, "description": f"{model_type} through the queue",
               "requires_gpu": False, "framework_override": RUNTIME.name,
               "model_name": f"{model_type}_e2e", **TRAINING[model_type]}  # fmt: skip
    job_id, _ = queue.enqueue(
        job_type=JobType.TRAINING, runtime=RUNTIME.name, request=request, timeout_s=300
    )
    return job_id, wait_terminal(queue, job_id, timeout_s=300)


def _infer(queue: JobQueue, model_id: str, input_data: Any, parameters: dict[str, Any]) -> Any:
    assert RUNTIME is not None
    job_id, _ = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime=RUNTIME.name,
        request={"model_id": model_id, "input_data": input_data, "parameters": parameters},
        extra_fields={"model_id": model_id},
    )
    return wait_terminal(queue, job_id, timeout_s=120)


@pytest.mark.parametrize("model_type", SERVED)
def test_trains_through_the_queue_then_serves(
    worker: tuple[JobQueue, WorkerFarm], model_type: str
) -> None:
    queue, farm = worker
    job_id, done = _train(queue, model_type)
    assert done["state"] == "succeeded", done.get("error")

    progress = [e.data for e in queue.events(job_id) if e.kind == "progress"]
    epochs = int(TRAINING[model_type]["hyperparameters"]["epochs"])
    per_epoch = [p for p in progress if p["phase"] == "val"]  # held-out metrics each epoch
    assert [int(p["epoch"]) for p in per_epoch] == list(range(1, epochs + 1))
    fields = {"epochs", "step", "steps", "loss", "eta_s", "fraction", "elapsed_s", "metrics"}
    assert all(fields <= set(p) and "val_accuracy" in p["metrics"] for p in per_epoch)
    train = [p for p in progress if p["phase"] == "train" and p["step"] > 0]
    assert train and all("loss" in p["metrics"] and "train_accuracy" in p["metrics"] for p in train)
    assert any(e.kind == "log" for e in queue.events(job_id))

    model = queue.get_model(f"{model_type}_e2e")
    assert model is not None and model["runtime"] == REQUIRED_RUNTIME
    assert {"accuracy", "loss"} <= set(model["metrics"]) and model["size_bytes"] > 0

    if MODEL_TYPES[model_type].task == "text":
        served = _infer(queue, model["model_id"], "This is a great product!",
                        {"temperature": 0.7, "max_length": 100})  # fmt: skip
        assert served["state"] == "succeeded", served.get("error")
        assert '"prediction"' in served["result"] and '"scores"' in served["result"]
        wrong = _infer(queue, model["model_id"], [], {})  # nothing to classify
    else:
        png = (farm.data_root / "cifar10" / "cat" / "0.png").read_bytes()
        served = _infer(queue, model["model_id"],
                        ["/data/cifar10/cat/0.png", base64.b64encode(png).decode()],
                        {"top_k": 5, "confidence_threshold": 0.1})  # fmt: skip
        assert served["state"] == "succeeded", served.get("error")
        assert '"predictions"' in served["result"] and '"top_k"' in served["result"]
        wrong = _infer(queue, model["model_id"], "This is a great product!", {})
    # Input of the wrong kind fails that job, readably, and the worker serves on.
    assert wrong["state"] == "failed" and wrong["error_kind"] == "user_error", wrong
    assert all(proc.poll() is None for proc in farm.procs)


def test_the_worker_registers_its_package_versions(worker: tuple[JobQueue, WorkerFarm]) -> None:
    queue, _ = worker
    assert RUNTIME is not None
    mine = [w for w in queue.live_workers(60_000) if w.get("runtime") == RUNTIME.name]
    assert mine, "the worker is not registered"
    packages = json.loads(mine[0]["packages"])
    framework = packages.get("torch") or packages.get("tensorflow-cpu")
    assert framework and framework.startswith(RUNTIME.framework_version + "."), packages
    assert mine[0]["framework_version"] == framework


def test_bad_training_data_fails_the_job_readably(worker: tuple[JobQueue, WorkerFarm]) -> None:
    queue, _ = worker
    assert RUNTIME is not None
    model_type, wrong_data = next(
        (m, "/data/cifar10" if MODEL_TYPES[m].task == "text" else "/data/tabular_data.csv")
        for m in SERVED
    )
    request = {"model_type": model_type, "data_path": wrong_data, "requires_gpu": False}
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME.name, request=request)
    failed = wait_terminal(queue, job_id, timeout_s=120)
    assert failed["state"] == "failed" and failed["error_kind"] == "user_error", failed
    assert failed["attempt"] == "1"  # not retried
    expected = "is a folder" if MODEL_TYPES[model_type].task == "text" else "is a file"
    assert expected in failed["error"], failed["error"]


def test_model_files_are_not_pickles(worker: tuple[JobQueue, WorkerFarm]) -> None:
    _, farm = worker
    files = [p for p in (farm.root / "models").rglob("*") if p.is_file()]
    assert files, "no model artifacts were written"
    for path in files:
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and path.suffix not in {".pkl", ".pt", ".bin"}, path



def test_a_job_that_runs_out_of_memory_fails_and_the_worker_lives_on(
    server: EmbeddedServer, farm: WorkerFarm
) -> None:
    if RUNTIME is None or RUNTIME.framework != "pytorch":
        pytest.skip("the memory limit is exercised with a PyTorch model")
    # Its own namespace: the module's worker of the same runtime must not take these jobs.
    queue = JobQueue(connect(server.url), KeySchema("oom"))
    # VGG-16's standard head alone is 400 MB of weights, Adam's state twice that.
    worker = farm.start(WORKER_TYPE=RUNTIME.name, MODEL_FRAMEWORK="pytorch", JOB_MEMORY_MB="800",
                        TRAINYARD_NAMESPACE="oom", LEASE_S="10", RENEW_EVERY_S="1")  # fmt: skip
    big = {"model_type": "vgg", "data_path": "/data/cifar10", "requires_gpu": False,
           "hyperparameters": {"architecture": "vgg16", "epochs": 1, "num_classes": 10}}
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME.name, request=big)
    failed = wait_terminal(queue, job_id, timeout_s=180)
    assert failed["state"] == "failed" and failed["error_kind"] == "user_error", failed
    assert "ran out of memory" in failed["error"] and failed["attempt"] == "1"

    small = {"model_type": "bert", "data_path": "/data/sentiment_analysis.csv",
             "requires_gpu": False, "hyperparameters": {**TEXT, "epochs": 1}}
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime=RUNTIME.name, request=small)
    assert wait_terminal(queue, job_id, timeout_s=180)["state"] == "succeeded"
    assert worker.poll() is None
