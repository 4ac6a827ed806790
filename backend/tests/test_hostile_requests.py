"""Hostile requests, table-driven (PRODUCT.md §10): path traversal in its many spellings,
symlinks out of the data root, NUL bytes in every string field, huge bodies and strings,
deeply nested JSON, ids aimed at other Redis keys, and numbers no job can use.

Every case must get a 4xx in the error shape that names the field, and must change
nothing: the whole keyspace (every key and its value) is the same after the request as
before it. (test_errors.py holds the plain validation cases; none is repeated here.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from conftest import assert_error, register_model
from trainyard.engine import JobQueue
from trainyard.schema import MAX_BATCH, MAX_INPUT_CHARS
from trainyard_api.app import create_app
from trainyard_api.config import Settings

RF: dict[str, Any] = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "framework_override": "sklearn",
    "hyperparameters": {"n_estimators": 10},
}
INFER: dict[str, Any] = {"model_id": "rf1", "input_data": "1,2"}


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    json: Any = None
    content: bytes | None = None  # a raw body (JSON Python's encoder would not write)
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "post"
    status: int = 422
    field: str | None = "body"  # None: a 404 for a path no route matches
    reason: str = ""  # a fragment the error message must contain


def training(case_id: str, field_name: str, reason: str = "", **body: Any) -> Case:
    return Case(case_id, "/jobs/training", json={**RF, **body}, field=field_name, reason=reason)


def inference(case_id: str, field_name: str, reason: str = "", **body: Any) -> Case:
    return Case(case_id, "/jobs/inference", json={**INFER, **body}, field=field_name,
                reason=reason)  # fmt: skip


def raw(case_id: str, path: str, text: str, field_name: str, reason: str = "") -> Case:
    return Case(case_id, path, content=text.encode(), field=field_name, reason=reason)


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


# ---------------------------------------------------------------- data_path

TRAVERSAL = [
    ("relative dot-dot", "../etc/passwd", "'..'"),
    ("deep dot-dot", "../../../../../../etc/passwd", "'..'"),
    ("dot-dot after a folder", "/data/image_classification/../../etc/passwd", "'..'"),
    ("dot-dot at the end", "/data/..", "'..'"),
    ("url-encoded dots", "/data/%2e%2e/etc/passwd", "does not exist"),
    ("url-encoded slashes", "/data/..%2f..%2fetc%2fpasswd", "does not exist"),
    ("all url-encoded", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "does not exist"),
    ("double-encoded", "/data/%252e%252e/%252e%252e/etc/passwd", "does not exist"),
    ("backslashes", "..\\..\\etc\\passwd", "'/' separators"),
    ("mixed slashes", "/data\\..\\etc/passwd", "'/' separators"),
    ("double slash root", "//etc/passwd", "must start with /data/"),
    ("double slash data", "//data/tabular_data.csv", "must start with /data/"),
    ("prefix lookalike", "/database/tabular_data.csv", "must start with /data/"),
    ("absolute proc", "/proc/self/environ", "must start with /data/"),
    ("absolute root", "/", "must start with /data/"),
    ("tilde home", "~/.ssh/id_rsa", "does not exist"),
    ("tilde user", "~root/.bashrc", "does not exist"),
    ("fullwidth dots", "/data/\uff0e\uff0e/\uff0e\uff0e/etc/passwd", "does not exist"),
    ("one-dot leaders", "/data/\u2024\u2024/etc/passwd", "does not exist"),
    ("two-dot leader", "/data/\u2025/etc/passwd", "does not exist"),
    ("fullwidth solidus", "/data/..\uff0fetc\uff0fpasswd", "does not exist"),
    ("division slash", "/data/..\u2215etc\u2215passwd", "does not exist"),
    ("trailing NUL", "/data/tabular_data.csv\x00.png", "NUL"),
    ("NUL between dots", "/data/.\x00./etc/passwd", "NUL"),
    ("overlong path", "/data/" + "a/" * 600, "at most 1024"),
    ("overlong name", "/data/" + "a" * 300 + ".csv", "too long"),
]
DATA_PATH_CASES = [
    training(f"data_path {name}", "data_path", reason, data_path=path)
    for name, path, reason in TRAVERSAL
]

# ---------------------------------------------------------------- NUL in every string

NUL = "x\x00y"
NUL_CASES = [
    training("NUL model_type", "model_type", "NUL", model_type="random_forest\x00"),
    training("NUL description", "description", "NUL", description=NUL),
    training("NUL framework_override", "framework_override", "NUL",
             framework_override="sklearn\x00"),
    training("NUL model_name", "model_name", model_name="rf\x00"),
    training("NUL label_column", "label_column", "NUL", label_column=NUL),
    training("NUL text_column", "text_column", "NUL", text_column=NUL),
    training("NUL base_model_id", "base_model_id", base_model_id="rf1\x00"),
    training("NUL idempotency_key", "idempotency_key", idempotency_key="k\x00"),
    training("NUL priority", "priority", priority="high\x00"),
    training("NUL hyperparameter name", "hyperparameters", "NUL",
             hyperparameters={"n_estimators\x00": 10}),
    training("NUL hyperparameter value", "hyperparameters", "hyperparameters.criterion",
             hyperparameters={"criterion": "gini\x00"}),
    training("NUL in a hyperparameter list", "hyperparameters", "hyperparameters.layers.1",
             hyperparameters={"layers": ["a", NUL]}),
    inference("NUL model_id", "model_id", model_id="rf1\x00"),
    inference("NUL input_data", "input_data", "NUL", input_data="1,2\x00"),
    inference("NUL in a batch input", "input_data", "input_data.1", input_data=["1,2", NUL]),
    inference("NUL parameter value", "parameters", "NUL", parameters={"mode": NUL}),
    inference("NUL inference idempotency_key", "idempotency_key", idempotency_key="\x00"),
]  # fmt: skip

# ---------------------------------------------------------------- sizes

SIZE_CASES = [
    training("description over 4096", "description", "4096", description="d" * 4097),
    training("model_name of 10 kB", "model_name", model_name="m" * 10_240),
    training("label_column over 256", "label_column", "256", label_column="l" * 257),
    training("hyperparameter value over 1024", "hyperparameters", "1024",
             hyperparameters={"criterion": "g" * 1025}),
    training("hyperparameter name over 64", "hyperparameters", "64",
             hyperparameters={"n" * 65: 1}),
    training("65 hyperparameters", "hyperparameters", "at most 64",
             hyperparameters={f"h{i}": i for i in range(65)}),
    training("hyperparameter list of 65", "hyperparameters", "short list",
             hyperparameters={"layers": list(range(65))}),
    inference("batch over the limit", "input_data", str(MAX_BATCH),
              input_data=["1,2"] * (MAX_BATCH + 1)),
    Case("huge inference body", "/jobs/inference", json={**INFER, "input_data": "9" * 70_000},
         status=413, field="body", reason="larger than"),
    Case("huge batch body", "/jobs/inference", json={**INFER, "input_data": ["1,2"] * 15_000},
         status=413, field="body", reason="larger than"),
    Case("huge hyperparameters body", "/jobs/training",
         json={**RF, "hyperparameters": {f"h{i}": "v" * 1024 for i in range(64)}},
         status=413, field="body", reason="larger than"),
    Case("declared length over the limit", "/jobs/training", content=b"{}",
         headers={"content-length": str(10**12)}, status=413, field="body"),
]  # fmt: skip

# ---------------------------------------------------------------- nesting and JSON shape

NESTING_CASES = [
    raw("hyperparameters nested 10000 deep", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"a": ' + _nested(10_000) + "}}",
        "body", "nested too deep"),
    raw("hyperparameter objects nested 10000 deep", "/jobs/training",
        json.dumps({k: v for k, v in RF.items() if k != "hyperparameters"})[:-1]
        + ', "hyperparameters": ' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
        "body", "nested too deep"),
    raw("input_data nested 10000 deep", "/jobs/inference",
        '{"model_id": "rf1", "input_data": ' + _nested(10_000, '"x"') + "}",
        "body", "nested too deep"),
    raw("parameters nested 10000 deep", "/jobs/inference",
        '{"model_id": "rf1", "input_data": "1,2", "parameters": {"p": ' + _nested(10_000) + "}}",
        "body", "nested too deep"),
    training("hyperparameters nested 50 deep", "hyperparameters", "short list",
             hyperparameters={"a": json.loads(_nested(50))}),
    inference("input_data nested 50 deep", "input_data", input_data=json.loads(_nested(50))),
    inference("parameters nested 3 deep", "parameters", parameters={"p": {"q": {"r": 1}}}),
    raw("body is an array", "/jobs/training", "[]", "body"),
    raw("body is a string", "/jobs/training", '"random_forest"', "body"),
    raw("body is null", "/jobs/inference", "null", "body"),
    raw("body is truncated", "/jobs/inference", '{"model_id": "rf1", "input_data": ["1,2"',
        "body", "not valid JSON"),
]  # fmt: skip

# ---------------------------------------------------------------- numbers

NUMBER_CASES = [
    raw("hyperparameter NaN", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"n_estimators": NaN}}',
        "hyperparameters", "finite"),
    raw("hyperparameter Infinity", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"learning_rate": Infinity}}',
        "hyperparameters", "finite"),
    raw("hyperparameter -Infinity", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"learning_rate": -Infinity}}',
        "hyperparameters", "finite"),
    raw("hyperparameter 1e400", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"learning_rate": 1e400}}',
        "hyperparameters", "finite"),
    raw("NaN in a hyperparameter list", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"layers": [1, NaN]}}',
        "hyperparameters", "finite"),
    raw("hyperparameter of 5000 digits", "/jobs/training",
        json.dumps(RF)[:-1] + ', "hyperparameters": {"n_estimators": ' + "9" * 5000 + "}}",
        "body", "too many digits"),
    raw("parameter NaN", "/jobs/inference",
        '{"model_id": "rf1", "input_data": "1,2", "parameters": {"top_k": NaN}}',
        "parameters", "finite"),
    raw("timeout_s NaN", "/jobs/training", json.dumps(RF)[:-1] + ', "timeout_s": NaN}',
        "timeout_s"),
    raw("timeout_s Infinity", "/jobs/training", json.dumps(RF)[:-1] + ', "timeout_s": Infinity}',
        "timeout_s"),
    training("timeout_s 1e308", "timeout_s", timeout_s=1e308),
    training("timeout_s huge int", "timeout_s", timeout_s=10**400),
    training("timeout_s zero", "timeout_s", timeout_s=0),
    training("timeout_s negative", "timeout_s", timeout_s=-5),
    training("timeout_s as a string", "timeout_s", timeout_s="60"),
    training("timeout_s as a bool", "timeout_s", timeout_s=True),
    training("max_attempts as a bool", "max_attempts", max_attempts=True),
    training("max_attempts as a string", "max_attempts", max_attempts="3"),
    training("max_attempts zero", "max_attempts", max_attempts=0),
    training("max_attempts 2**64", "max_attempts", max_attempts=2**64),
    training("max_attempts fractional", "max_attempts", max_attempts=2.5),
    training("queue_ttl_s negative", "queue_ttl_s", queue_ttl_s=-1),
    training("queue_ttl_s 1e308", "queue_ttl_s", queue_ttl_s=1e308),
    training("requires_gpu as a number", "requires_gpu", requires_gpu=1),
    training("requires_gpu as a string", "requires_gpu", requires_gpu="false"),
    training("priority as a number", "priority", priority=1),
    Case("wait NaN", "/jobs/inference?wait=nan", json=INFER, field="wait"),
    Case("wait Infinity", "/jobs/inference?wait=inf", json=INFER, field="wait"),
    Case("wait 1e308", "/jobs/inference?wait=1e308", json=INFER, field="wait"),
    Case("wait negative", "/jobs/inference?wait=-1", json=INFER, field="wait"),
    Case("limit 1e308", "/jobs?limit=1e308", method="get", field="limit"),
    Case("limit huge", "/jobs?limit=" + "9" * 30, method="get", field="limit"),
    Case("limit zero", "/models?limit=0", method="get", field="limit"),
    Case("cursor negative", "/jobs?cursor=-1", method="get", field="cursor"),
    Case("cursor 21 digits", "/jobs?cursor=" + "9" * 21, method="get", field="cursor"),
    Case("cursor with a newline", "/jobs?cursor=1%0A", method="get", field="cursor"),
    Case("cursor glob", "/jobs?cursor=*", method="get", field="cursor"),
]  # fmt: skip

# ---------------------------------------------------------------- ids aimed at other keys

BAD_IDS = {
    "open brace": "a{trainyard",
    "close brace": "trainyard}x",
    "colon": "job:1",
    "star": "*",
    "question mark": "job?",
    "space": "a b",
    "newline": "abc\n",
    "tab": "a\tb",
    "dot-dot": "..",
    "slash dot-dot": "../models",
    "leading dot": ".hidden",
    "unicode": "j\u00f6b",
    "10 kB": "a" * 10_240,
}
# Newlines and tabs cannot travel in an HTTP header (the client refuses to send them).
_HEADER_UNSAFE = {"newline", "tab", "unicode"}


def _path_id(case_id: str, path: str, bad: str, method: str, field_name: str) -> Case:
    # An id with a slash (even encoded: the server decodes the path) matches no route.
    if "/" in bad:
        return Case(case_id, path, method=method, status=404, field=None)
    return Case(case_id, path, method=method, field=field_name)


ID_CASES: list[Case] = []
for _name, _bad in BAD_IDS.items():
    _enc = quote(_bad, safe="").replace(".", "%2E")  # else the client resolves ".."
    ID_CASES += [
        _path_id(f"job_id {_name} status", f"/jobs/{_enc}/status", _bad, "get", "job_id"),
        _path_id(f"job_id {_name} cancel", f"/jobs/{_enc}/cancel", _bad, "post", "job_id"),
        _path_id(f"model_id {_name} path", f"/models/{_enc}", _bad, "get", "model_id"),
        inference(f"model_id {_name} body", "model_id", model_id=_bad),
        training(f"base_model_id {_name}", "base_model_id", base_model_id=_bad),
        training(f"model_name {_name}", "model_name", model_name=_bad),
        training(f"idempotency_key {_name}", "idempotency_key", idempotency_key=_bad),
    ]
    if _name not in _HEADER_UNSAFE:
        ID_CASES.append(
            Case(
                f"Idempotency-Key header {_name}",
                "/jobs/training",
                json=RF,
                headers={"Idempotency-Key": _bad},
                field="Idempotency-Key",
            )
        )
ID_CASES += [
    Case("job_id events dot-dot", "/jobs/%2E%2E/events", method="get", field="job_id"),
    Case("job_id logs star", "/jobs/%2A/logs", method="get", field="job_id"),
    Case("logs after a glob", "/jobs/JOB/logs?after=*", method="get", field="after"),
    Case("logs after with a newline", "/jobs/JOB/logs?after=0-0%0A", method="get",
         field="after"),
    Case("events Last-Event-ID garbage", "/jobs/JOB/events", method="get",
         headers={"Last-Event-ID": "$"}, field="Last-Event-ID"),
    Case("runtime glob", "/jobs?runtime=*", method="get", field="runtime"),
    Case("runtime with a colon", "/jobs?runtime=sklearn:x", method="get", field="runtime"),
    Case("state glob", "/jobs?state=*", method="get", field="state"),
    Case("job_type NUL", "/jobs?job_type=%00", method="get", field="job_type"),
]  # fmt: skip

CASES = DATA_PATH_CASES + NUL_CASES + SIZE_CASES + NESTING_CASES + NUMBER_CASES + ID_CASES


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) >= 150


# ---------------------------------------------------------------- the keyspace


def keyspace(redis: Redis) -> dict[str, Any]:
    """Every key with its type and full value: what "nothing changed" is checked against."""
    snapshot: dict[str, Any] = {}
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key)
        value: Any
        if kind == "string":
            value = redis.get(key)
        elif kind == "hash":
            value = redis.hgetall(key)
        elif kind == "zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = redis.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(redis.smembers(key))
        elif kind == "stream":
            value = redis.xrange(key)
        else:
            value = kind
        snapshot[key] = (kind, value)
    return snapshot


@pytest.fixture
def seeded(client: TestClient, queue: JobQueue, data_root: Path, tmp_path: Path) -> str:
    """A keyspace with something in every kind of key (a model, a job with an idempotency
    key, indexes, events) and symlinks in the data root; returns the job's id."""
    register_model(queue, "rf1")
    resp = client.post("/jobs/training", json=RF, headers={"Idempotency-Key": "seed-1"})
    assert resp.status_code == 202, resp.text
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a,label\n1,x\n2,y\n")
    os.symlink(outside, data_root / "outdir")
    os.symlink(outside / "secret.csv", data_root / "hop1.csv")
    os.symlink(data_root / "hop1.csv", data_root / "hop2.csv")
    os.symlink(data_root / "loop_b.csv", data_root / "loop_a.csv")
    os.symlink(data_root / "loop_a.csv", data_root / "loop_b.csv")
    os.mkfifo(data_root / "pipe.csv")
    job_id: str = resp.json()["job_id"]
    return job_id


