"""Hostile data files, hyperparameters, inputs and model files through a REAL sklearn
worker (PRODUCT.md §10), table-driven.

Jobs are enqueued straight into the queue, past the API's own checks: the worker must
hold the line by itself. Every hostile job must fail as a ``user_error`` with a short,
readable reason (no traceback), on its first attempt; the worker must stay alive and go
on serving (a good inference after each case); the model registry and the model store
must not change. Tampered model files must never be unpickled or executed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from runtime_support import require_framework

from conftest import WorkerFarm, wait_for, wait_terminal
from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.routing import MODEL_TYPES
from trainyard.types import JobType
from trainyard_worker import child

require_framework("sklearn")

GOOD_MODEL = "rf_good"
SHADOW = "pytorch-2.1"  # a runtime no worker here serves: jobs the test itself claims
MAX_REASON = 2000  # what child.py / inference_host.py cut a reason to


# ---------------------------------------------------------------- the data root


def _good_csv(rows: int = 60) -> str:
    lines = ["f1,f2,f3,f4,label"]
    for i in range(rows):
        k = i % 3
        lines.append(f"{k + i % 2 * 0.1},{k * 2 + 0.5},{k * 3 - 1},{i % 5 * 0.01},c{k}")
    return "\n".join(lines) + "\n"


def _files(root: Path, outside: Path) -> None:
    good = _good_csv()
    (root / "tabular_data.csv").write_text(good)
    (root / "bom.csv").write_bytes(b"\xef\xbb\xbf" + good.encode())
    (root / "empty.csv").write_bytes(b"")
    (root / "header_only.csv").write_text("f1,f2,label\n")
    (root / "ragged.csv").write_text("f1,f2,label\n1,2,a\n1,2,3,4,b\n")
    (root / "garbage.csv").write_bytes(bytes(range(256)) * 64)
    (root / "utf16.csv").write_bytes(good.encode("utf-16"))
    (root / "long_cell.csv").write_bytes(b"f1,label\n" + b"7" * 10_000_000 + b",a\n")
    names = ",".join(f"col{i}" for i in range(500_000))  # ~6 MB of names, each twice
    (root / "long_header.csv").write_text(f"{names},{names},label\n1,a\n")
    (root / "semicolons.csv").write_text(good.replace(",", ";"))
    (root / "nul.csv").write_text(good.replace("\n0", "\n0\x00", 1))
    (root / "open_quote.csv").write_text('f1,f2,label\n"1,2,a\n3,4,b\n')
    (root / "a_folder").mkdir()
    os.mkfifo(root / "pipe.csv")
    outside.mkdir()
    (outside / "secret.csv").write_text(good)
    os.symlink(outside / "secret.csv", root / "link.csv")
    os.symlink(outside, root / "link_dir")


@dataclass
class Served:
    url: str
    queue: JobQueue
    proc: subprocess.Popen[bytes]
    data_root: Path
    model_store: Path


@pytest.fixture(scope="module")
def served(server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One worker for the whole table, with a good model registered and served."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "data"
    root.mkdir()
    _files(root, base / "outside")
    connect(server.url).flushall()  # nothing queued by earlier modules
    farm = WorkerFarm(server, base)
    proc = farm.start(DATA_ROOT=str(root), LEASE_S="10", RENEW_EVERY_S="1")
    queue = JobQueue(connect(server.url))
    s = Served(server.url, queue, proc, root, base / "models")
    done = _run(s, _train_request(model_name=GOOD_MODEL))
    assert done["state"] == "succeeded", done.get("error")
    _assert_serving(s)
    yield s
    farm.stop_all()


def _train_request(**overrides: Any) -> dict[str, Any]:
    return {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 10, "random_state": 1},
        "framework_override": "sklearn",
        **overrides,
    }


def _run(
    s: Served, request: dict[str, Any], job_type: JobType = JobType.TRAINING, attempts: int = 2
) -> dict[str, str]:
    extra = {"model_id": str(request["model_id"])} if job_type is JobType.INFERENCE else None
    job_id, _ = s.queue.enqueue(
        job_type=job_type, runtime="sklearn", request=request, max_attempts=attempts,
        timeout_s=120, extra_fields=extra,
    )  # fmt: skip
    return wait_terminal(s.queue, job_id, timeout_s=120)


def _assert_serving(s: Served) -> None:
    """The worker process is alive and still answers a good job."""
    assert s.proc.poll() is None, "the worker died"
    done = _run(s, {"model_id": GOOD_MODEL, "input_data": "1,2.5,2,0.01"}, JobType.INFERENCE)
    assert done["state"] == "succeeded", done.get("error")
    assert json.loads(done["result"])["prediction"] in {"c0", "c1", "c2"}


def _state(s: Served) -> tuple[Any, list[str]]:
    """The registry and every file and folder in the model store: what a failed job must
    not touch (a failed training leaves no empty <model_id>/ folder behind either)."""
    files = sorted(str(p.relative_to(s.model_store)) for p in s.model_store.rglob("*"))
    return s.queue.list_models(limit=1000), files


def _assert_unchanged(s: Served, before: tuple[Any, list[str]]) -> None:
    # The supervisor removes a failed attempt's folders just after it records the failure.
    wait_for(lambda: _state(s) == before, 10, "the model store and registry to be as before")


def _assert_user_error(done: dict[str, str], fragment: str) -> None:
    assert done["state"] == "failed", done
    assert done["error_kind"] == "user_error", done
    assert done["attempt"] == "1", done  # a user's mistake is never retried
    reason = done["error"]
    assert fragment in reason, reason[:500]
    assert "Traceback" not in reason and len(reason) <= MAX_REASON, reason[:500]


# ---------------------------------------------------------------- training jobs

NESTED_500: Any = 10
for _ in range(500):
    NESTED_500 = [NESTED_500]

# Run in-process through the training child's own entry (child.run: path checks, the
# runtime, the user-error result file), as the supervisor's child would: a child process
# per case costs seconds of imports. Cases that hung or crashed the child before their fix
# go through the real worker below instead, where a regression times out the job.
TRAINING: list[tuple[str, dict[str, Any], str]] = [
    # malformed CSVs
    ("csv empty file", {"data_path": "/data/empty.csv"}, "empty"),
    ("csv header only", {"data_path": "/data/header_only.csv"}, "no data rows"),
    ("csv ragged rows", {"data_path": "/data/ragged.csv"}, "row 2 has 5 values"),
    ("csv binary garbage", {"data_path": "/data/garbage.csv"}, "not UTF-8"),
    ("csv utf-16 with BOM", {"data_path": "/data/utf16.csv"}, "not UTF-8"),
    ("csv 10 MB single cell", {"data_path": "/data/long_cell.csv"}, "field larger than"),
    ("csv 13 MB header of repeated names", {"data_path": "/data/long_header.csv"}, "duplicate"),
    ("csv wrong delimiter", {"data_path": "/data/semicolons.csv"}, "at least two columns"),
    ("csv label column missing", {"label_column": "species"}, "label column 'species'"),
    ("csv NUL in a cell", {"data_path": "/data/nul.csv"}, "not a number"),
    ("csv unclosed quote", {"data_path": "/data/open_quote.csv"}, "values but the header"),
    ("csv is a folder", {"data_path": "/data/a_folder"}, "is a folder"),
    # paths the API would refuse, sent straight to the queue
    ("path dot-dot", {"data_path": "/data/../etc/passwd"}, "'..'"),
    ("path absolute outside", {"data_path": "/etc/passwd"}, "must start with /data/"),
    ("path backslashes", {"data_path": "..\\..\\etc\\passwd"}, "'/' separators"),
    ("path symlinked file out", {"data_path": "/data/link.csv"}, "outside the data root"),
    ("path NUL", {"data_path": "/data/tabular_data.csv\x00.txt"}, "NUL"),
    ("path name too long", {"data_path": "/data/" + "n" * 300}, "too long"),
    # hyperparameters
    ("hp zero", {"hyperparameters": {"n_estimators": 0}}, "n_estimators"),
    ("hp negative", {"hyperparameters": {"n_estimators": -5}}, "n_estimators"),
    ("hp NaN", {"hyperparameters": {"n_estimators": float("nan")}}, "finite"),
    ("hp Infinity", {"hyperparameters": {"min_weight_fraction_leaf": float("inf")}}, "finite"),
    ("hp 1e308", {"hyperparameters": {"n_estimators": 1e308}}, "at most"),
    ("hp bool as number", {"hyperparameters": {"n_estimators": True}}, "true/false"),
    ("hp string as number", {"hyperparameters": {"n_estimators": "10"}}, "n_estimators"),
    ("hp svm C zero", {"model_type": "svm", "hyperparameters": {"C": 0}}, "'C'"),
    ("hp svm C negative", {"model_type": "svm", "hyperparameters": {"C": -1e308}}, "'C'"),
    ("hp svm max_iter huge", {"model_type": "svm", "hyperparameters": {"max_iter": 2**70}},
     "too large"),
    ("hp test_size bool", {"hyperparameters": {"test_size": True}}, "test_size"),
    ("hp test_size tiny", {"hyperparameters": {"test_size": 1e-308}}, "cannot split"),
    ("hp nested 500 deep", {"hyperparameters": {"n_estimators": NESTED_500}}, "n_estimators"),
    ("hp 1 MB name", {"hyperparameters": {"n" * 1_000_000: 1}}, "unknown hyperparameter"),
]  # fmt: skip


def _claimed(s: Served) -> tuple[str, str]:
    """A real job and attempt (on a runtime no worker here serves) for a child to report to."""
    job_id, _ = s.queue.enqueue(job_type=JobType.TRAINING, runtime=SHADOW, request={})
    claim = s.queue.claim("w-hostile-test", [SHADOW], 60_000)
    assert claim is not None and claim.job_id == job_id
    return job_id, claim.attempt_id


def _child_run(s: Served, request: dict[str, Any], work: Path) -> tuple[int, dict[str, Any]]:
    job_id, attempt_id = _claimed(s)
    spec = {
        "job_id": job_id, "attempt_id": attempt_id, "supervisor_pid": os.getpid(),
        "redis_url": s.url,
        "namespace": "trainyard", "data_root": str(s.data_root), "framework": "sklearn",
        "task": MODEL_TYPES[request["model_type"]].task, "device": "cpu",
        "model_store": str(s.model_store), "request": json.loads(json.dumps(request)),
        "out_dir": str(work / "out"), "result_path": str(work / "result.json"),
    }  # fmt: skip
    (work / "out").mkdir(parents=True)
    rc = child.run(spec)
    return rc, json.loads((work / "result.json").read_text())


@pytest.mark.parametrize(
    ("overrides", "fragment"), [c[1:] for c in TRAINING], ids=[c[0] for c in TRAINING]
)
def test_hostile_training_is_a_user_error(
    served: Served, overrides: dict[str, Any], fragment: str, tmp_path: Path
) -> None:
    before = _state(served)
    rc, result = _child_run(served, _train_request(**overrides), tmp_path)
    assert rc == child.EXIT_USER_ERROR and result["ok"] is False, result
    reason = result["error"]
    assert fragment in reason and len(reason) <= MAX_REASON, reason[:500]
    assert not any((tmp_path / "out").iterdir())  # no artifact written
    _assert_unchanged(served, before)


# What hung (a FIFO, libsvm with C=1e308, 10**30 trees) or crashed (OverflowError in
# sklearn's C code) before its fix, and what a reason must be cut from: the real worker.
WORKER_TRAINING: list[tuple[str, dict[str, Any], str]] = [
    ("csv is a FIFO", {"data_path": "/data/pipe.csv"}, "not a regular file"),
    ("hp svm C 1e308", {"model_type": "svm", "hyperparameters": {"C": 1e308}}, "at most"),
    ("hp huge n_estimators", {"hyperparameters": {"n_estimators": 10**30}}, "too large"),
    ("hp huge max_depth", {"hyperparameters": {"max_depth": 10**30}}, "too large"),
    ("path symlinked folder out", {"data_path": "/data/link_dir/secret.csv"}, "outside"),
    ("csv 13 MB header of repeated names", {"data_path": "/data/long_header.csv"}, "duplicate"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [c[1:] for c in WORKER_TRAINING],
    ids=[c[0] for c in WORKER_TRAINING],
)
def test_hostile_training_through_the_worker(
    served: Served, overrides: dict[str, Any], fragment: str
) -> None:
    before = _state(served)
    _assert_user_error(_run(served, _train_request(**overrides)), fragment)
    _assert_unchanged(served, before)
    _assert_serving(served)


def test_a_utf8_bom_is_not_part_of_the_first_column(served: Served, tmp_path: Path) -> None:
    rc, result = _child_run(served, _train_request(data_path="/data/bom.csv"), tmp_path)
    assert rc == 0 and result["ok"] is True, result
    assert result["details"]["feature_names"] == ["f1", "f2", "f3", "f4"]


# ---------------------------------------------------------------- inference jobs

INFERENCE: list[tuple[str, Any, dict[str, Any], str]] = [
    ("input 10 MB single line", "1," + "2" * 10_000_000, {}, "not a CSV row"),
    ("input newline in a field", "1,2\n3,4", {}, "not a CSV row"),
    ("input NUL", "1,2,3,4\x00", {}, "not a number"),
    ("input numbers not text", [1, 2, 3, 4], {}, "expected a CSV string"),
    ("input nested 500 deep", NESTED_500, {}, "expected a CSV string"),
    ("input 100000 values", ",".join(["1"] * 100_000), {}, "100000 values"),
    ("input NaN", "nan,1,2,3", {}, "finite"),
    ("input 1e400", "1e400,1,2,3", {}, "finite"),
    ("parameter bool as number", "1,2,3,4", {"probability": 1}, "true or false"),
    ("parameter 1 MB name", "1,2,3,4", {"p" * 1_000_000: True}, "unknown prediction"),
]


@pytest.mark.parametrize(
    ("input_data", "parameters", "fragment"),
    [c[1:] for c in INFERENCE],
    ids=[c[0] for c in INFERENCE],
)
def test_hostile_inference_fails_as_user_error(
    served: Served, input_data: Any, parameters: dict[str, Any], fragment: str
) -> None:
    before = _state(served)
    request = {"model_id": GOOD_MODEL, "input_data": input_data, "parameters": parameters}
    _assert_user_error(_run(served, request, JobType.INFERENCE), fragment)
    _assert_unchanged(served, before)
    _assert_serving(served)


@pytest.mark.parametrize("model_id", ["../../etc/passwd", "*", "{trainyard}:job:x", "a b\n"])
def test_inference_on_an_id_aimed_at_other_keys(served: Served, model_id: str) -> None:
    before = _state(served)
    done = _run(served, {"model_id": model_id, "input_data": "1,2,3,4"}, JobType.INFERENCE)
    _assert_user_error(done, "model_id: must match")  # refused before any key is built
    _assert_unchanged(served, before)
    _assert_serving(served)


# ---------------------------------------------------------------- JSON nested 10,000 deep


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _enqueue_deep(s: Served, request: dict[str, Any], job_type: JobType) -> str:
    # The engine's json.dumps needs the room too; the worker parses with the default limit.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        extra = {"model_id": GOOD_MODEL} if job_type is JobType.INFERENCE else None
        job_id, _ = s.queue.enqueue(
            job_type=job_type, runtime="sklearn", request=request, max_attempts=1,
            extra_fields=extra,
        )  # fmt: skip
    finally:
        sys.setrecursionlimit(limit)
    return job_id


DEEP = [
    ("hyperparameters", _train_request(hyperparameters={"n_estimators": _deep(10_000)}),
     JobType.TRAINING),
    ("input_data", {"model_id": GOOD_MODEL, "input_data": _deep(10_000)}, JobType.INFERENCE),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "job_type"), [d[1:] for d in DEEP], ids=[d[0] for d in DEEP])
def test_json_nested_10000_deep_does_not_crash_the_worker(
    served: Served, request_: dict[str, Any], job_type: JobType
) -> None:
    before = _state(served)
    done = wait_terminal(served.queue, _enqueue_deep(served, request_, job_type), 60)
    assert done["state"] in {"failed", "dead"}, done
    assert "Traceback" not in done["error"] and len(done["error"]) <= MAX_REASON
    _assert_unchanged(served, before)
    _assert_serving(served)


def test_json_nested_10000_deep_is_a_user_error(served: Served) -> None:
    request = _train_request(hyperparameters={"n_estimators": _deep(10_000)})
    done = wait_terminal(served.queue, _enqueue_deep(served, request, JobType.TRAINING), 60)
    _assert_user_error(done, "the job's request cannot be read: RecursionError")


# Requests that bypass the API (enqueued through the engine): the worker checks again what
# it turns into paths and keys, so they fail once, as the user's, and write nothing.
BYPASS = [
    ("model_name-traversal", _train_request(model_name="../../escaped"), JobType.TRAINING,
     "model_name: must match"),
    ("model_name-absolute", _train_request(model_name="/tmp/escaped"), JobType.TRAINING,
     "model_name: must match"),
    ("base_model_id-key", _train_request(base_model_id="x}:job:y"), JobType.TRAINING,
     "base_model_id: must match"),
    ("unknown-model_type", _train_request(model_type="__import__"), JobType.TRAINING,
     "model_type: unknown model type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "job_type", "fragment"), [b[1:] for b in BYPASS], ids=[b[0] for b in BYPASS]
)
def test_a_request_that_bypassed_the_api_is_checked_again(
    served: Served, request_: dict[str, Any], job_type: JobType, fragment: str
) -> None:
    before = _state(served)
    _assert_user_error(_run(served, request_, job_type), fragment)
    _assert_unchanged(served, before)
    assert not (served.model_store.parent / "escaped").exists()
    assert not Path("/tmp/escaped").exists()


# ---------------------------------------------------------------- tampered model files

MARKER_NAME = "pwned"


class _Payload:
    """Unpickling this runs a shell command that creates ``path``: it must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _tamper(s: Served, model_id: str, write: Any) -> Path:
    """Register ``model_id`` as a copy of the good model (never served, so no process has it
    loaded), then overwrite its artifact with what ``write(path, marker)`` writes; returns
    the marker a payload would create."""
    good = s.queue.get_model(GOOD_MODEL)
    assert good is not None
    job_id, attempt_id = _claimed(s)
    relative = f"{model_id}/{job_id}-1"
    shutil.copytree(s.model_store / good["artifact"], s.model_store / relative)
    record = {**good, "model_id": model_id, "job_id": job_id, "artifact": relative}
    assert s.queue.finish(job_id, attempt_id, "succeeded", model=record).applied
    marker = s.model_store.parent / f"{MARKER_NAME}-{model_id}"
    write(s.model_store / relative / "model.skops", marker)
    return marker


