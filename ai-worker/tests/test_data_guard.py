"""The data guard in one process: which data paths are the user's error and which are this
worker's (not visible here), the count of such jobs in a row, the out-of-service state it
leads to in the worker's record (a real Valkey), the re-check that ends it, and the
training child's own check (the backstop)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from trainyard.datapaths import DataPathError
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.types import FailureKind
from trainyard_worker import child
from trainyard_worker.attempts import Ending
from trainyard_worker.config import WorkerSettings
from trainyard_worker.data_guard import (
    EXIT_DATA_UNAVAILABLE,
    OUT_OF_SERVICE,
    DataGuard,
    DataUnavailable,
    locate_data,
)
from trainyard_worker.protocol import TrainingJobRequest

WORKER_ID = "w-guard"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "present.csv").write_text("a,b\n1,2\n")
    (data / "images").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("x\n")
    os.symlink(outside / "secret.csv", data / "link_out.csv")
    os.symlink(data / "loop_b", data / "loop_a")
    os.symlink(data / "loop_a", data / "loop_b")
    os.mkfifo(data / "pipe.csv")
    return data


@pytest.mark.parametrize("data_path", ["/data/present.csv", "present.csv", "/data/images"])
def test_a_visible_path_is_located(root: Path, data_path: str) -> None:
    assert locate_data(root, data_path).exists()


@pytest.mark.parametrize(
    ("data_path", "fragment"),
    [
        ("/data/../etc/passwd", "'..'"),
        ("/etc/passwd", "must start with /data/"),
        ("/data/link_out.csv", "outside the data root"),
        ("/data/pipe.csv", "not a regular file"),
        ("/data/loop_a", "symlink loop"),
        ("/data/" + "n" * 300, "too long"),
        ("/data/a\\b.csv", "'/' separators"),
    ],
)
def test_a_path_no_worker_may_use_is_the_users_error(
    root: Path, data_path: str, fragment: str
) -> None:
    with pytest.raises(DataPathError, match=fragment):
        locate_data(root, data_path)


@pytest.mark.parametrize(
    ("make_root", "hint"),
    [
        (lambda r: r, ""),  # the root has data, just not this file
        (lambda r: r.parent / "empty", ", an empty folder"),
        (lambda r: r.parent / "nowhere", ", which does not exist"),
    ],
)
def test_an_allowed_path_missing_here_is_this_workers_fault(
    root: Path, make_root: Callable[[Path], Path], hint: str
) -> None:
    data_root = make_root(root)
    if data_root.name == "empty":
        data_root.mkdir()
    with pytest.raises(DataUnavailable) as caught:
        locate_data(data_root, "/data/tabular_data.csv")
    reason = caught.value.reason(WORKER_ID)
    assert f"on worker {WORKER_ID} (DATA_ROOT={data_root.resolve()}{hint}):" in reason, reason
    assert "no such file or folder" in reason and "ends dead after max_attempts" in reason


def test_a_file_used_as_a_folder_is_not_visible_here(root: Path) -> None:
    with pytest.raises(DataUnavailable, match=r"present\.csv/x\.csv"):
        locate_data(root, "/data/present.csv/x.csv")


# -------------------------------------------------------------- the guard and its count


class RecordState:
    """The registration's small state write, straight to the queue (as Registration's)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.states: list[str] = []

    def set_state(self, state: str, job_id: str | None) -> None:
        self.states.append(state)
        self.queue.set_worker_state(WORKER_ID, state, job_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _register(queue: JobQueue, **fields: str) -> None:
    """A full heartbeat, with the fields a worker's Registration writes (no reason)."""
    queue.heartbeat(WORKER_ID, {"runtime": "sklearn", "framework": "sklearn", "pid": 1,
                                "state": "idle", "current_job": "", **fields}, 20_000)  # fmt: skip


def _record(queue: JobQueue) -> dict[str, str]:
    (h,) = [w for w in queue.live_workers(20_000) if w["id"] == WORKER_ID]
    return h


def _guard(
    queue: JobQueue, data_root: Path, limit: int = 3
) -> tuple[DataGuard, RecordState, Clock]:
    settings = WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings' own argument
        worker_type="sklearn",
        data_root=data_root,
        worker_id=WORKER_ID,
        data_unavailable_limit=limit,
    )
    record, clock = RecordState(queue), Clock()
    guard = DataGuard(settings, "sklearn", record, queue, recheck_s=30, clock=clock)
    return guard, record, clock


def _request(data_path: str) -> TrainingJobRequest:
    return TrainingJobRequest(model_type="random_forest", data_path=data_path)


