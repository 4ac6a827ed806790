"""Model affinity, end to end: two sklearn workers on one Valkey, each holding another
model; an inference job goes to the worker that has its model loaded, and to another
worker only once it has waited ``AFFINITY_MS``. The worker records (``GET /workers``)
show what each holds."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading

import redis

from conftest import WorkerFarm, model_field, submit, training_request, wait_for, wait_terminal
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue, Submission
from trainyard.types import JobType
from trainyard_worker.supervisor import BLPOP_RESOLUTION_S

SLOW = {"n_estimators": 200_000, "random_state": 1}  # minutes of work: always cancelled
ROW = "5.1,3.5,1.4,0.2"


def _infer(queue: JobQueue, model_id: str) -> dict[str, str]:
    request = {"model_id": model_id, "input_data": ROW}
    done = wait_terminal(queue, submit(queue, request, JobType.INFERENCE), 20)
    assert done["state"] == "succeeded", done.get("error")
    return done


def _busy(queue: JobQueue) -> str:
    """A training job that keeps whichever worker is free busy until it is cancelled."""
    job_id = submit(queue, training_request(hyperparameters=SLOW))
    wait_for(lambda: queue.get_job(job_id)["state"] == "running", 30, "the training job")
    return job_id


def _loaded(queue: JobQueue, worker_id: str) -> list[str]:
    record = next((w for w in queue.live_workers(60_000) if w.get("id") == worker_id), None)
    return json.loads(record["loaded_models"]) if record else []


def _two_workers_two_models(
    queue: JobQueue, farm: WorkerFarm, **env: str
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Worker "a" holds model m1, worker "b" holds m2 (b loaded it while a was busy)."""
    a = farm.start(WORKER_ID="a", **env)
    for name in ("m1", "m2"):
        trained = wait_terminal(queue, submit(queue, training_request(model_name=name)))
        assert trained["state"] == "succeeded", trained.get("error")
    assert _infer(queue, "m1")["worker_id"] == "a"
    blocker = _busy(queue)
    assert queue.get_job(blocker)["worker_id"] == "a"
    b = farm.start(WORKER_ID="b", **env)
    assert _infer(queue, "m2")["worker_id"] == "b"  # nobody held m2: the free worker took it
    queue.cancel(blocker)
    assert wait_terminal(queue, blocker, 30)["state"] == "cancelled"
    wait_for(lambda: _loaded(queue, "a") == ["m1"] and _loaded(queue, "b") == ["m2"], 10,
             "the worker records to show their models")  # fmt: skip
    return a, b


def test_a_models_jobs_go_to_the_worker_that_holds_it(queue: JobQueue, farm: WorkerFarm) -> None:
    # A long affinity: the routing cannot be the fallback's. Idle waits of 30 s: when the
    # other worker gets the runtime's wake-up it skips the job and wakes the holder on its
    # own list, or the job would wait out the holder's idle wait.
    _two_workers_two_models(queue, farm, AFFINITY_MS="60000", BLOCK_S="30")
    # One at a time, both workers idle each time: without affinity whichever wakes first
    # would take it.
    served_by = [(m, _infer(queue, m)["worker_id"]) for m in ["m1", "m2"] * 4]
    assert set(served_by) == {("m1", "a"), ("m2", "b")}, served_by
    # Queued together: each worker takes its model's jobs (as one batch).
    requests = [{"model_id": m, "input_data": ROW} for m in ["m1", "m2"] * 3]
    created = queue.enqueue_many([
        Submission(job_type=JobType.INFERENCE, runtime="sklearn", request=r,
                   **model_field(r, JobType.INFERENCE))
        for r in requests
    ])  # fmt: skip
    done = [wait_terminal(queue, job_id, 60) for job_id, _ in created]
    assert all(job["state"] == "succeeded" for job in done), done
    served_by = [(json.loads(job["request"])["model_id"], job["worker_id"]) for job in done]
    assert set(served_by) == {("m1", "a"), ("m2", "b")}, served_by
    # Each model stayed loaded once, on its worker.
    assert _loaded(queue, "a") == ["m1"] and _loaded(queue, "b") == ["m2"]


def test_a_job_whose_holder_is_busy_goes_to_another_worker_after_the_affinity_wait(
    queue: JobQueue, farm: WorkerFarm
) -> None:
    # Idle waits of 30 s: b takes the job this soon only by rechecking when affinity
    # lets it (no wake-up comes for a job it skipped).
    _two_workers_two_models(queue, farm, AFFINITY_MS="500", BLOCK_S="30")
    blocker = _busy(queue)
    holder = queue.get_job(blocker)["worker_id"]
    model = "m1" if holder == "a" else "m2"
    other = "b" if holder == "a" else "a"
    job_id = submit(queue, {"model_id": model, "input_data": ROW}, JobType.INFERENCE)
    done = wait_terminal(queue, job_id, 15)
    assert done["state"] == "succeeded" and done["worker_id"] == other, done
    wait_for(lambda: model in _loaded(queue, other), 10, "the other worker to show the model")
    queue.cancel(blocker)


class _BlockingCalls:
    """Every BLPOP the server runs meanwhile, seen through MONITOR (a thread reads it)."""

    def __init__(self, url: str) -> None:
        self._monitor = redis.Redis.from_url(url).monitor()
        self._monitor.__enter__()
        self.blpops: list[list[str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            while True:
                args = str(self._monitor.next_command()["command"]).split()
                if args and args[0].upper() == "BLPOP":
                    self.blpops.append(args)

    def close(self) -> None:
        self._monitor.__exit__()
        self._thread.join(timeout=5)


def test_a_recheck_sooner_than_the_server_tick_waits_locally_not_in_a_short_blpop(
    queue: JobQueue, farm: WorkerFarm, server: EmbeddedServer
) -> None:
    # The default affinity (50 ms): the worker that skips the job rechecks sooner than
    # Valkey's clock tick (100 ms), which is what would end a BLPOP that short: it must
    # wait on a local timer instead.
    _two_workers_two_models(queue, farm, AFFINITY_MS="50", BLOCK_S="30")
    blocker = _busy(queue)
    holder = queue.get_job(blocker)["worker_id"]
    model, other = ("m1", "b") if holder == "a" else ("m2", "a")
    calls = _BlockingCalls(server.url)
    try:
        job_id = submit(queue, {"model_id": model, "input_data": ROW}, JobType.INFERENCE)
        done = wait_terminal(queue, job_id, 15)
    finally:
        calls.close()
    # With 30 s idle waits, the other worker took it this soon only by rechecking.
    assert done["state"] == "succeeded" and done["worker_id"] == other, done
    short = [args for args in calls.blpops if float(args[-1]) < BLPOP_RESOLUTION_S]
    assert not short, short
    queue.cancel(blocker)
