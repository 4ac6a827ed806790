"""docs/API.md, the README and the seed README stay true to the code.

* Every ``curl -X POST .../jobs/training``, ``.../jobs/inference`` or ``.../jobs/batch`` in a
  ```bash block (of docs/API.md, README.md and the seed's README) sends a body that the
  request model accepts; training bodies must also route. A batch's jobs must each validate
  (their refusals, if the example shows any, are the ones no schema can see: a data path or
  a model that is not there). A block marked ``<!-- curl: rejected -->`` in
  docs/API.md shows a refused request: its bodies must fail validation or routing.
* Every ```json block in docs/API.md is a response example, tagged on the line above with
  ``<!-- response: ModelName -->``; it must validate against that model and hold no key
  the model does not know. ``<!-- response: sse -->`` and ``<!-- response: metrics -->``
  tag ```text blocks of an event stream and of Prometheus metrics.
* ``trainyard.seed_examples`` holds the seed README's bodies verbatim, and the copy that
  ``scripts/test_api.py`` keeps (it runs without trainyard) equals it.
* Every ``METHOD /path`` in the endpoint table of docs/API.md exists in the app, and every
  operation of the app's OpenAPI schema is in the table.

None of this needs Redis: the app is only built, never started.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from test_metrics import FAMILIES  # every family /metrics serves, and its type

from trainyard.routing import ModelTypeRoute, RouteError, Runtime, route_training
from trainyard.schema import (
    BatchJob,
    BatchSubmitResponse,
    InferenceJobRequest,
    JobRecord,
    JobStatus,
    ModelRecord,
    TrainingJobRequest,
)
from trainyard.seed_examples import INFERENCE_BODIES, TRAINING_BODIES
from trainyard.types import FailureKind, JobState
from trainyard_api.app import create_app
from trainyard_api.config import Settings
from trainyard_api.errors import CODES, ErrorResponse
from trainyard_api.routes.batch import BatchSubmitRequest
from trainyard_api.routes.dead_letters import DeadLetterList, RedriveAllResult
from trainyard_api.routes.events import Logs
from trainyard_api.routes.health import Health
from trainyard_api.routes.jobs import JobList
from trainyard_api.routes.models import ModelList
from trainyard_api.routes.queues import Queues
from trainyard_api.routes.workers import WorkerList

REPO_ROOT = Path(__file__).resolve().parents[2]
API_DOC = REPO_ROOT / "docs" / "API.md"
README = REPO_ROOT / "README.md"
SEED_README = REPO_ROOT.parent / "shared" / "seed" / "README.md"
TEST_API_SCRIPT = REPO_ROOT / "scripts" / "test_api.py"

REJECTED_TAG = "<!-- curl: rejected -->"
RESPONSE_TAG = re.compile(r"^<!--\s*response:\s*([A-Za-z]+)\s*-->$")
FENCE_OPEN = re.compile(r"^(\s*)```([A-Za-z]*)\s*$")
FENCE_CLOSE = re.compile(r"^\s*```\s*$")
CURL = re.compile(r"\bcurl\b")
SUBMIT = re.compile(r'-X\s+POST\s+"http://localhost:8000/jobs/(training|inference|batch)[^"]*"')
BODY = re.compile(r"(?:-d|--data|--data-raw)\s+'([^']*)'")


class RoutingTable(BaseModel):
    """``GET /routing`` (a plain dict in the route), as a model built from the dataclasses."""

    model_config = ConfigDict(extra="forbid")

    runtimes: list[Runtime]
    model_types: list[ModelTypeRoute]
    inference: str
    fine_tuning: str


RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        JobStatus,
        JobRecord,
        JobList,
        Logs,
        ModelList,
        ModelRecord,
        WorkerList,
        Queues,
        Health,
        ErrorResponse,
        RoutingTable,
        DeadLetterList,
        RedriveAllResult,
        BatchSubmitResponse,
    )
}
TEXT_TAGS = {"sse", "metrics"}


# -- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    tag: str  # the nearest non-blank line above the fence, stripped


def fenced_blocks(markdown: str) -> list[Block]:
    """Fenced code blocks, including ones indented inside list items (as in the seed)."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE_OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.group(1), opening.group(2)
        above = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not FENCE_CLOSE.match(lines[j]):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        assert j < len(lines), f"line {i + 1}: fenced block never closed"
        blocks.append(Block(lang, "\n".join(body) + "\n", i + 1, above))
        i = j + 1
    return blocks


@dataclass(frozen=True)
class Submission:
    source: str
    line: int
    endpoint: str  # training | inference | batch
    body: str | None
    rejected: bool


def submissions(name: str, markdown: str) -> list[Submission]:
    found: list[Submission] = []
    for block in fenced_blocks(markdown):
        if block.lang != "bash":
            continue
        starts = [m.start() for m in CURL.finditer(block.text)]
        for k, start in enumerate(starts):
            command = block.text[start : starts[k + 1] if k + 1 < len(starts) else None]
            target = SUBMIT.search(command)
            if not target:
                continue
            body = BODY.search(command)
            found.append(
                Submission(
                    name,
                    block.line,
                    target.group(1),
                    body.group(1) if body else None,
                    block.tag == REJECTED_TAG,
                )
            )
    return found


