"""Fuzz the HTTP API with Schemathesis, from the OpenAPI schema the app serves.

The app runs for real: ``create_app`` under uvicorn on a free loopback port (its lifespan,
its middleware, real HTTP parsing), against the session's embedded Valkey, with the test
settings of ``conftest.py``. Schemathesis loads ``/openapi.json`` from it and, for every
operation, sends the schema's examples, boundary cases, then random valid and invalid
requests, and checks every answer: no 5xx, a documented status code, the documented
content type and body schema (each event of the event stream too), invalid requests
refused, valid ones accepted (see ``SEMANTIC_FIELDS`` for the submissions; POST /jobs/batch
answers 200 with a result per job, so ``check_batch`` makes those two checks per job).

Before fuzzing, the database holds real state written the way workers write it: a live
worker, registered models (also under the model ids of the schema's examples), and jobs
that succeeded, failed, died, run or wait. A generation hook swaps a generated (valid) job
or model id for one of those most of the time, so the success answers of the routes that
read, cancel, redrive or stream a job are checked too, not only their 404s; the run fails
if any operation never answered 2xx.

Bounds, so the file stays CI-sized (about 30 s on two cores):

* ``?wait=`` on POST /jobs/training and /jobs/inference: the app runs with ``max_wait_s`` =
  0.2, so a valid wait blocks at most that long (a longer one is refused with 422, checked
  too).
* GET /jobs/{job_id}/events streams until the job ends. It is fuzzed, but only ids of jobs
  that already ended are swapped in, whose streams end at once; a generated id names no job
  (404) or is malformed (422). The request timeout backs this up: a stream that never ends
  fails the test (pytest-timeout at worst) instead of hanging CI.
* GET /events (the activity stream) never ends by design, so it is left out here; its
  parameters (kinds, after, Last-Event-ID) and their 422s are tested in ``test_activity.py``.

Two passes: the API open (the local default), and a shorter one with API keys on, sending a
valid key (Schemathesis also checks that the key is enforced: a request without one or with
a wrong one must get 401).

``TRAINYARD_FUZZ_EXAMPLES`` (default 20) sets the random examples per operation of the open
pass (the keyed pass runs a quarter as many), on top of the schema's examples and the
boundary cases; e.g. ``TRAINYARD_FUZZ_EXAMPLES=500`` for a longer hunt (minutes; raise
pytest's timeout with ``-o timeout=0``). A failure prints the Hypothesis seed to replay it.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from redis import Redis
from schemathesis import CheckFunction
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from conftest import LiveApi, assert_error, heartbeat, model_record, register_model, run_job
from trainyard.engine import JobQueue
from trainyard.routing import MODEL_TYPES, RUNTIMES
from trainyard.schema import ID_PATTERN
from trainyard.seed_examples import INFERENCE_BODIES
from trainyard.types import JobType
from trainyard_api.config import Settings

FUZZ_EXAMPLES = int(os.environ.get("TRAINYARD_FUZZ_EXAMPLES", "20"))
MAX_WAIT_S = 0.2
# Longest any one request may take: a ?wait= (0.2 s) plus slack for a loaded CI machine.
REQUEST_TIMEOUT_S = 30.0
# The activity stream: open until the client leaves (see the module's docstring).
NEVER_ENDING = "/events"
API_KEY = "fuzz-key-0123456789abcdef"
# The key in both schemes the schema declares: given as the request's own headers,
# Schemathesis treats them as real credentials (and checks that requests without them, or
# with wrong ones, get 401) instead of making up values for a scheme left out.
KEY_HEADERS = {"Authorization": f"Bearer {API_KEY}", "X-API-Key": API_KEY}

# A schema-valid submission can still be refused (422) for what no JSON schema says: the
# model type runs on another framework than the runtime asked for, or not on the GPU asked
# for; the data path is not in the data root; the base model is of another type; ?wait= is
# over this server's max_wait_s; the body and the header carry different idempotency keys.
# Only these fields may be blamed: a refusal naming any other field means the schema lets
# through what the app refuses.
SEMANTIC_FIELDS: dict[str, set[str]] = {
    "POST /jobs/training": {
        "wait",
        "framework_override",
        "requires_gpu",
        "data_path",
        "base_model_id",
        "idempotency_key",
    },
    "POST /jobs/inference": {"wait", "idempotency_key"},
}


@dataclass
class Seeded:
    """Ids of the real state in the database, which the id hook swaps in."""

    ended_jobs: list[str] = field(default_factory=list)  # succeeded, failed, dead
    dead_jobs: list[str] = field(default_factory=list)
    live_jobs: list[str] = field(default_factory=list)  # queued or running
    models: list[str] = field(default_factory=list)

    def job_ids_for(self, path: str) -> list[str]:
        if path.endswith("/events"):
            return self.ended_jobs  # any other job's stream stays open until it ends
        if path.endswith("/cancel"):
            return [*self.live_jobs, self.ended_jobs[0]]  # mostly 200, sometimes 409
        if path.endswith("/redrive"):
            return [*self.dead_jobs, self.ended_jobs[0]]  # 202, then 200; sometimes 409
        return [*self.ended_jobs, *self.live_jobs]


def _dead_job(queue: JobQueue) -> str:
    job_id, _ = queue.enqueue(
        job_type=JobType.TRAINING,
        runtime="sklearn",
        request={"model_type": "random_forest", "data_path": "/data/tabular_data.csv"},
        max_attempts=1,
    )
    claim = queue.claim("w-fuzz", ["sklearn"], lease_ms=60_000)
    assert claim is not None and claim.job_id == job_id
    # A retryable failure with no attempt left: the job is dead.
    outcome = queue.finish(job_id, claim.attempt_id, "retry", error="oom", error_kind="crashed")
    assert outcome.state == "dead", outcome
    return job_id


def seed(queue: JobQueue) -> Seeded:
    """Real state, written as the workers write it."""
    heartbeat(
        queue,
        "w-fuzz",
        "sklearn",
        packages='{"scikit-learn": "1.5.0"}',
        loaded_models='["fuzz_model"]',
        gpus='[{"index": "0", "uuid": "GPU-1", "name": "T4", "memory_total_mb": 15360, '
        '"in_service": true}]',
    )
    seeded = Seeded()
    seeded.ended_jobs.append(register_model(queue, "fuzz_model"))
    seeded.models.append("fuzz_model")
    # The schema's inference examples name these models: with them there, the examples
    # are accepted (202) instead of all answering 404.
    for body in INFERENCE_BODIES.values():
        job_id, _ = queue.enqueue(
            job_type=JobType.TRAINING, runtime="sklearn", request={"model_type": "svm"}
        )
        model = model_record(body["model_id"], job_id, "sklearn", "svm")
        run_job(queue, job_id, "sklearn", model=model)
        seeded.models.append(body["model_id"])

    failed, _ = queue.enqueue(
        job_type=JobType.TRAINING, runtime="sklearn", request={"model_type": "random_forest"}
    )
    run_job(queue, failed, "sklearn", outcome="failed", logs=["boom"])
    seeded.ended_jobs.append(failed)
    seeded.dead_jobs += [_dead_job(queue), _dead_job(queue)]
    seeded.ended_jobs += seeded.dead_jobs
    inference, _ = queue.enqueue(
        job_type=JobType.INFERENCE,
        runtime="sklearn",
        request={"model_id": "fuzz_model", "input_data": "1,2"},
        extra_fields={"model_id": "fuzz_model"},
    )
    run_job(queue, inference, "sklearn", result={"predictions": ["a"]}, logs=["line 1", "line 2"])
    seeded.ended_jobs.append(inference)

    running, _ = queue.enqueue(
        job_type=JobType.TRAINING, runtime="pytorch-2.1", request={"model_type": "bert"}
    )
    claim = queue.claim("w-fuzz-torch", ["pytorch-2.1"], lease_ms=600_000)
    assert claim is not None and claim.job_id == running
    queue.report(running, claim.attempt_id, "progress", {"epoch": 1, "loss": 0.7})
    seeded.live_jobs.append(running)
    for model_type in ("inception", "vgg", "mobilenet"):  # no worker serves tensorflow
        queued, _ = queue.enqueue(
            job_type=JobType.TRAINING, runtime="tensorflow", request={"model_type": model_type}
        )
        seeded.live_jobs.append(queued)
    return seeded


def install_id_hook(schema: OpenApiSchema, seeded: Seeded) -> None:
    """Most of the time, replace a generated ``job_id``/``model_id`` path parameter with a
    real one. Only a valid generated id is replaced (by another valid one): an invalid id
    is a negative case, and must stay invalid for the check that it is refused."""

    @schema.hook("flatmap_path_parameters")
    def real_ids(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        path = context.operation.path if context.operation else ""
        generated = st.just(path_parameters)
        if not path_parameters:
            return generated
        if "job_id" in path_parameters:
            name, ids = "job_id", seeded.job_ids_for(path)
        elif "model_id" in path_parameters:
            name, ids = "model_id", seeded.models
        else:
            return generated
        if not re.fullmatch(ID_PATTERN, str(path_parameters[name])):
            return generated
        real = st.sampled_from(ids).map(lambda i: {**path_parameters, name: i})
        return st.one_of(real, real, real, generated)


@dataclass
class Reached:
    """The status codes each operation answered, to show the fuzz got past the 404s."""

    operations: list[str] = field(default_factory=list)
    statuses: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def never_succeeded(self) -> dict[str, list[int]]:
        return {
            label: sorted(self.statuses[label])
            for label in self.operations
            if not any(200 <= s < 300 for s in self.statuses[label])
        }


@contextmanager
def served_schema(
    app_settings: Settings, queue: JobQueue, reached: Reached, request: pytest.FixtureRequest
) -> Iterator[OpenApiSchema]:
    """The live app, seeded, and the schema it serves; afterwards, unless the fuzz already
    failed, that every operation answered 2xx at least once."""
    # Schemathesis 4.32.5's from_fixture() reads ``node._nodeid``, which pytest 9.2 renamed
    # (AttributeError otherwise); it only uses it to name the test in its report.
    request.node._nodeid = request.node.nodeid
    failed_before = request.session.testsfailed
    with LiveApi(app_settings) as api:
        loaded = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
        install_id_hook(loaded, seed(queue))
        reached.operations = [
            f"{method.upper()} {path}"
            for path, operations in loaded.raw_schema["paths"].items()
            for method in operations
            if (method.upper(), path) != ("GET", NEVER_ENDING)
        ]
        yield loaded
    if request.session.testsfailed == failed_before:
        missing = reached.never_succeeded()
        assert not missing, f"operations that never answered 2xx (status codes seen): {missing}"


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_wait_s": MAX_WAIT_S})


@pytest.fixture
def reached() -> Reached:
    return Reached()


@pytest.fixture
def open_api_schema(
    fuzz_settings: Settings,
    redis_client: Redis,  # before the app: the database is flushed first
    queue: JobQueue,
    reached: Reached,
    request: pytest.FixtureRequest,
) -> Iterator[OpenApiSchema]:
    with served_schema(fuzz_settings, queue, reached, request) as loaded:
        yield loaded


@pytest.fixture
def keyed_api_schema(
    fuzz_settings: Settings,
    redis_client: Redis,
    queue: JobQueue,
    reached: Reached,
    request: pytest.FixtureRequest,
) -> Iterator[OpenApiSchema]:
    keyed = fuzz_settings.model_copy(update={"api_keys": [SecretStr(API_KEY)]})
    with served_schema(keyed, queue, reached, request) as loaded:
        yield loaded


BATCH = "POST /jobs/batch"
# What a schema-valid job of a batch may still be refused for with 422: its single route's
# semantic checks (routing, data path, base model). The idempotency key cannot conflict
# (a batch job has no header).
BATCH_SEMANTIC_FIELDS = {"framework_override", "requires_gpu", "data_path", "base_model_id"}


@dataclass
class BatchSchema:
    """Validators of a batch body and of one of its jobs, from the served schema."""

    body: jsonschema_rs.Validator
    job: jsonschema_rs.Validator

    @classmethod
    def of(cls, raw_schema: dict[str, Any]) -> BatchSchema:
        components = raw_schema["components"]
        operation = raw_schema["paths"]["/jobs/batch"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        job = components["schemas"][name]["properties"]["jobs"]["items"]
        return cls(
            jsonschema_rs.Draft202012Validator({**body, "components": components}),
            jsonschema_rs.Draft202012Validator({**job, "components": components}),
        )


_BATCH_SCHEMAS: dict[int, BatchSchema] = {}  # by the served schema's id: built once each


def check_batch(case: schemathesis.Case[Any], response: Any) -> None:
    """A batch answers 200 even when some of its jobs are refused, so the whole-request
    checks (a valid request accepted, an invalid one refused) are made per job instead:
    a job the schema refuses must be refused; a job it accepts may be refused only for
    what its single route refuses a schema-valid body for."""
    if response.status_code != 200:
        return
    raw = case.operation.schema.raw_schema
    if id(raw) not in _BATCH_SCHEMAS:
        _BATCH_SCHEMAS[id(raw)] = BatchSchema.of(raw)
    schema = _BATCH_SCHEMAS[id(raw)]
    sent = case.body
    jobs = sent["jobs"]
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(jobs))), response.text
    invalid = [not schema.job.is_valid(job) for job in jobs]
    # A body the schema refuses, answered 200: only its jobs may be what is wrong.
    assert schema.body.is_valid(sent) or any(invalid), case.as_curl_command()
    for index, (job_invalid, result) in enumerate(zip(invalid, results, strict=True)):
        where = f"jobs[{index}] {result}\n{case.as_curl_command()}"
        if job_invalid:  # refused, for that or (first) for a missing model: 404, 409
            assert result["status_code"] in (404, 409, 422), f"an invalid job was taken: {where}"
        elif result["status_code"] == 422:
            blamed = {d["field"] for d in result["error"]["details"]}
            allowed = {f"jobs[{index}].{name}" for name in BATCH_SEMANTIC_FIELDS}
            assert blamed and blamed <= allowed, f"a schema-valid job was refused: {where}"
        else:
            assert result["status_code"] in (200, 202, 404, 409), where


def check_case(
    case: schemathesis.Case[Any], reached: Reached, headers: dict[str, str] | None = None
) -> None:
    """Send the case to the live app and run every check on the answer."""
    label = case.operation.label
    semantic = SEMANTIC_FIELDS.get(label)
    response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
    reached.statuses[label].add(response.status_code)
    excluded: list[CheckFunction] = [positive_data_acceptance] if semantic is not None else []
    if label == BATCH:
        excluded = [negative_data_rejection]  # per job, in check_batch
    if response.status_code == 413:
        # The size limit refuses a body before anyone reads it, valid or not (the schema
        # cannot say how big a valid body may be: that is MAX_BODY_BYTES).
        excluded = [positive_data_acceptance, negative_data_rejection]
    case.validate_response(response, excluded_checks=excluded, headers=headers)
    if label == BATCH:
        check_batch(case, response)
    meta = case.meta
    if semantic is None or response.status_code != 422 or meta is None:
        return
    if meta.generation.mode.is_positive:
        blamed = {d["field"] for d in response.json()["error"]["details"]}
        assert blamed and blamed <= semantic, (
            f"{label}: a schema-valid request was refused for {blamed}: "
            f"{response.text}\n{case.as_curl_command()}"
        )


FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree; failures print their seed
    suppress_health_check=list(HealthCheck),
)

# The filter goes on the lazy schema: it replaces the filters of the schema a fixture yields.
open_schema = schemathesis.pytest.from_fixture("open_api_schema").exclude(
    method="GET", path=NEVER_ENDING
)
keyed_schema = schemathesis.pytest.from_fixture("keyed_api_schema").exclude(
    method="GET", path=NEVER_ENDING
)


@open_schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=FUZZ_EXAMPLES)
def test_fuzz_open_api(case: schemathesis.Case[Any], reached: Reached) -> None:
    check_case(case, reached)


@keyed_schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=max(5, FUZZ_EXAMPLES // 4))
def test_fuzz_with_api_keys(case: schemathesis.Case[Any], reached: Reached) -> None:
    check_case(case, reached, headers=KEY_HEADERS)


# ------------------------------------------------- what the fuzz found, pinned as cases
#
# The fuzz is random: each defect it found is also a fixed case here, so it stays fixed
# whatever a run happens to draw. (Lone surrogates were found by hand: Hypothesis does not
# generate them.)

JSON = {"content-type": "application/json"}
TRAIN = b'{"model_type": "random_forest", "data_path": "/data/tabular_data.csv"'


@dataclass(frozen=True)
class Finding:
    id: str
    method: str
    path: str  # {job} is a job that ended
    status: int
    blamed: str | None = None  # the field the error names
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


FINDINGS = [
    # Was a bare 400 (undocumented) with no details.
    Finding("body not UTF-8", "POST", "/jobs/training", 422, "body", b'{"a": "\xff\xfe"}', JSON),
    Finding("body nested too deep", "POST", "/jobs/training", 422, "body", b"[" * 5000, JSON),
    # Was a 200 whose stream broke off: Redis refused the id only after the stream started.
    Finding(
        "Last-Event-ID past 64 bits",
        "GET",
        "/jobs/{job}/events",
        422,
        "Last-Event-ID",
        headers={"Last-Event-ID": "0-20000000000000000000"},
    ),
    # Were accepted, and GET /jobs/{id} then answered 500 (the job no longer encoded).
    Finding(
        "hyperparameter value a lone surrogate",
        "POST",
        "/jobs/training",
        422,
        "hyperparameters",
        TRAIN + b', "hyperparameters": {"a": ["\\ud800"]}}',
        JSON,
    ),
    Finding(
        "hyperparameter name a lone surrogate",
        "POST",
        "/jobs/training",
        422,
        "hyperparameters",
        TRAIN + b', "hyperparameters": {"\\udfff": 1}}',
        JSON,
    ),
    # The schema calls 1.0 an integer; strict validation refused it.
    Finding(
        "max_attempts 1.0",
        "POST",
        "/jobs/training",
        202,
        body=TRAIN + b', "max_attempts": 1.0}',
        headers=JSON,
    ),
    Finding(
        "redrive limit 312.0",
        "POST",
        "/dead-letters/redrive",
        200,
        body=b'{"limit": 312.0, "runtime": "tensorflow"}',
        headers=JSON,
    ),
]


@pytest.mark.parametrize("finding", FINDINGS, ids=lambda f: f.id)
def test_fuzz_finding_stays_fixed(client: TestClient, queue: JobQueue, finding: Finding) -> None:
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    run_job(queue, job_id, "sklearn")
    resp = client.request(
        finding.method,
        finding.path.format(job=job_id),
        content=finding.body,
        headers=finding.headers,
    )
    assert resp.status_code == finding.status, resp.text
    if finding.blamed is not None:
        err = assert_error(resp, finding.status, "invalid_request", finding.blamed)
        assert "Traceback" not in err["message"]


def test_the_schema_says_what_the_app_refuses(client: TestClient) -> None:
    """The schema changes the fuzz asked for, read from the served schema."""
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    # GET /jobs refuses unknown runtimes: the schema lists the known ones.
    runtime = next(p for p in paths["/jobs"]["get"]["parameters"] if p["name"] == "runtime")
    assert runtime["schema"]["enum"] == list(RUNTIMES)
    # An optional header is a string that is sent or not, never null.
    for path, name in (
        ("/jobs/training", "Idempotency-Key"),
        ("/jobs/{job_id}/events", "Last-Event-ID"),
    ):
        operation = paths[path]["post" if path == "/jobs/training" else "get"]
        header = next(p for p in operation["parameters"] if p["name"] == name)
        assert header["schema"]["type"] == "string" and "anyOf" not in header["schema"]
    # Each event of the stream is an object of SSE fields, not a string.
    events = paths["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert events["text/event-stream"]["schema"]["type"] == "object"
    # Hyperparameters are a flat mapping of at most 64 entries.
    training = schema["components"]["schemas"]["TrainingJobRequest"]["properties"]
    assert training["hyperparameters"]["maxProperties"] == 64
    assert training["model_type"]["enum"] == sorted(MODEL_TYPES)
