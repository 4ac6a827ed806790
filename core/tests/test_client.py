"""The HTTP client against a scripted API (httpx.MockTransport): requests it sends, how it
reads answers, errors and event streams. The API itself is tested in the backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_replies import status_reply as _status

from trainyard.client import Client, JobFailed, TrainyardError
from trainyard.schema import InferenceJobRequest, JobStatus, TrainingJobRequest

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **kwargs: Any) -> Client:
    return Client("http://api.test/", transport=httpx.MockTransport(handler), **kwargs)


def test_train_posts_the_seed_body_with_options_and_returns_a_handle() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=_status("abc"))

    with _client(handler, api_key="secret") as ty:
        job = ty.train(
            "random_forest",
            "/data/tabular_data.csv",
            {"n_estimators": 100},
            description="rf",
            framework_override="sklearn",
            priority="high",
            model_name=None,
        )
    assert job.id == "abc" and job.submitted == _status("abc")
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/jobs/training")
    assert json.loads(request.content) == {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 100},
        "description": "rf",
        "framework_override": "sklearn",
        "priority": "high",
    }
    assert request.headers["Authorization"] == "Bearer secret"


def test_infer_passes_wait_as_a_query_parameter() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/jobs/inference"
        assert request.url.params["wait"] == "5"
        assert json.loads(request.content)["input_data"] == ["1,2", "3,4"]
        return httpx.Response(200, json=_status("i1", "succeeded", result={"predictions": [0, 1]}))

    with _client(handler) as ty:
        job = ty.infer("rf-1", ["1,2", "3,4"], wait=5)
        assert job.submitted is not None and job.submitted["status"] == "succeeded"


def test_train_passes_wait_as_a_query_parameter() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/jobs/training"
        assert request.url.params["wait"] == "60"
        assert "wait" not in json.loads(request.content)
        return httpx.Response(200, json=_status("t1", "succeeded", model_id="rf"))

    with _client(handler) as ty:
        job = ty.train("random_forest", "/data/tabular_data.csv", wait=60)
        assert job.submitted is not None and job.submitted["model_id"] == "rf"


def test_submit_many_sends_one_batch_and_returns_typed_results() -> None:
    seen: list[httpx.Request] = []
    error = {
        "status": 404,
        "code": "not_found",
        "message": "no model 'ghost'",
        "details": [{"field": "jobs[1].model_id", "reason": "no model 'ghost'"}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = {**_status("t1"), "attempt": 0, "max_attempts": 3}
        results = [
            {"index": 0, "status_code": 202, "job": status, "error": None},
            {"index": 1, "status_code": 404, "job": None, "error": error},
        ]
        return httpx.Response(200, json={"results": results})

    jobs: list[TrainingJobRequest | InferenceJobRequest] = [
        TrainingJobRequest(model_type="random_forest", data_path="/data/t.csv", priority="high"),
        InferenceJobRequest(model_id="ghost", input_data=["1,2"]),
    ]
    with _client(handler, api_key="secret") as ty:
        results = ty.submit_many(jobs)
        assert ty.submit_many([]) == []  # nothing to send: no request
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/jobs/batch")
    assert request.headers["Authorization"] == "Bearer secret"
    # The fields the caller set, and each job's type; defaults are left to the API.
    assert json.loads(request.content) == {
        "jobs": [
            {
                "type": "training",
                "model_type": "random_forest",
                "data_path": "/data/t.csv",
                "priority": "high",
            },
            {"type": "inference", "model_id": "ghost", "input_data": ["1,2"]},
        ]
    }
    queued, refused = results
    assert isinstance(queued.job, JobStatus) and queued.job.job_id == "t1"
    assert queued.status_code == 202 and queued.error is None and queued.accepted
    assert refused.job is None and refused.error is not None and not refused.accepted
    assert refused.error.code == "not_found"
    assert [d.field for d in refused.error.details] == ["jobs[1].model_id"]


def test_submit_many_raises_when_the_api_refuses_the_whole_batch() -> None:
    body = {
        "error": {
            "status": 422,
            "code": "invalid_request",
            "message": "jobs: List should have at most 1000 items after validation, not 1001",
            "details": [{"field": "jobs", "reason": "List should have at most 1000 items"}],
        }
    }
    job = InferenceJobRequest(model_id="m", input_data="1")
    with (
        _client(lambda _: httpx.Response(422, json=body)) as ty,
        pytest.raises(TrainyardError) as caught,
    ):
        ty.submit_many([job] * 1001)
    assert caught.value.status == 422 and caught.value.fields == ["jobs"]


def test_submit_many_takes_request_models_only() -> None:
    with _client(lambda _: httpx.Response(500)) as ty, pytest.raises(TypeError):
        ty.submit_many([{"model_id": "m", "input_data": "1"}])  # type: ignore[list-item]


def test_api_errors_become_trainyard_errors_with_their_fields() -> None:
    body = {
        "error": {
            "status": 422,
            "code": "invalid_request",
            "message": "unknown model_type 'gpt'",
            "details": [{"field": "model_type", "reason": "unknown"}],
        }
    }
    with (
        _client(lambda _: httpx.Response(422, json=body)) as ty,
        pytest.raises(TrainyardError) as caught,
    ):
        ty.train("gpt", "/data/x.csv")
    err = caught.value
    assert (err.status, err.code, err.message) == (
        422,
        "invalid_request",
        "unknown model_type 'gpt'",
    )
    assert err.fields == ["model_type"]


def test_a_non_json_error_still_raises_a_trainyard_error() -> None:
    with (
        _client(lambda _: httpx.Response(502, text="Bad Gateway")) as ty,
        pytest.raises(TrainyardError) as caught,
    ):
        ty.health()
    assert (caught.value.status, caught.value.code) == (502, "http_error")


def test_jobs_follows_cursors_up_to_the_limit() -> None:
    pages = {
        None: {"jobs": [_status("j3"), _status("j2")], "next_cursor": "2"},
        "2": {"jobs": [_status("j1")], "next_cursor": None},
    }
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        return httpx.Response(200, json=pages[params.get("cursor")])

    with _client(handler) as ty:
        jobs = ty.jobs(state="queued", limit=10)
    assert [j["job_id"] for j in jobs] == ["j3", "j2", "j1"]
    assert asked[0] == {"state": "queued", "limit": "10"}
    assert asked[1] == {"state": "queued", "limit": "8", "cursor": "2"}


def test_wait_follows_the_event_stream_until_a_final_state() -> None:
    states = iter(["running", "succeeded"])
    stream = (
        "retry: 2000\n\n"
        'id: 1-0\nevent: state\ndata: {"state":"running","attempt":1}\n\n'
        ": keepalive\n\n"
        'id: 2-0\nevent: progress\ndata: {"epoch":1}\n\n'
        'id: 3-0\nevent: state\ndata: {"state":"succeeded"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs/j1/events":
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_status("j1", next(states), result={"accuracy": 1.0}))

    with _client(handler) as ty:
        job = ty.job("j1")
        assert job.result(timeout=5) == {"accuracy": 1.0}


def test_events_yield_parsed_records_and_resume_after_a_dropped_stream() -> None:
    calls: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json=_status("j1", "running"))
        calls.append(request.headers.get("Last-Event-ID"))
        text = (
            'id: 1-0\nevent: state\ndata: {"state":"running"}\n\n'
            if len(calls) == 1
            else 'id: 2-0\nevent: state\ndata: {"state":"failed"}\n\n'
        )
        return httpx.Response(200, text=text)

    with _client(handler) as ty:
        events = list(ty.job("j1").events(timeout=5))
    assert [(e["id"], e["kind"], e["data"]["state"]) for e in events] == [
        ("1-0", "state", "running"),
        ("2-0", "state", "failed"),
    ]
    assert calls == [None, "1-0"]


def test_result_of_a_failed_job_raises_job_failed() -> None:
    final = _status("j1", "dead", error="worker lost", error_kind="lost")
    with (
        _client(lambda _: httpx.Response(200, json=final)) as ty,
        pytest.raises(JobFailed) as caught,
    ):
        ty.job("j1").result(timeout=1)
    assert caught.value.state == "dead" and caught.value.error_kind == "lost"
    assert "worker lost" in str(caught.value)


def test_wait_with_polling_gives_up_after_its_timeout() -> None:
    with (
        _client(lambda _: httpx.Response(200, json=_status("j1", "running"))) as ty,
        pytest.raises(TimeoutError),
    ):
        ty.job("j1").wait(timeout=0.05, poll=0.01)


def test_wait_on_the_stream_gives_up_after_its_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text=": keepalive\n\n")
        return httpx.Response(200, json=_status("j1", "queued"))

    with _client(handler) as ty, pytest.raises(TimeoutError):
        ty.job("j1").wait(timeout=0.05)


def test_cancel_logs_and_the_listing_endpoints() -> None:
    answers: dict[tuple[str, str], Any] = {
        ("POST", "/jobs/j1/cancel"): _status("j1", "running", cancel_requested=True),
        ("GET", "/jobs/j1/logs"): {"job_id": "j1", "lines": [{"id": "1-0", "line": "hi"}]},
        ("GET", "/jobs/j1"): {**_status("j1"), "request": {}},
        ("GET", "/models"): {"models": [{"model_id": "m1"}]},
        ("GET", "/models/m1"): {"model_id": "m1"},
        ("GET", "/workers"): {"workers": [{"worker_id": "w1"}]},
        ("GET", "/queues"): {"queues": []},
        ("GET", "/health"): {"status": "ok"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[(request.method, request.url.path)])

    with _client(handler) as ty:
        job = ty.job("j1")
        assert job.cancel()["cancel_requested"] is True
        assert job.logs() == [{"id": "1-0", "line": "hi"}]
        assert job.record()["request"] == {}
        assert ty.models() == [{"model_id": "m1"}]
        assert ty.model("m1") == {"model_id": "m1"}
        assert ty.workers() == [{"worker_id": "w1"}]
        assert ty.queues() == {"queues": []}
        assert ty.health() == {"status": "ok"}


def test_following_gives_up_on_a_backend_that_stays_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("trainyard.client.MAX_RECONNECTS", 3)
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler) as ty, pytest.raises(httpx.ConnectError):
        list(ty.job("abc").events(timeout=60))
    assert attempts == ["/jobs/abc/events"] * 3