def check_submission(sub: Submission) -> None:
    """Raise (ValueError, ValidationError or RouteError) if the body would be refused."""
    if sub.body is None:
        raise ValueError("a POST without a -d '...' JSON body")
    payload = json.loads(sub.body)
    if sub.endpoint == "training":
        request = TrainingJobRequest.model_validate(payload)
        route_training(request.model_type, request.requires_gpu, request.framework_override)
    elif sub.endpoint == "batch":
        for job in BatchSubmitRequest.model_validate(payload).jobs:
            checked = TypeAdapter(BatchJob).validate_python(job)
            if isinstance(checked, TrainingJobRequest):
                route_training(checked.model_type, checked.requires_gpu, checked.framework_override)
    else:
        InferenceJobRequest.model_validate(payload)


def _cases() -> list[Any]:
    cases: list[Any] = []
    for name, path in (("docs/API.md", API_DOC), ("README.md", README)):
        for sub in submissions(name, path.read_text(encoding="utf-8")):
            cases.append(pytest.param(sub, id=f"{name}:{sub.line}:{sub.endpoint}"))
    if SEED_README.is_file():
        for sub in submissions("seed", SEED_README.read_text(encoding="utf-8")):
            cases.append(pytest.param(sub, id=f"seed:{sub.line}:{sub.endpoint}"))
    else:
        cases.append(
            pytest.param(
                None,
                id="seed",
                marks=pytest.mark.skip(
                    reason=f"seed README not found at {SEED_README} (the repository is "
                    "checked out without the shared/ folder next to it)"
                ),
            )
        )
    return cases


# -- (1) request bodies ------------------------------------------------------------------


@pytest.mark.parametrize("sub", _cases())
def test_curl_bodies_are_accepted(sub: Submission) -> None:
    where = f"{sub.source} line {sub.line} (POST /jobs/{sub.endpoint})"
    if sub.rejected:
        with pytest.raises((ValueError, ValidationError, RouteError)):
            check_submission(sub)
        return
    try:
        check_submission(sub)
    except (ValueError, ValidationError, RouteError) as exc:
        pytest.fail(f"{where}: the body would be refused: {exc}")


@pytest.mark.parametrize(
    ("name", "path", "training", "inference"),
    [
        ("docs/API.md", API_DOC, 3, 4),
        ("README.md", README, 1, 1),
        ("seed", SEED_README, 5, 4),
    ],
)
def test_curl_examples_are_found(name: str, path: Path, training: int, inference: int) -> None:
    """Guards the parser: a change in the markdown must not make the checks above vacuous."""
    if not path.is_file():
        pytest.skip(f"seed README not found at {path}")
    subs = [s for s in submissions(name, path.read_text(encoding="utf-8")) if not s.rejected]
    assert sum(s.endpoint == "training" for s in subs) >= training
    assert sum(s.endpoint == "inference" for s in subs) >= inference
    if name == "docs/API.md":
        assert sum(s.endpoint == "batch" for s in subs) >= 1


def test_the_seed_readme_bodies_are_trainyard_seed_examples() -> None:
    """``trainyard.seed_examples`` holds the seed README's bodies, verbatim and in order."""
    if not SEED_README.is_file():
        pytest.skip(f"seed README not found at {SEED_README}")
    subs = submissions("seed", SEED_README.read_text(encoding="utf-8"))
    bodies = {kind: [json.loads(s.body or "") for s in subs if s.endpoint == kind]
              for kind in ("training", "inference")}  # fmt: skip
    assert bodies["training"] == list(TRAINING_BODIES.values())
    assert bodies["inference"] == list(INFERENCE_BODIES.values())


