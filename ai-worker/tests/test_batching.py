"""Inference micro-batching, end to end: real worker processes, a real inference host, a
real Valkey. Jobs are queued while the worker is busy with a training job; when that job
is cancelled the worker claims them together, so what forms a batch is certain, not a
race. Each job's result says how many jobs shared its model call (``batch_size``)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from conftest import (
    WorkerFarm,
    inference_host,
    model_field,
    pid_alive,
    submit,
    training_request,
    wait_for,
    wait_terminal,
)
from trainyard.engine import JobQueue, Submission
from trainyard.types import JobType

SLOW = {"n_estimators": 200_000, "random_state": 1}  # minutes of work: always cancelled
MODEL = "rf_batch"
ROW = "5.1,3.5,1.4,0.2"


def _serving(queue: JobQueue, farm: WorkerFarm, **env: str) -> tuple[int, int]:
    """A worker that has trained MODEL and served it once: (worker pid, its host's pid)."""
    worker = farm.start(**env)
    trained = wait_terminal(queue, submit(queue, training_request(model_name=MODEL)))
    assert trained["state"] == "succeeded", trained.get("error")
    first = wait_terminal(queue, submit(queue, _infer(ROW), JobType.INFERENCE))
    assert first["state"] == "succeeded", first.get("error")
    return worker.pid, inference_host(worker.pid)


def _infer(input_data: Any, **parameters: Any) -> dict[str, Any]:
    return {"model_id": MODEL, "input_data": input_data, "parameters": parameters}


def _queued_behind_training(queue: JobQueue, requests: list[dict[str, Any]]) -> list[str]:
    """Queue ``requests`` while the worker trains, then cancel the training: the worker
    finds them all waiting when it next claims."""
    blocker = submit(queue, training_request(hyperparameters=SLOW))
    wait_for(lambda: queue.get_job(blocker)["state"] == "running", 30, "the training job")
    created = queue.enqueue_many([
        Submission(job_type=JobType.INFERENCE, runtime="sklearn", request=r,
                   **model_field(r, JobType.INFERENCE))
        for r in requests
    ])  # fmt: skip
    queue.cancel(blocker)
    assert wait_terminal(queue, blocker, 30)["state"] == "cancelled"
    return [job_id for job_id, _ in created]


def _result(job: dict[str, str]) -> dict[str, Any]:
    assert job["state"] == "succeeded", job
    result: dict[str, Any] = json.loads(job["result"])
    return result


def test_queued_requests_for_one_model_share_one_call_and_answer_each_job(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    _serving(queue, farm)
    rows = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5", [ROW, "6.3,2.5,5.0,1.9"]]
    jobs = _queued_behind_training(
        queue, [*(_infer(r) for r in rows), _infer("1,2,x,4"), _infer(ROW, probability=True)]
    )
    done = [wait_terminal(queue, job_id, 30) for job_id in jobs]
    *good, bad, with_probabilities = done

    # The four good inputs and the bad one asked the same parameters: one model call.
    assert [_result(j)["batch_size"] for j in good] == [5, 5, 5, 5]
    assert [len(_result(j)["predictions"]) for j in good[3:]] == [2]  # a list input stays one
    assert all("prediction" in _result(j) and _result(j)["model_id"] == MODEL for j in good[:3])
    # One bad input fails its own job only, as a user error (never retried).
    assert bad["state"] == "failed" and bad["error_kind"] == "user_error", bad
    assert "not a number" in bad["error"] and bad["attempt"] == "1"
    # Other parameters: another call in the same batch.
    assert _result(with_probabilities)["batch_size"] == 1
    assert "probabilities" in _result(with_probabilities)
    assert {j["attempt"] for j in done} == {"1"} and len({j["worker_id"] for j in done}) == 1


def test_batching_off_runs_each_job_on_its_own(queue: JobQueue, farm: WorkerFarm) -> None:
    _serving(queue, farm, MAX_BATCH_SIZE="1")
    jobs = _queued_behind_training(queue, [_infer(ROW) for _ in range(3)])
    done = [wait_terminal(queue, job_id, 30) for job_id in jobs]
    assert [_result(j)["batch_size"] for j in done] == [1, 1, 1]


def test_a_cancelled_job_of_a_running_batch_ends_alone_and_the_rest_succeed(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    # Renewals far apart: only the worker's cancel channel can end the job this soon.
    worker, host = _serving(queue, farm, LEASE_S="120", RENEW_EVERY_S="40")
    os.kill(host, signal.SIGSTOP)  # the batch stays in flight until the test lets it go
    try:
        jobs = _queued_behind_training(queue, [_infer(ROW) for _ in range(3)])
        wait_for(lambda: all(queue.get_job(j)["state"] == "running" for j in jobs), 30,
                 "the batch to start")  # fmt: skip
        assert queue.cancel(jobs[1]).state == "running"
        cancelled = wait_terminal(queue, jobs[1], 20)
        assert cancelled["state"] == "cancelled" and cancelled["error_kind"] == "cancelled"
        assert all(queue.get_job(j)["state"] == "running" for j in (jobs[0], jobs[2]))
    finally:
        os.kill(host, signal.SIGCONT)
    rest = [wait_terminal(queue, job_id, 30) for job_id in (jobs[0], jobs[2])]
    assert [_result(j)["batch_size"] for j in rest] == [3, 3]
    assert pid_alive(host) and inference_host(worker) == host  # the host served on


def test_a_crash_of_the_inference_host_mid_batch_retries_every_job(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    worker, host = _serving(queue, farm)
    os.kill(host, signal.SIGSTOP)
    try:
        jobs = _queued_behind_training(queue, [_infer(ROW) for _ in range(2)])
        wait_for(lambda: all(queue.get_job(j)["state"] == "running" for j in jobs), 30,
                 "the batch to start")  # fmt: skip
    finally:
        os.kill(host, signal.SIGKILL)
    done = [wait_terminal(queue, job_id, 60) for job_id in jobs]
    for job in done:  # each was retried on a new host (attempt 2) and answered there
        assert _result(job)["prediction"] and job["attempt"] == "2", job
    states = [e.data["state"] for e in queue.events(jobs[0]) if e.kind == "state"]
    assert "retrying" in states
    assert inference_host(worker) != host


@pytest.mark.parametrize("env", [{"MAX_BATCH_SIZE": "0"}, {"MAX_BATCH_WAIT_MS": "-1"}])
def test_bad_batch_settings_refuse_to_start(farm: WorkerFarm, env: dict[str, str]) -> None:
    worker = farm.start(**env)
    assert worker.wait(timeout=60) == 2