def _pickle_bomb(artifact: Path, marker: Path) -> None:
    artifact.write_bytes(pickle.dumps(_Payload(marker)))


def _skops_with_a_function(artifact: Path, marker: Path) -> None:
    import skops.io as sio

    sio.dump({"run": os.system, "arg": f"touch {marker}"}, artifact)


def _zip_of_garbage(artifact: Path, marker: Path) -> None:
    with zipfile.ZipFile(artifact, "w") as archive:
        archive.writestr("schema.json", "{not json")


TAMPERED = [
    ("a pickle with a payload", "tampered_pickle", _pickle_bomb, "not a readable skops file"),
    ("skops holding os.system", "tampered_function", _skops_with_a_function, "allow-list"),
    ("a zip that is not skops", "tampered_zip", _zip_of_garbage, "not a readable skops file"),
]


@pytest.mark.parametrize(("model_id", "write", "fragment"), [t[1:] for t in TAMPERED],
                         ids=[t[0] for t in TAMPERED])  # fmt: skip
def test_a_tampered_model_file_is_refused_never_executed(
    served: Served, model_id: str, write: Any, fragment: str
) -> None:
    marker = _tamper(served, model_id, write)
    before = _state(served)
    done = _run(served, {"model_id": model_id, "input_data": "1,2,3,4"}, JobType.INFERENCE, 1)
    # Not the user's doing (they cannot write the model store): a crash, never a result.
    assert done["state"] in {"failed", "dead"}, done
    assert fragment in done["error"], done["error"][:500]
    assert not marker.exists(), "the model file's code ran"
    _assert_unchanged(served, before)
    _assert_serving(served)
