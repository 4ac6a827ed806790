"""Backend tests drive the app (``client``, built with test ``settings``) against the
session's embedded Valkey from ``trainyard.testing`` (``server``; ``redis_client`` flushes
it before each test; ``queue`` writes to it as a worker would). ``LiveApi`` serves the app
for real (uvicorn on a loopback port) for tests that need real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from redis import Redis

from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.routing import RUNTIMES
from trainyard.testing import wait_for
from trainyard.types import JobType
from trainyard_api.app import create_app
from trainyard_api.config import Settings

pytest_plugins = ["trainyard.testing"]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root holding every data path the seed README names (tiny stand-ins)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "tabular_data.csv").write_text("f1,f2,label\n1,2,a\n3,4,b\n")
    (root / "sentiment_analysis.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    for folder in ("image_classification/cat", "cifar10/dog"):
        (root / folder).mkdir(parents=True)
    return root


@pytest.fixture
def settings(server: EmbeddedServer, data_root: Path) -> Settings:
    return Settings(
        redis_url=server.url,
        data_root=data_root,
        max_body_bytes=64 * 1024,
        sse_keepalive_s=0.5,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    # redis_client first: the database is flushed before the app sees it.
    with TestClient(create_app(settings)) as c:
        yield c


class LiveApi:
    """The app under uvicorn in a thread, on a loopback socket bound here (a free port)."""

    def __init__(self, app_settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(app_settings), lifespan="on", log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveApi:
        self.thread.start()
        wait_for(lambda: self.server.started, 20.0, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20.0)
        self.sock.close()


def heartbeat(queue: JobQueue, worker_id: str, runtime: str, **extra: Any) -> None:
    """Register a live worker the way a worker's heartbeat does."""
    fields = {
        "runtime": runtime,
        "framework": "sklearn",
        "framework_version": "1.5.0",
        "device": "cpu",
        "host": "testhost",
        "pid": 1234,
        "state": "idle",
        "current_job": "",
        "loaded_models": "[]",
        "started_at": 1_700_000_000_000,
        **extra,
    }
    queue.heartbeat(worker_id, fields, ttl_ms=20_000)


def model_record(
    model_id: str, job_id: str, runtime: str = "sklearn", model_type: str = "random_forest"
) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "framework": RUNTIMES[runtime].framework,
        "runtime": runtime,
        "model_type": model_type,
        "job_id": job_id,
        "hyperparameters": {"n_estimators": 10},
        "metrics": {"accuracy": 0.9},
        "label_names": ["a", "b"],
        "artifact": f"models/{model_id}",
        "size_bytes": 1234,
        "created_at": "2025-01-01T00:00:00+00:00",
    }


def run_job(
    queue: JobQueue,
    job_id: str,
    runtime: str,
    *,
    outcome: str = "succeeded",
    result: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    logs: list[str] = (),  # type: ignore[assignment]
) -> None:
    """Run a queued job through the engine as a worker would: claim, log, finish."""
    claim = queue.claim("w-test", [runtime], lease_ms=60_000)
    assert claim is not None and claim.job_id == job_id
    for line in logs:
        queue.report(job_id, claim.attempt_id, "log", {"stream": "stdout", "line": line})
    queue.report(job_id, claim.attempt_id, "progress", {"epoch": 1, "loss": 0.5})
    done = queue.finish(job_id, claim.attempt_id, outcome, result=result, model=model)  # type: ignore[arg-type]
    assert done.applied


def register_model(
    queue: JobQueue, model_id: str, runtime: str = "sklearn", model_type: str = "random_forest"
) -> str:
    """Register a model the real way: a training job that succeeds with it."""
    job_id, _ = queue.enqueue(
        job_type=JobType.TRAINING, runtime=runtime, request={"model_type": model_type}
    )
    run_job(queue, job_id, runtime, model=model_record(model_id, job_id, runtime, model_type))
    return job_id


def assert_error(resp: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["status"] == status and err["code"] == code and err["message"]
    if field is not None:
        fields = [d["field"] for d in err["details"]]
        assert field in fields, (field, err)
        assert field in err["message"] or status != 422
    return err
