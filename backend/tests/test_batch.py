"""POST /jobs/batch: each job checked and routed as its single route would, refused alone,
queued together with one ``enqueue_many``; one answer per job, in order; idempotency keys
per job; the limits (1 to 1000 jobs, the body size); API keys."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis import Redis

from conftest import LiveApi, assert_error, heartbeat, register_model
from trainyard.client import Client, TrainyardError
from trainyard.engine import JobQueue
from trainyard.schema import (
    MAX_BATCH_JOBS,
    BatchSubmitResponse,
    InferenceJobRequest,
    TrainingJobRequest,
)
from trainyard_api.app import create_app
from trainyard_api.config import Settings
from trainyard_api.examples import BATCH_EXAMPLES, INFERENCE_EXAMPLES, TRAINING_EXAMPLES

KEY = "tk_batch_0123456789abcdef"


def training(name: str = "random_forest", **extra: Any) -> dict[str, Any]:
    return {"type": "training", **copy.deepcopy(TRAINING_EXAMPLES[name]["value"]), **extra}


def inference(model_id: str = "rf1", **extra: Any) -> dict[str, Any]:
    return {"type": "inference", "model_id": model_id, "input_data": "1,2", **extra}


def submit(client: TestClient, jobs: list[Any]) -> BatchSubmitResponse:
    resp = client.post("/jobs/batch", json={"jobs": jobs})
    assert resp.status_code == 200, resp.text
    return BatchSubmitResponse.model_validate(resp.json())


def fields_of(result: Any) -> list[str]:
    assert result.error is not None and result.job is None, result
    return [d.field for d in result.error.details]


@pytest.fixture
def app_queue(client: TestClient) -> JobQueue:
    """The app's own queue handle (to count how it is called)."""
    queue: JobQueue = client.app.state.queue  # type: ignore[attr-defined]
    return queue


