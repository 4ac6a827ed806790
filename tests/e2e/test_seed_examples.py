"""The seed README's scikit-learn examples, posted verbatim against a running system."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from conftest import REPO_ROOT, System, wait_for
from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES

SEED_RANDOM_FOREST = TRAINING_BODIES["random_forest"]
SEED_TABULAR_INFERENCE = INFERENCE_BODIES["tabular"]
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}


def _status(system: System, job_id: str) -> dict[str, Any]:
    reply = system.http.get(f"/jobs/{job_id}/status")
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_seed_random_forest_trains_and_reports_running_then_succeeded(system: System) -> None:
    reply = system.http.post("/jobs/training", json=SEED_RANDOM_FOREST)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job_id"]
    seen: list[str] = []

    def finished() -> dict[str, Any] | None:
        status = _status(system, job_id)
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        return status if status["status"] in TERMINAL else None

    final = wait_for(finished, 120, "the training job")
    assert final["status"] == "succeeded", final
    assert "running" in seen
    assert final["result"]["metrics"]["accuracy"] >= 0.9
    model_id = final["model_id"]
    model = system.http.get(f"/models/{model_id}").json()
    assert model["model_type"] == "random_forest" and model["runtime"] == "sklearn"
    assert model["hyperparameters"]["n_estimators"] == 100
    assert model["label_names"] and model["size_bytes"] > 0


def test_seed_tabular_inference_returns_a_prediction(system: System) -> None:
    named = {**SEED_RANDOM_FOREST, "model_name": "random_forest_model_789"}
    job_id = system.http.post("/jobs/training", json=named).json()["job_id"]
    trained = wait_for(
        lambda: (s := _status(system, job_id))["status"] in TERMINAL and s,
        120,
        "the named training job",
    )
    assert trained["status"] == "succeeded" and trained["model_id"] == "random_forest_model_789"

    values = {**SEED_TABULAR_INFERENCE, "input_data": "5.1,3.5,1.4,0.2"}
    reply = system.http.post("/jobs/inference", params={"wait": 60}, json=values)
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    assert result["prediction"] in result["probabilities"]
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-6

    # The seed's own input is a row of feature names: a failed job that says so.
    reply = system.http.post("/jobs/inference", params={"wait": 60}, json=SEED_TABULAR_INFERENCE)
    status = reply.json()
    assert status["status"] == "failed" and "header row" in status["error"]


def test_a_job_for_a_runtime_with_no_worker_says_why_it_waits(system: System) -> None:
    body = {
        "model_type": "inception",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"epochs": 1},
        "framework_override": "tensorflow",
    }
    reply = system.http.post("/jobs/training", json=body)
    assert reply.status_code == 202, reply.text
    status = reply.json()
    assert status["waiting_reason"] == "no live worker serves runtime tensorflow"
    assert system.http.post(f"/jobs/{status['job_id']}/cancel").json()["status"] == "cancelled"


def test_scripts_test_api_drives_the_running_system(system: System) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts/test_api.py"),
            "--base-url",
            system.base_url,
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Tabular prediction (real input)" in out.stdout and "succeeded" in out.stdout
