"""The SSE event stream and the logs endpoint."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from conftest import assert_error, run_job
from trainyard.engine import JobQueue

BODY = {
    "model_type": "random_forest",
    "data_path": "/data/tabular_data.csv",
    "framework_override": "sklearn",
}


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def test_sse_replays_then_ends_and_resumes(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=BODY).json()["job_id"]
    run_job(queue, job_id, "sklearn", result={"accuracy": 1.0}, logs=["hello", "world"])

    resp = client.get(f"/jobs/{job_id}/events")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    kinds = [e["event"] for e in events]
    assert kinds == ["state", "state", "log", "log", "progress", "state"]
    assert [e["data"].get("state") for e in events if e["event"] == "state"] == [
        "queued",
        "running",
        "succeeded",
    ]
    assert events[2]["data"] == {"stream": "stdout", "line": "hello"}

    # Resume after the second event: the rest, and nothing before it.
    resumed = parse_sse(
        client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": events[1]["id"]}).text
    )
    assert [e["id"] for e in resumed] == [e["id"] for e in events[2:]]
    by_query = parse_sse(client.get(f"/jobs/{job_id}/events?after={events[3]['id']}").text)
    assert [e["id"] for e in by_query] == [e["id"] for e in events[4:]]
    # Resuming after the very last event ends at once (the job is over).
    started = time.monotonic()
    tail = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": events[-1]["id"]})
    assert parse_sse(tail.text) == []
    assert time.monotonic() - started < 5


def test_sse_follows_live_until_the_end(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=BODY).json()["job_id"]

    def later() -> None:
        time.sleep(0.8)  # past one keepalive (0.5 s in the test settings)
        run_job(queue, job_id, "sklearn", result={"ok": True})

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    with client.stream("GET", f"/jobs/{job_id}/events") as resp:
        text = "".join(resp.iter_text())
    thread.join(timeout=10)
    assert ": keepalive" in text
    assert parse_sse(text)[-1]["data"]["state"] == "succeeded"


def test_sse_errors(client: TestClient) -> None:
    assert_error(client.get("/jobs/unknown1/events"), 404, "not_found", "job_id")
    job_id = client.post("/jobs/training", json=BODY).json()["job_id"]
    resp = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "x; drop"})
    assert_error(resp, 422, "invalid_request", "Last-Event-ID")


def test_logs(client: TestClient, queue: JobQueue) -> None:
    job_id = client.post("/jobs/training", json=BODY).json()["job_id"]
    run_job(queue, job_id, "sklearn", logs=[f"line {i}" for i in range(5)])
    body = client.get(f"/jobs/{job_id}/logs").json()
    assert body["job_id"] == job_id
    assert [ln["line"] for ln in body["lines"]] == [f"line {i}" for i in range(5)]
    assert all(ln["stream"] == "stdout" and ln["time"] and ln["id"] for ln in body["lines"])

    page = client.get(f"/jobs/{job_id}/logs?limit=2").json()
    assert [ln["line"] for ln in page["lines"]] == ["line 0", "line 1"]
    rest = client.get(f"/jobs/{job_id}/logs", params={"after": page["next_after"]}).json()
    assert [ln["line"] for ln in rest["lines"]] == ["line 2", "line 3", "line 4"]
    assert_error(client.get("/jobs/nope1/logs"), 404, "not_found", "job_id")