def counting(monkeypatch: pytest.MonkeyPatch, target: JobQueue, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``target.<name>`` (which still runs)."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(target, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, spy)
    return calls


def test_mixed_batch_one_answer_per_job_in_order(
    client: TestClient, queue: JobQueue, app_queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_model(queue, "rf1")
    many = counting(monkeypatch, app_queue, "enqueue_many")
    single = counting(monkeypatch, app_queue, "enqueue")
    jobs: list[Any] = [
        training(),  # 0: queued on sklearn
        training(data_path="/data/missing.csv"),  # 1: data_path not there
        inference("rf1"),  # 2: queued on the model's runtime
        inference("no_such_model"),  # 3: 404 model_id
        training("bert", framework_override="tensorflow"),  # 4: routing refuses it
        "not a job",  # 5: not an object
        {"model_id": "rf1", "input_data": "1,2"},  # 6: no type
        training(max_attempts=99, hyperparameters={"a": {"nested": 1}}),  # 7: two bad fields
        inference("rf1", input_data=[]),  # 8: an empty input batch
        training("resnet"),  # 9: queued on pytorch-2.0-gpu
        training(base_model_id="nope"),  # 10: 404 base_model_id
    ]
    results = submit(client, jobs).results
    assert [r.index for r in results] == list(range(len(jobs)))
    statuses = [r.status_code for r in results]
    assert statuses == [202, 422, 202, 404, 422, 422, 422, 422, 422, 202, 404]
    # Everything valid went in one enqueue_many call, nothing through the single path.
    assert len(many) == 1 and len(many[0][0]) == 3 and single == []

    queued = {i: results[i].job for i in (0, 2, 9)}
    assert {i: (j.status, j.job_type, j.runtime) for i, j in queued.items() if j} == {
        0: ("queued", "training", "sklearn"),
        2: ("queued", "inference", "sklearn"),
        9: ("queued", "training", "pytorch-2.0-gpu"),
    }
    assert queued[2] is not None and queued[2].model_id == "rf1"
    assert queued[9] is not None and queued[9].waiting_reason is not None
    assert len({j.job_id for j in queued.values() if j}) == 3

    assert fields_of(results[1]) == ["jobs[1].data_path"]
    assert fields_of(results[3]) == ["jobs[3].model_id"]
    assert fields_of(results[4]) == ["jobs[4].framework_override"]
    assert fields_of(results[5]) == ["jobs[5]"]
    assert fields_of(results[6]) == ["jobs[6].type"]
    assert sorted(fields_of(results[7])) == ["jobs[7].hyperparameters", "jobs[7].max_attempts"]
    assert set(fields_of(results[8])) == {"jobs[8].input_data"}
    assert fields_of(results[10]) == ["jobs[10].base_model_id"]
    for result in results:
        if result.error is not None:
            assert result.error.status == result.status_code
            assert result.error.code in {"invalid_request", "not_found"}
            if result.status_code == 422:  # worded as the API words a 422: "<field>: <reason>"
                assert result.error.message.startswith(result.error.details[0].field + ": ")
    assert "no model 'no_such_model'" in (results[3].error.message if results[3].error else "")

    # The queued jobs are really there, and nothing else was queued.
    listed = {j["job_id"] for j in client.get("/jobs").json()["jobs"]}
    assert {j.job_id for j in queued.values() if j} <= listed
    assert client.get("/queues").json()["jobs_by_state"]["queued"] == 3


def test_a_batch_job_is_the_job_its_single_route_makes(client: TestClient, queue: JobQueue) -> None:
    """Same checks, same record: request, runtime, defaults, options, model_id field."""
    register_model(queue, "rf1")
    bodies = [
        training(priority="high", queue_ttl_s=600.0),
        training(
            "bert", requires_gpu=True, framework_override=None, timeout_s=60.0, max_attempts=5
        ),
        inference("rf1", parameters={"probability": True}, priority="low"),
    ]
    results = submit(client, bodies).results
    for body, result in zip(bodies, results, strict=True):
        assert result.job is not None, result
        single = {k: v for k, v in body.items() if k != "type"}
        resp = client.post(f"/jobs/{body['type']}", json=single)
        assert resp.status_code == 202, resp.text
        from_batch = client.get(f"/jobs/{result.job.job_id}").json()
        from_single = client.get(f"/jobs/{resp.json()['job_id']}").json()
        for record in (from_batch, from_single):
            del record["job_id"], record["created_at"]
        assert from_batch == from_single


def test_per_job_errors_match_the_single_routes(client: TestClient, queue: JobQueue) -> None:
    """A refused job answers the status and reasons its single submission answers."""
    register_model(queue, "rf1")
    bad = [
        training(data_path="/data/../etc/passwd"),
        training(model_type="gpt"),
        training(requires_gpu=True),  # random_forest has no GPU runtime
        training(max_attempts=True),
        inference("rf1", input_data="x" * 10, parameters={"p": {"nested": 1}}),
        inference("ghost"),
    ]
    results = submit(client, bad).results
    for index, (body, result) in enumerate(zip(bad, results, strict=True)):
        single = client.post(
            f"/jobs/{body['type']}", json={k: v for k, v in body.items() if k != "type"}
        )
        err = single.json()["error"]
        assert result.status_code == single.status_code == err["status"], (index, single.text)
        assert result.error is not None
        assert [(d.field, d.reason) for d in result.error.details] == [
            (f"jobs[{index}].{d['field']}", d["reason"]) for d in err["details"]
        ]
    assert client.get("/queues").json()["jobs_by_state"]["queued"] == 0


def test_idempotency_keys_within_and_across_batches(client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")
    jobs = [
        training(idempotency_key="nightly-1"),
        training(idempotency_key="nightly-1", description="a replay: body not compared"),
        inference("rf1", idempotency_key="predict-1"),
        training(idempotency_key="nightly-2"),
    ]
    first = submit(client, jobs).results
    assert [r.status_code for r in first] == [202, 200, 202, 202]
    ids = [r.job.job_id if r.job else None for r in first]
    assert ids[0] == ids[1] and len(set(ids)) == 3

    again = submit(client, [jobs[3], jobs[2], jobs[0]]).results
    assert [r.status_code for r in again] == [200, 200, 200]
    assert [r.job.job_id if r.job else None for r in again] == [ids[3], ids[2], ids[0]]

    # Keys are shared with the single routes, both ways.
    body = {k: v for k, v in training(idempotency_key="nightly-2").items() if k != "type"}
    replay = client.post("/jobs/training", json=body)
    assert replay.status_code == 200 and replay.json()["job_id"] == ids[3]
    fresh = client.post("/jobs/training", json={**body, "idempotency_key": "single-1"})
    assert fresh.status_code == 202
    (from_batch,) = submit(client, [training(idempotency_key="single-1")]).results
    assert from_batch.status_code == 200 and from_batch.job is not None
    assert from_batch.job.job_id == fresh.json()["job_id"]
    assert client.get("/queues").json()["jobs_by_state"]["queued"] == 4


def test_a_refused_job_does_not_take_its_key(client: TestClient) -> None:
    bad, good = training(idempotency_key="k-1", model_type="gpt"), training(idempotency_key="k-1")
    results = submit(client, [bad, good]).results
    assert [r.status_code for r in results] == [422, 202]


@pytest.fixture
def default_size_client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    """The app with the default MAX_BODY_BYTES (the test settings lower it to 64 KiB)."""
    default = Settings.model_fields["max_body_bytes"].default
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": default}))) as c:
        yield c


def thousand_jobs() -> list[dict[str, Any]]:
    """1000 realistic jobs: the seed's training bodies and inference on a tabular row."""
    jobs: list[dict[str, Any]] = []
    for i in range(MAX_BATCH_JOBS):
        if i % 2:
            jobs.append(inference("rf1", input_data=f"{i % 7}.1,3.5,1.4,0.2", priority="low"))
        else:
            name = sorted(TRAINING_EXAMPLES)[i % len(TRAINING_EXAMPLES)]
            jobs.append(training(name, model_name=f"sweep_{i}", idempotency_key=f"sweep-{i}"))
    return jobs


def test_a_thousand_jobs_are_accepted(default_size_client: TestClient, queue: JobQueue) -> None:
    register_model(queue, "rf1")
    jobs = thousand_jobs()
    size = len(json.dumps({"jobs": jobs}))
    assert size < Settings.model_fields["max_body_bytes"].default // 16  # far under the limit
    results = submit(default_size_client, jobs).results
    assert len(results) == MAX_BATCH_JOBS
    assert all(r.status_code == 202 for r in results), [r for r in results if r.error][:3]
    assert len({r.job.job_id for r in results if r.job}) == MAX_BATCH_JOBS
    depths = default_size_client.get("/queues").json()
    assert depths["jobs_by_state"]["queued"] == MAX_BATCH_JOBS
    assert depths["queues"]["sklearn"]["low"] == MAX_BATCH_JOBS // 2


def test_more_than_a_thousand_jobs_is_422_naming_jobs(
    default_size_client: TestClient, queue: JobQueue
) -> None:
    register_model(queue, "rf1")
    jobs = [*thousand_jobs(), training()]
    resp = default_size_client.post("/jobs/batch", json={"jobs": jobs})
    err = assert_error(resp, 422, "invalid_request", "jobs")
    assert "1000" in err["message"]
    assert default_size_client.get("/queues").json()["jobs_by_state"]["queued"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": []}, "jobs"),
        ({}, "jobs"),
        ({"jobs": {"type": "training"}}, "jobs"),
        ({"jobs": [{"type": "training"}], "wait": 5}, "wait"),
        ([{"type": "training"}], "body"),
    ],
    ids=["empty", "no-jobs", "jobs-not-a-list", "unknown-field", "a-bare-list"],
)
def test_a_malformed_batch_is_422(client: TestClient, body: Any, field: str) -> None:
    assert_error(client.post("/jobs/batch", json=body), 422, "invalid_request", field)


def test_a_batch_that_is_not_json_is_422(client: TestClient) -> None:
    resp = client.post(
        "/jobs/batch", content=b'{"jobs": [', headers={"content-type": "application/json"}
    )
    assert_error(resp, 422, "invalid_request", "body")


def test_a_batch_over_the_body_limit_is_413(client: TestClient, settings: Settings) -> None:
    jobs = [training(description="x" * 4000) for _ in range(settings.max_body_bytes // 4000)]
    resp = client.post("/jobs/batch", json={"jobs": jobs})
    assert_error(resp, 413, "payload_too_large", "body")
    assert client.get("/queues").json()["jobs_by_state"]["queued"] == 0


def test_with_api_keys_a_batch_needs_one(settings: Settings, redis_client: Redis) -> None:
    keyed = settings.model_copy(update={"api_keys": [SecretStr(KEY)]})
    with TestClient(create_app(keyed)) as c:
        refused = c.post("/jobs/batch", json={"jobs": [training()]})
        assert_error(refused, 401, "unauthorized", "Authorization")
        assert redis_client.dbsize() == 0  # nothing queued
        ok = c.post("/jobs/batch", json={"jobs": [training()]}, headers={"X-API-Key": KEY})
        assert ok.status_code == 200 and ok.json()["results"][0]["status_code"] == 202


def test_the_schema_documents_the_batch(client: TestClient, queue: JobQueue) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/jobs/batch"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    ref = body["schema"]["$ref"].rsplit("/", 1)[1]
    jobs = schema["components"]["schemas"][ref]["properties"]["jobs"]
    assert (jobs["minItems"], jobs["maxItems"]) == (1, MAX_BATCH_JOBS)
    assert jobs["items"]["discriminator"]["propertyName"] == "type"
    assert set(jobs["items"]["discriminator"]["mapping"]) == {"training", "inference"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/BatchSubmitResponse")
    assert {"413", "422", "503"} <= set(operation["responses"])
    # The examples are accepted as they are (their inference job names a seed model).
    register_model(queue, INFERENCE_EXAMPLES["tabular"]["value"]["model_id"])
    heartbeat(queue, "w-1", "sklearn")
    for example in BATCH_EXAMPLES.values():
        results = submit(client, example["value"]["jobs"]).results
        assert all(r.status_code == 202 for r in results), results


# -- the client ----------------------------------------------------------------------


@pytest.fixture
def live_api(settings: Settings, redis_client: Redis) -> Iterator[LiveApi]:
    default = Settings.model_fields["max_body_bytes"].default
    with LiveApi(settings.model_copy(update={"max_body_bytes": default})) as api:
        yield api


def test_client_submit_many_against_the_api(live_api: LiveApi, queue: JobQueue) -> None:
    register_model(queue, "rf1")
    jobs: list[TrainingJobRequest | InferenceJobRequest] = [
        TrainingJobRequest(
            model_type="random_forest",
            data_path="/data/tabular_data.csv",
            idempotency_key="c-1",
        ),
        InferenceJobRequest(model_id="rf1", input_data=["1,2", "3,4"]),
        InferenceJobRequest(model_id="ghost", input_data="1,2"),
        TrainingJobRequest(
            model_type="random_forest", data_path="/data/nope.csv", framework_override="sklearn"
        ),
    ]
    with Client(live_api.url) as ty:
        results = ty.submit_many(jobs)
        assert [r.status_code for r in results] == [202, 202, 404, 422]
        assert [r.accepted for r in results] == [True, True, False, False]
        assert results[0].job is not None and results[0].job.runtime == "sklearn"
        assert results[1].job is not None and results[1].job.model_id == "rf1"
        assert results[2].error is not None and results[2].error.code == "not_found"
        assert results[3].error is not None
        assert [d.field for d in results[3].error.details] == ["jobs[3].data_path"]
        record = ty.job(results[1].job.job_id).record()
        assert record["request"]["input_data"] == ["1,2", "3,4"]

        (replay,) = ty.submit_many(jobs[:1])
        assert replay.status_code == 200 and replay.job is not None
        assert replay.job.job_id == results[0].job.job_id
        assert ty.submit_many([]) == []
        with pytest.raises(TrainyardError) as caught:
            ty.submit_many(jobs[:1] * (MAX_BATCH_JOBS + 1))
        assert caught.value.status == 422 and caught.value.fields == ["jobs"]