SYMLINK_CASES = [
    training("folder symlink out of the root", "data_path", "outside the data root",
             data_path="/data/outdir/secret.csv"),
    training("folder symlink itself", "data_path", "outside the data root",
             data_path="/data/outdir"),
    training("symlink chain out of the root", "data_path", "outside the data root",
             data_path="/data/hop2.csv"),
    training("symlink loop", "data_path", "does not exist", data_path="/data/loop_a.csv"),
    training("a FIFO that would block the reader", "data_path", "not a regular file",
             data_path="/data/pipe.csv"),
]  # fmt: skip


def _send(client: TestClient, case: Case, job_id: str) -> Any:
    path = case.path.replace("/JOB/", f"/{job_id}/")
    kwargs: dict[str, Any] = {"headers": dict(case.headers)}
    if case.content is not None:
        kwargs["content"] = case.content
        kwargs["headers"].setdefault("content-type", "application/json")
    elif case.json is not None:
        kwargs["json"] = case.json
    return client.request(case.method.upper(), path, **kwargs)


@pytest.mark.parametrize("case", CASES + SYMLINK_CASES, ids=lambda c: c.id)
def test_hostile_request_is_refused_and_changes_nothing(
    client: TestClient, redis_client: Redis, seeded: str, case: Case
) -> None:
    before = keyspace(redis_client)
    resp = _send(client, case, seeded)
    code = {404: "not_found", 413: "payload_too_large", 422: "invalid_request"}[case.status]
    err = assert_error(resp, case.status, code, case.field)
    assert case.reason in err["message"], err
    assert "Traceback" not in resp.text
    assert keyspace(redis_client) == before


