"""The supervisor, end to end: real worker processes, real training children, a real
Valkey server. Faults are real too: signals to real processes."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys

import pytest

from conftest import (
    WORKER_DIR,
    WorkerFarm,
    child_pids,
    parent_pid,
    pid_alive,
    pids_matching,
    submit,
    training_request,
    wait_for,
    wait_terminal,
)
from trainyard.engine import JobQueue
from trainyard.types import JobType
from trainyard_worker import supervisor

SLOW = {"n_estimators": 200_000, "random_state": 1}  # minutes of work: always stopped first


def _running_child(queue: JobQueue, job_id: str) -> list[int]:
    wait_for(lambda: queue.get_job(job_id)["state"] == "running", 30, "the job to start")
    return wait_for(lambda: child_pids(job_id), 30, "the training child to appear")


def test_trains_then_serves_the_model_and_survives_bad_input(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    worker = farm.start()
    job_id = submit(queue, training_request(model_name="rf_test"), timeout_s=120)
    done = wait_terminal(queue, job_id)
    assert done["state"] == "succeeded", done.get("error")
    model = queue.get_model("rf_test")
    assert model is not None and model["metrics"]["accuracy"] >= 0.9
    assert model["runtime"] == "sklearn" and model["job_id"] == job_id
    kinds = {e.kind for e in queue.events(job_id)}
    assert {"state", "progress", "log"} <= kinds

    bad = submit(queue, training_request(hyperparameters={"n_trees": 5}))
    failed = wait_terminal(queue, bad)
    assert failed["state"] == "failed" and failed["error_kind"] == "user_error"
    assert "n_trees" in failed["error"] and failed["attempt"] == "1"  # not retried

    infer = submit(
        queue,
        {
            "model_id": "rf_test",
            "input_data": ["1,2,3,4", "9,7,6,5"],
            "parameters": {"probability": True},
        },
        JobType.INFERENCE,
    )
    served = wait_terminal(queue, infer)
    assert served["state"] == "succeeded", served.get("error")
    assert '"predictions"' in served["result"] and '"probabilities"' in served["result"]

    wrong = submit(queue, {"model_id": "rf_test", "input_data": "1,2,x,4"}, JobType.INFERENCE)
    refused = wait_terminal(queue, wrong)
    assert refused["state"] == "failed" and refused["error_kind"] == "user_error"
    assert "not a number" in refused["error"]
    assert worker.poll() is None


def test_cancel_of_a_running_job_kills_its_process_group(queue: JobQueue, farm: WorkerFarm) -> None:
    farm.start()
    job_id = submit(queue, training_request(hyperparameters=SLOW))
    pids = _running_child(queue, job_id)
    assert queue.cancel(job_id).state == "running"
    done = wait_terminal(queue, job_id, 30)
    assert done["state"] == "cancelled"
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "the child to be gone")


def test_timeout_fails_the_job_and_kills_the_child(queue: JobQueue, farm: WorkerFarm) -> None:
    farm.start()
    job_id = submit(queue, training_request(hyperparameters=SLOW), timeout_s=4)
    pids = _running_child(queue, job_id)
    done = wait_terminal(queue, job_id, 30)
    assert done["state"] == "failed" and done["error_kind"] == "timeout", done
    assert not any(pid_alive(p) for p in pids)


def test_a_child_killed_by_sigkill_is_retried_then_dead(queue: JobQueue, farm: WorkerFarm) -> None:
    worker = farm.start()
    job_id = submit(queue, training_request(hyperparameters=SLOW), max_attempts=2)
    for attempt in (1, 2):
        wait_for(lambda a=attempt: queue.get_job(job_id)["attempt"] == str(a), 30, "the attempt")
        pids = wait_for(lambda: child_pids(job_id), 30, "the child")
        os.kill(pids[0], signal.SIGKILL)  # what the OOM killer does
    done = wait_terminal(queue, job_id, 30)
    assert done["state"] == "dead" and done["error_kind"] == "killed"
    assert "SIGKILL" in done["error"]
    assert worker.poll() is None  # the worker lives on


def test_kill_9_of_a_worker_hands_its_job_to_another(queue: JobQueue, farm: WorkerFarm) -> None:
    first = farm.start()
    job_id = submit(queue, training_request(hyperparameters={"n_estimators": 3000}), max_attempts=3)
    pids = _running_child(queue, job_id)
    second = farm.start()
    first.kill()
    first.wait()
    done = wait_terminal(queue, job_id, 90)
    assert done["state"] == "succeeded", done.get("error")
    assert done["attempt"] == "2" and done["stalls"] == "1"
    assert not any(pid_alive(p) for p in pids)  # the orphan died with its supervisor
    assert second.poll() is None


def test_sigterm_hands_the_running_job_back_without_counting_it(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    worker = farm.start(SHUTDOWN_GRACE_S="0")
    job_id = submit(queue, training_request(hyperparameters=SLOW))
    pids = _running_child(queue, job_id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    job = queue.get_job(job_id)
    assert job is not None and job["state"] == "queued" and job["attempt"] == "0"
    assert not any(pid_alive(p) for p in pids)


def test_worker_refuses_a_runtime_it_cannot_serve() -> None:
    env = {**os.environ, "WORKER_TYPE": "pytorch-2.1", "MODEL_FRAMEWORK": "pytorch"}
    proc = subprocess.run(
        [sys.executable, "src/worker.py"],
        cwd=WORKER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "uv sync --extra pytorch_2_1" in proc.stderr


def test_the_worker_record_shows_its_job_as_it_starts_and_ends(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    # A heartbeat far slower than the test: only an immediate publish can pass it.
    farm.start(HEARTBEAT_S="30", WORKER_TTL_S="120", LEASE_S="100", RENEW_EVERY_S="30")
    wait_for(lambda: queue.live_workers(120_000), 30, "the worker to register")
    job_id = submit(queue, training_request(hyperparameters=SLOW))
    _running_child(queue, job_id)
    (worker,) = queue.live_workers(120_000)
    assert worker["state"] == "busy" and worker["current_job"] == job_id
    queue.cancel(job_id)
    # Renewals every 30 s: only the worker's cancel channel ends it this soon.
    assert wait_terminal(queue, job_id, 10)["state"] == "cancelled"
    wait_for(lambda: queue.live_workers(120_000)[0]["state"] == "idle", 5, "the worker to say idle")


def test_a_dead_inference_process_is_replaced_and_serving_goes_on(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    worker = farm.start()
    trained = wait_terminal(queue, submit(queue, training_request(model_name="rf_host")))
    assert trained["state"] == "succeeded", trained.get("error")
    request = {"model_id": "rf_host", "input_data": "1,2,3,4"}
    first = wait_terminal(queue, submit(queue, request, JobType.INFERENCE))
    assert first["state"] == "succeeded", first.get("error")

    (host,) = pids_matching("trainyard_worker.inference_host", str(worker.pid))
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: not pid_alive(host), 10, "the inference process to die")

    second = wait_terminal(queue, submit(queue, request, JobType.INFERENCE))
    assert second["state"] == "succeeded", second.get("error")
    assert second["attempt"] == "1"  # a new process served it; nothing was retried
    assert worker.poll() is None


def test_the_supervisor_waits_on_wake_ups_not_on_a_tick() -> None:
    assert not [name for name in vars(supervisor) if "TICK" in name.upper()]
    # The one sleep is _call's retry through a Redis outage, never on a job's path.
    source = inspect.getsource(supervisor)
    assert source.count("sleep(") == inspect.getsource(supervisor.Supervisor._call).count("sleep(")


def _fork_server(worker_pid: int) -> int:
    """The worker's fork server, once it is warm (until then jobs start fresh)."""
    found = wait_for(
        lambda: pids_matching("trainyard_worker.forkserver", str(worker_pid), "(ready)"),
        60,
        "the fork server to be ready",
    )
    return found[0]


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh"])
def test_a_cancel_lands_without_waiting_for_a_renewal(
    queue: JobQueue, farm: WorkerFarm, fork_server: bool
) -> None:
    # A renewal a minute away: the cancel must come through the worker's cancel channel.
    worker = farm.start(LEASE_S="300", RENEW_EVERY_S="60", FORK_SERVER=str(fork_server))
    expected_parent = _fork_server(worker.pid) if fork_server else worker.pid
    job_id = submit(queue, training_request(hyperparameters=SLOW))
    pids = _running_child(queue, job_id)
    assert parent_pid(pids[0]) == expected_parent
    assert queue.cancel(job_id).state == "running"
    done = wait_terminal(queue, job_id, 20)
    assert done["state"] == "cancelled" and done["attempt"] == "1"
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "the child to be gone")
    if not fork_server:
        assert not pids_matching("trainyard_worker.forkserver", str(worker.pid))


def test_training_through_the_fork_server_logs_and_registers_as_before(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    worker = farm.start()
    server = _fork_server(worker.pid)
    job_id = submit(queue, training_request(model_name="rf_forked"), timeout_s=120)
    done = wait_terminal(queue, job_id)
    assert done["state"] == "succeeded", done.get("error")
    model = queue.get_model("rf_forked")
    assert model is not None and model["job_id"] == job_id and model["size_bytes"] > 0
    events = queue.events(job_id)
    assert any(e.kind == "progress" for e in events)
    assert any(e.kind == "log" and e.data["stream"] == "stdout" for e in events)
    # A bad request still fails as the user's error, with the child's message.
    bad = wait_terminal(queue, submit(queue, training_request(hyperparameters={"n_trees": 5})))
    assert bad["state"] == "failed" and bad["error_kind"] == "user_error"
    assert "n_trees" in bad["error"]
    assert pid_alive(server) and _fork_server(worker.pid) == server  # the same warm server