def test_scripts_test_api_sends_the_seed_examples() -> None:
    """``scripts/test_api.py`` runs on a bare Python, so it keeps its own copy of the seed's
    "API Examples" bodies: it must not drift from ``trainyard.seed_examples``."""
    spec = importlib.util.spec_from_file_location("seed_test_api", TEST_API_SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert [body for _, body, _ in script.TRAINING] == list(TRAINING_BODIES.values())
    assert [body for _, body in script.INFERENCE] == list(INFERENCE_BODIES.values())


# -- (2) response examples ---------------------------------------------------------------


def unknown_keys(value: Any, data: Any, where: str) -> list[str]:
    """Keys of ``data`` that validation silently ignored (typos in an example)."""
    problems: list[str] = []
    if isinstance(value, BaseModel) and isinstance(data, dict):
        known = set(type(value).model_fields) | set(value.model_extra or {})
        problems += [f"{where}.{k}" for k in data if k not in known]
        for key in data.keys() & set(type(value).model_fields):
            problems += unknown_keys(getattr(value, key), data[key], f"{where}.{key}")
    elif dataclasses.is_dataclass(value) and isinstance(data, dict):
        known = {f.name for f in dataclasses.fields(value)}
        problems += [f"{where}.{k}" for k in data if k not in known]
    elif isinstance(value, list) and isinstance(data, list):
        for i, (v, d) in enumerate(zip(value, data, strict=False)):
            problems += unknown_keys(v, d, f"{where}[{i}]")
    elif isinstance(value, dict) and isinstance(data, dict):
        for key in value.keys() & data.keys():
            problems += unknown_keys(value[key], data[key], f"{where}.{key}")
    return problems


def _doc_blocks() -> list[Block]:
    return fenced_blocks(API_DOC.read_text(encoding="utf-8"))


def _response_blocks() -> list[Any]:
    params = []
    for block in _doc_blocks():
        tag = RESPONSE_TAG.match(block.tag)
        if block.lang == "json" or tag:
            params.append(pytest.param(block, id=f"line{block.line}"))
    return params


@pytest.mark.parametrize("block", _response_blocks())
def test_response_examples_validate(block: Block) -> None:
    tag = RESPONSE_TAG.match(block.tag)
    assert tag, f"docs/API.md line {block.line}: a ```{block.lang} block without a response tag"
    name = tag.group(1)
    if name == "sse":
        assert block.lang == "text"
        check_sse(block.text)
        return
    if name == "metrics":
        assert block.lang == "text"
        check_metrics(block.text)
        return
    assert block.lang == "json", f"line {block.line}: a {name} example must be a ```json block"
    assert name in RESPONSE_MODELS, f"line {block.line}: unknown response model {name!r}"
    data = json.loads(block.text)
    value = RESPONSE_MODELS[name].model_validate(data)
    assert not unknown_keys(value, data, name), f"line {block.line}: keys the model lacks"
    if isinstance(value, ErrorResponse):
        assert value.error.code == CODES[value.error.status], f"line {block.line}"


def check_sse(text: str) -> None:
    records = [r for r in text.strip().split("\n\n") if r.strip()]
    assert records[0] == "retry: 2000", "a stream opens with its reconnect delay"
    last: tuple[int, int] = (-1, -1)
    for record in records[1:]:
        fields = dict(line.split(": ", 1) for line in record.splitlines())
        assert set(fields) == {"id", "event", "data"}, record
        ms, seq = fields["id"].split("-")
        assert (int(ms), int(seq)) > last, "event ids increase"
        last = (int(ms), int(seq))
        assert fields["event"] in {"state", "progress", "log", "cancel_requested"}, record
        data = json.loads(fields["data"])
        assert isinstance(data, dict), record
        if fields["event"] == "state":
            JobState(data["state"])
        if fields["event"] == "log":
            assert set(data) == {"stream", "line"}, record


def check_metrics(text: str) -> None:
    # Parsed as Prometheus parses it; every family is one /metrics serves.
    parsed = list(text_string_to_metric_families(text))
    assert parsed, "no metrics"
    for family in parsed:
        assert FAMILIES.get(family.name) == family.type, family.name
        assert family.samples, family.name


def test_every_json_block_is_checked() -> None:
    json_blocks = [b for b in _doc_blocks() if b.lang == "json"]
    assert len(json_blocks) >= 20, "the response examples went missing"
    tags = {RESPONSE_TAG.match(b.tag).group(1) for b in json_blocks if RESPONSE_TAG.match(b.tag)}
    assert set(RESPONSE_MODELS) <= tags, f"no example for {set(RESPONSE_MODELS) - tags}"


# -- (3) the endpoint table ----------------------------------------------------------------

TABLE_ROW = re.compile(r"^\|\s*`(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`\s*\|")


def documented_endpoints() -> set[tuple[str, str]]:
    text = API_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Endpoints\n", 1)[1].split("\n## ", 1)[0]
    return {
        (m.group(1), m.group(2)) for line in section.splitlines() if (m := TABLE_ROW.match(line))
    }


@pytest.fixture(scope="module")
def app_schema() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(operations in the OpenAPI schema, the documentation routes FastAPI adds itself)."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", _env_file=None))  # type: ignore[call-arg]
    operations = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    builtin = {("GET", url) for url in (app.openapi_url, app.docs_url) if url}
    return operations, builtin


def test_endpoint_table_matches_the_app(
    app_schema: tuple[set[tuple[str, str]], set[tuple[str, str]]],
) -> None:
    operations, builtin = app_schema
    documented = documented_endpoints()
    assert len(documented) >= 17
    assert documented - operations - builtin == set(), "documented but not in the app"
    assert operations - documented == set(), "in the app but not in the endpoint table"


def test_states_and_failure_kinds_are_all_documented() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    for value in [*JobState, *FailureKind]:
        assert re.search(rf"^\| `{value.value}` \|", text, re.MULTILINE), value
