"""GET /workers for a worker that took itself out of service (it could not see its training
jobs' data: trainyard_worker.data_guard): its state and the reason it wrote."""

from __future__ import annotations

from fastapi.testclient import TestClient

from conftest import heartbeat
from trainyard.engine import JobQueue

REASON = "3 training jobs in a row could not see their data here; check DATA_ROOT=/srv/data"


def test_an_out_of_service_worker_says_why(client: TestClient, queue: JobQueue) -> None:
    heartbeat(queue, "w1", "sklearn")
    assert client.get("/workers").json()["workers"][0]["state_reason"] is None
    # What the worker's guard writes: state and reason only, on top of its registration.
    queue.heartbeat("w1", {"runtime": "sklearn", "state": "out_of_service",
                           "state_reason": REASON}, ttl_ms=20_000)  # fmt: skip
    heartbeat(queue, "w1", "sklearn", state="out_of_service")  # its next full heartbeat
    (worker,) = client.get("/workers").json()["workers"]
    assert (worker["state"], worker["state_reason"]) == ("out_of_service", REASON)
    assert worker["pid"] == 1234  # the rest of the record is intact

    # Back in service: the guard clears the reason.
    queue.heartbeat("w1", {"runtime": "sklearn", "state": "idle", "state_reason": ""},
                    ttl_ms=20_000)  # fmt: skip
    (worker,) = client.get("/workers").json()["workers"]
    assert (worker["state"], worker["state_reason"]) == ("idle", None)
