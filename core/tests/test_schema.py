"""The job schema: the seed README's request bodies validate verbatim; anything else is
held to a strict, flat shape."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from trainyard.schema import (
    MAX_BATCH_JOBS,
    BatchJob,
    BatchSubmitResponse,
    InferenceBatchJob,
    InferenceJobRequest,
    TrainingBatchJob,
    TrainingJobRequest,
    job_from_hash,
)
from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES
from trainyard.types import JobState, Priority

# The seed README's bodies, verbatim (quick start and "API Examples").
SEED_TRAINING_BODIES: list[dict[str, Any]] = list(TRAINING_BODIES.values())
SEED_INFERENCE_BODIES: list[dict[str, Any]] = list(INFERENCE_BODIES.values())


def _error_fields(caught: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in caught.value.errors()}


@pytest.mark.parametrize("body", SEED_TRAINING_BODIES)
def test_the_seed_training_bodies_validate_verbatim(body: dict[str, Any]) -> None:
    request = TrainingJobRequest.model_validate(body)
    assert request.model_type == body["model_type"]
    assert request.hyperparameters == body["hyperparameters"]
    assert request.priority is Priority.NORMAL and request.max_attempts is None


@pytest.mark.parametrize("body", SEED_INFERENCE_BODIES)
def test_the_seed_inference_bodies_validate_verbatim(body: dict[str, Any]) -> None:
    request = InferenceJobRequest.model_validate(body)
    assert request.input_data == body["input_data"]
    assert request.parameters == body["parameters"]


def test_the_seed_bodies_round_trip_through_json() -> None:
    import json

    for body in SEED_TRAINING_BODIES:
        assert (
            TrainingJobRequest.model_validate_json(json.dumps(body)).model_type
            == body["model_type"]
        )
    for body in SEED_INFERENCE_BODIES:
        assert (
            InferenceJobRequest.model_validate_json(json.dumps(body)).model_id == body["model_id"]
        )


def test_our_optional_extras_are_accepted() -> None:
    request = TrainingJobRequest.model_validate(
        {
            **SEED_TRAINING_BODIES[4],
            "priority": "high",
            "max_attempts": 5,
            "timeout_s": 600,
            "queue_ttl_s": 60,
            "idempotency_key": "nightly-2024.01.01",
            "model_name": "rf_v2",
            "label_column": "species",
        }
    )
    assert request.priority is Priority.HIGH and request.model_name == "rf_v2"
    batch = InferenceJobRequest.model_validate({"model_id": "m1", "input_data": ["1,2", "3,4"]})
    assert batch.input_data == ["1,2", "3,4"]


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (TrainingJobRequest, {**SEED_TRAINING_BODIES[0], "gpu": True}, "gpu"),
        (TrainingJobRequest, {**SEED_TRAINING_BODIES[0], "worker_type": "x"}, "worker_type"),
        (InferenceJobRequest, {**SEED_INFERENCE_BODIES[0], "model_type": "bert"}, "model_type"),
    ],
)
def test_extra_fields_are_forbidden(model: type, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)  # type: ignore[attr-defined]
    assert field in _error_fields(caught)


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"optimizer": {"name": "adam"}},
        {"layers": [[1, 2], [3]]},
        {"layers": [{"units": 3}]},
        {"x" * 65: 1},
        {"note": "y" * 1025},
        {f"h{i}": i for i in range(65)},
        {"grid": list(range(65))},
    ],
)
def test_hyperparameters_must_be_flat_and_small(hyperparameters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJobRequest.model_validate(
            {**SEED_TRAINING_BODIES[4], "hyperparameters": hyperparameters}
        )
    assert "hyperparameters" in _error_fields(caught)


def test_flat_hyperparameters_of_every_scalar_kind_and_short_lists_are_accepted() -> None:
    hp = {"a": 1, "b": 0.5, "c": "s", "d": True, "e": None, "f": [1, 2.5, "x", False]}
    assert (
        TrainingJobRequest.model_validate(
            {**SEED_TRAINING_BODIES[4], "hyperparameters": hp}
        ).hyperparameters
        == hp
    )


def test_inference_parameters_must_be_flat() -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceJobRequest.model_validate(
            {**SEED_INFERENCE_BODIES[0], "parameters": {"a": {"b": 1}}}
        )
    assert "parameters" in _error_fields(caught)


@pytest.mark.parametrize("name", ["rf", "rf_v2", "Model-1.0", "a" * 128, "9lives"])
def test_model_name_and_idempotency_key_accept_safe_ids(name: str) -> None:
    body = {**SEED_TRAINING_BODIES[4], "model_name": name, "idempotency_key": name}
    request = TrainingJobRequest.model_validate(body)
    assert request.model_name == request.idempotency_key == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 129, "-leading", ".hidden", "has space", "a/b", "a:b", "{trainyard}", "ü", "a*"],
)
@pytest.mark.parametrize("field", ["model_name", "idempotency_key"])
def test_model_name_and_idempotency_key_refuse_unsafe_ids(name: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJobRequest.model_validate({**SEED_TRAINING_BODIES[4], field: name})
    assert field in _error_fields(caught)


@pytest.mark.parametrize("model_id", ["../etc", "a b", ""])
def test_inference_model_id_must_be_a_safe_id(model_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceJobRequest.model_validate({**SEED_INFERENCE_BODIES[0], "model_id": model_id})
    assert "model_id" in _error_fields(caught)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", "urgent"),
        ("max_attempts", 0),
        ("max_attempts", 21),
        ("timeout_s", 0),
        ("queue_ttl_s", -1),
        ("data_path", ""),
        ("requires_gpu", "maybe"),
    ],
)
def test_out_of_range_options_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJobRequest.model_validate({**SEED_TRAINING_BODIES[4], field: value})
    assert field in _error_fields(caught)


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJobRequest.model_validate({"hyperparameters": {}})
    assert {"model_type", "data_path"} <= _error_fields(caught)
    with pytest.raises(ValidationError) as caught:
        InferenceJobRequest.model_validate({})
    assert {"model_id", "input_data"} <= _error_fields(caught)


def test_an_empty_inference_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        InferenceJobRequest.model_validate({"model_id": "m", "input_data": []})


def test_job_from_hash_builds_the_api_record() -> None:
    record = job_from_hash(
        {
            "id": "j1",
            "state": "retrying",
            "type": "training",
            "runtime": "sklearn",
            "priority": "low",
            "attempt": "1",
            "max_attempts": "3",
            "request": '{"model_type": "svm"}',
            "error_kind": "crashed",
            "error": "boom",
            "cancel_requested": "0",
            "created_at": "1700000000000",
            "retry_at": "1700000005000",
            "attempt_id": "",
            "timeout_s": "",
        }
    )
    assert record.status is JobState.RETRYING and record.priority is Priority.LOW
    assert record.request == {"model_type": "svm"}
    assert record.retry_at is not None and record.created_at is not None
    assert (record.retry_at - record.created_at).total_seconds() == 5
    assert record.attempt_id is None and record.timeout_s is None and not record.cancel_requested


# -- batches (POST /jobs/batch) -----------------------------------------------------------


def test_a_batch_job_is_a_single_body_plus_its_type() -> None:
    jobs = TypeAdapter(list[BatchJob]).validate_python(
        [
            {"type": "training", **SEED_TRAINING_BODIES[0]},
            {"type": "inference", **SEED_INFERENCE_BODIES[0]},
        ]
    )
    assert isinstance(jobs[0], TrainingBatchJob) and isinstance(jobs[0], TrainingJobRequest)
    assert isinstance(jobs[1], InferenceBatchJob) and isinstance(jobs[1], InferenceJobRequest)
    with pytest.raises(ValidationError):  # the type decides which body it must be
        TypeAdapter(BatchJob).validate_python({"type": "inference", **SEED_TRAINING_BODIES[0]})
    with pytest.raises(ValidationError):
        TypeAdapter(BatchJob).validate_python(SEED_TRAINING_BODIES[0])  # no type
    with pytest.raises(ValidationError):  # and a single body knows no type
        TrainingJobRequest.model_validate({"type": "training", **SEED_TRAINING_BODIES[0]})
    assert MAX_BATCH_JOBS == 1000


def test_a_batch_answer_parses_into_typed_results() -> None:
    status = {
        "job_id": "j1",
        "status": "queued",
        "job_type": "training",
        "runtime": "sklearn",
        "attempt": 0,
        "max_attempts": 3,
    }
    error = {
        "status": 422,
        "code": "invalid_request",
        "message": "jobs[1].data_path: no such file",
        "details": [{"field": "jobs[1].data_path", "reason": "no such file"}],
    }
    answer = BatchSubmitResponse.model_validate(
        {
            "results": [
                {"index": 0, "status_code": 202, "job": status, "error": None},
                {"index": 1, "status_code": 422, "job": None, "error": error},
            ]
        }
    )
    queued, refused = answer.results
    assert queued.accepted and queued.job is not None and queued.job.status is JobState.QUEUED
    assert not refused.accepted and refused.error is not None
    assert [d.field for d in refused.error.details] == ["jobs[1].data_path"]
