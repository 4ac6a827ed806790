"""A restart of the Redis-protocol server (AOF on) while workers run: nothing
acknowledged is lost and the job in flight still finishes. The test owns its server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import WorkerFarm, submit, training_request, wait_terminal
from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.testing import wait_for


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path / "valkey") as server:
        yield server


def _restart(server: EmbeddedServer) -> None:
    server.stop()  # SIGTERM: the server writes its AOF and exits
    server.start()


def test_jobs_survive_a_server_restart_and_the_running_one_finishes(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    queue = JobQueue(connect(own_server.url))
    farm = WorkerFarm(own_server, tmp_path)
    try:
        farm.start()
        running = submit(queue, training_request(hyperparameters={"n_estimators": 1500}))
        waiting = [submit(queue, training_request()) for _ in range(5)]
        wait_for(lambda: queue.get_job(running)["state"] == "running", 30, "the first job")

        _restart(own_server)
        queue = JobQueue(connect(own_server.url))  # a fresh connection to the new process

        for job_id in [running, *waiting]:
            done = wait_terminal(queue, job_id, 120)
            assert done["state"] == "succeeded", (job_id, done.get("error"))
        assert int(queue.get_job(running)["attempt"]) <= 2  # type: ignore[index]
        assert all(p.poll() is None for p in farm.procs)  # the worker rode it out
    finally:
        farm.stop_all()


def test_a_worker_started_before_its_server_waits_for_it(tmp_path: Path) -> None:
    late = EmbeddedServer(tmp_path / "valkey")  # a free port, nothing listening yet
    farm = WorkerFarm(late, tmp_path)
    try:
        worker = farm.start()
        with late:
            queue = JobQueue(connect(late.url))
            wait_for(lambda: queue.live_workers(60_000), 30, "the worker to register")
            job_id = submit(queue, training_request())
            assert wait_terminal(queue, job_id, 60)["state"] == "succeeded"
            assert worker.poll() is None
    finally:
        farm.stop_all()