MISSING = _request("/data/missing.csv")


def test_jobs_in_a_row_take_the_worker_out_of_service_until_the_data_is_back(
    queue: JobQueue, root: Path
) -> None:
    _register(queue)
    guard, record, clock = _guard(queue, root)

    for n in (1, 2):
        ending = guard.check(MISSING)
        assert ending is not None and ending.outcome == "retry"
        assert ending.error_kind == FailureKind.DATA_UNAVAILABLE
        assert FailureKind(ending.error_kind).retryable
        assert f"'/data/missing.csv' is not visible on worker {WORKER_ID}" in ending.error
        assert guard.in_a_row == n and not guard.out_of_service
    assert guard.check(_request("/data/present.csv")) is None  # visible data: a new count
    assert guard.in_a_row == 0
    bad = guard.check(_request("/data/../x.csv"))  # the user's error: not counted
    assert bad == Ending("failed", error="data_path must not contain '..'",
                         error_kind=FailureKind.USER_ERROR)  # fmt: skip
    assert guard.in_a_row == 0 and not guard.paused()

    for _ in range(3):
        guard.check(MISSING)
    assert guard.out_of_service and guard.paused()
    h = _record(queue)
    assert h["state"] == OUT_OF_SERVICE
    assert "3 training jobs in a row could not see their data" in h["state_reason"]
    assert f"DATA_ROOT={root.resolve()}" in h["state_reason"]
    _register(queue, state=OUT_OF_SERVICE)  # Registration's next full heartbeat
    assert _record(queue)["state_reason"] == guard.reason  # keeps the reason

    (root / "missing.csv").write_text("a,b\n1,2\n")  # the mount is back
    clock.now += 29
    assert guard.paused()  # not re-checked yet
    clock.now += 1
    assert not guard.paused() and not guard.out_of_service and guard.in_a_row == 0
    h = _record(queue)
    assert h["state"] == "idle" and h["state_reason"] == ""
    assert record.states[-1] == "idle"


def test_still_missing_at_the_recheck_stays_out_and_writes_the_reason_again(
    queue: JobQueue, root: Path
) -> None:
    _register(queue)
    guard, _, clock = _guard(queue, root, limit=1)
    guard.check(MISSING)
    assert guard.out_of_service
    queue.redis.hdel(queue.keys.worker(WORKER_ID), "state_reason")  # lost with a registration
    clock.now += 30
    assert guard.paused()
    assert _record(queue)["state_reason"] == guard.reason


def test_limit_zero_never_takes_the_worker_out_of_service(queue: JobQueue, root: Path) -> None:
    _register(queue)
    guard, record, _ = _guard(queue, root, limit=0)
    for _ in range(10):
        ending = guard.check(MISSING)
        assert ending is not None and ending.error_kind == FailureKind.DATA_UNAVAILABLE
    assert guard.in_a_row == 10 and not guard.paused() and record.states == []
    assert _record(queue)["state"] == "idle"


def test_after_run_counts_a_crash_whose_data_is_gone(queue: JobQueue, root: Path) -> None:
    _register(queue)
    guard, _, _ = _guard(queue, root)
    crashed = Ending("retry", error="exited with code 4", error_kind=FailureKind.CRASHED)
    present = _request("/data/present.csv")
    assert guard.after_run(present, crashed) is crashed  # a real crash stays one
    user = Ending("failed", error="bad csv", error_kind=FailureKind.USER_ERROR)
    assert guard.after_run(MISSING, user) is user  # only retries are looked at
    ending = guard.after_run(MISSING, crashed)
    assert ending.error_kind == FailureKind.DATA_UNAVAILABLE and guard.in_a_row == 1


def test_the_child_exits_data_unavailable_without_a_result(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = {
        "job_id": "j1", "attempt_id": "a1", "supervisor_pid": os.getpid(),
        "redis_url": server.url, "namespace": "trainyard", "data_root": str(empty),
        "framework": "sklearn", "task": "tabular", "device": "cpu",
        "model_store": str(tmp_path / "models"),
        "request": {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"},
        "out_dir": str(tmp_path / "out"), "result_path": str(tmp_path / "result.json"),
    }  # fmt: skip
    assert child.run(spec) == EXIT_DATA_UNAVAILABLE
    assert not (tmp_path / "result.json").exists()
    spec["request"] = {"model_type": "random_forest", "data_path": "/data/../etc/passwd"}
    assert child.run(spec) == child.EXIT_USER_ERROR  # the sandbox rules stay the user's
    assert "'..'" in (tmp_path / "result.json").read_text()
