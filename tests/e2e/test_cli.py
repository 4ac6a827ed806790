"""The ``trainyard`` command line, run as a subprocess against the running system."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest

from conftest import System
from trainyard.seed_examples import TRAINING_BODIES

SEED_RANDOM_FOREST = TRAINING_BODIES["random_forest"]


def trainyard(system: System, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [
            os.environ["TRAINYARD_BACKEND_PYTHON"],
            "-m",
            "trainyard.cli",
            "--url",
            system.base_url,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trained(system: System) -> dict[str, Any]:
    """The seed's random forest, submitted with ``--wait``; its final status."""
    model_name = f"rf_cli_{uuid.uuid4().hex[:8]}"
    seed = SEED_RANDOM_FOREST
    hp = [arg for k, v in seed["hyperparameters"].items() for arg in ("--hp", f"{k}={v}")]
    done = trainyard(
        system,
        "submit",
        "training",
        "--model-type",
        seed["model_type"],
        "--data-path",
        seed["data_path"],
        *hp,
        "--framework-override",
        seed["framework_override"],
        "--description",
        seed["description"],
        "--model-name",
        model_name,
        "--wait",
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "succeeded" in done.stdout and model_name in done.stdout
    assert "accuracy=" in done.stdout
    assert "running" in done.stderr  # the plain progress lines (not a TTY)
    job_id = next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("job:"))
    return {"job_id": job_id, "model_id": model_name}


def test_submit_training_wait_succeeds_with_a_model(trained: dict[str, Any]) -> None:
    assert trained["job_id"] and trained["model_id"]


def test_submit_inference_wait_gives_a_prediction(system: System, trained: dict[str, Any]) -> None:
    def predict(*flags: str) -> subprocess.CompletedProcess[str]:
        return trainyard(
            system,
            *flags,
            "submit",
            "inference",
            "--model-id",
            trained["model_id"],
            "--input",
            "5.1,3.5,1.4,0.2",
            "--param",
            "probability=true",
            "--wait",
        )

    done = predict()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "succeeded" in done.stdout and "prediction:" in done.stdout
    final = as_json(predict("--json"))
    result = final["result"]
    assert final["status"] == "succeeded" and result["prediction"] in result["probabilities"]


def test_status_shows_the_finished_job(system: System, trained: dict[str, Any]) -> None:
    done = trainyard(system, "status", trained["job_id"])
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and trained["model_id"] in done.stdout
    follow = trainyard(system, "status", trained["job_id"], "--follow", timeout=60)
    assert follow.returncode == 0, follow.stderr
    status = as_json(trainyard(system, "--json", "status", trained["job_id"]))
    assert status["status"] == "succeeded" and status["model_id"] == trained["model_id"]


def test_logs_show_the_training_output(system: System, trained: dict[str, Any]) -> None:
    done = trainyard(system, "logs", trained["job_id"])
    assert done.returncode == 0, done.stderr
    assert "held-out accuracy" in done.stdout
    followed = trainyard(system, "logs", trained["job_id"], "--follow", timeout=60)
    assert followed.returncode == 0 and "held-out accuracy" in followed.stdout


def test_models_and_model_list_the_trained_model(system: System, trained: dict[str, Any]) -> None:
    done = trainyard(system, "models")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.startswith("MODEL ID")
    assert any(row.split()[0] == trained["model_id"] for row in rows)
    one = trainyard(system, "model", trained["model_id"])
    assert one.returncode == 0 and "random_forest" in one.stdout


def test_workers_shows_the_sklearn_worker(system: System) -> None:
    done = trainyard(system, "workers")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert "RUNTIME" in header and any(" sklearn " in f" {row} " for row in rows)
    workers = as_json(trainyard(system, "--json", "workers"))["workers"]
    assert any(w["runtime"] == "sklearn" for w in workers)


def test_jobs_and_queues(system: System, trained: dict[str, Any]) -> None:
    done = trainyard(system, "jobs", "--type", "training", "--limit", "200")
    assert done.returncode == 0, done.stderr
    assert trained["job_id"] in done.stdout
    queues = trainyard(system, "queues")
    assert queues.returncode == 0 and "sklearn" in queues.stdout


def test_cancel_of_a_finished_job_is_exit_2_with_the_conflict(
    system: System, trained: dict[str, Any]
) -> None:
    done = trainyard(system, "cancel", trained["job_id"])
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "already ended" in done.stderr


def test_a_bad_model_type_is_exit_2_naming_model_type(system: System) -> None:
    done = trainyard(
        system,
        "submit",
        "training",
        "--model-type",
        "not_a_model",
        "--data-path",
        "/data/tabular_data.csv",
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "model_type" in done.stderr


def test_an_unknown_job_is_exit_2(system: System) -> None:
    done = trainyard(system, "status", "no_such_job_" + uuid.uuid4().hex[:6])
    assert done.returncode == 2 and "error: " in done.stderr