def test_the_refusals_left_the_api_serving(client: TestClient, seeded: str) -> None:
    # After the whole table, in the same app: a good request still works end to end.
    for case in CASES[:: max(1, len(CASES) // 20)]:
        _send(client, case, seeded)
    resp = client.post("/jobs/training", json=RF)
    assert resp.status_code == 202, resp.text
    assert client.get(f"/jobs/{resp.json()['job_id']}/status").status_code == 200


# ---------------------------------------------------------------- stream ids past 64 bits


# Redis stream ids are two 64-bit numbers; XREAD answers a larger one with an error that
# used to surface as a 500.
@pytest.mark.parametrize("after", ["99999999999999999999-0", "0-99999999999999999999"])
def test_a_stream_id_past_64_bits_is_refused(
    client: TestClient, redis_client: Redis, seeded: str, after: str
) -> None:
    before = keyspace(redis_client)
    resp = client.get(f"/jobs/{seeded}/logs", params={"after": after})
    assert_error(resp, 422, "invalid_request", "after")
    resp = client.get(f"/jobs/{seeded}/events", headers={"Last-Event-ID": after})
    assert_error(resp, 422, "invalid_request", "Last-Event-ID")
    assert keyspace(redis_client) == before


# ---------------------------------------------------------------- text past the input limit


@pytest.fixture
def roomy_client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    """The app with a body limit above MAX_INPUT_CHARS, so the field limit is what refuses."""
    roomy = settings.model_copy(update={"max_body_bytes": 2 * MAX_INPUT_CHARS})
    with TestClient(create_app(roomy)) as c:
        yield c


def test_a_text_input_past_the_limit_is_refused(
    roomy_client: TestClient, queue: JobQueue, redis_client: Redis
) -> None:
    register_model(queue, "rf1")
    before = keyspace(redis_client)
    body = {**INFER, "input_data": "t" * (MAX_INPUT_CHARS + 1)}
    err = assert_error(
        roomy_client.post("/jobs/inference", json=body), 422, "invalid_request", "input_data"
    )
    assert str(MAX_INPUT_CHARS) in err["message"]
    assert len(err["message"]) < 2000  # the reason does not echo the 8 MB input
    assert keyspace(redis_client) == before
