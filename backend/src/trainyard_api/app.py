"""The FastAPI application: ``create_app(settings)`` for tests and servers, and ``app``
(built from the environment) for ``uvicorn src.main:app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from trainyard.connection import connect
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema

from .config import Settings
from .errors import install_error_handlers
from .limits import BodySizeLimit
from .routes import events, health, jobs, metrics, models, queues, workers

__all__ = ["app", "create_app"]

DESCRIPTION = """\
Trainyard queues ML training and inference jobs in Redis; workers, each in its own
dependency environment (a *runtime*: `pytorch-2.1`, `tensorflow`, `sklearn`, ...), claim and
run them.

* Submit with `POST /jobs/training` or `POST /jobs/inference`; the answer (202) carries the
  job id. Follow it with `GET /jobs/{job_id}/status`, or live with `GET /jobs/{job_id}/events`.
* A job no live worker can run is accepted; its `waiting_reason` says why it waits. A job no
  runtime could ever run is refused with 422.
* Every error answers `{"error": {"status", "code", "message", "details": [{"field",
  "reason"}]}}`.
"""

TAGS = [
    {"name": "jobs", "description": "Submit, follow, list and cancel jobs"},
    {"name": "models", "description": "Models registered by successful training jobs"},
    {"name": "workers", "description": "Live workers and what they serve"},
    {"name": "queues", "description": "Queue depths per runtime"},
    {"name": "routing", "description": "Which runtime runs which model type"},
    {"name": "health", "description": "Health check"},
    {"name": "metrics", "description": "Prometheus metrics"},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Event streams and ?wait= block a thread each while they wait on Redis.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        # The client connects lazily: the API starts (and /health says 503) while Redis
        # is down, and recovers when it comes back.
        redis = connect(settings.redis_url)
        app.state.queue = JobQueue(redis, KeySchema(settings.trainyard_namespace))
        try:
            yield
        finally:
            app.state.queue = None
            redis.close()

    app = FastAPI(
        title="Trainyard",
        description=DESCRIPTION,
        version="0.1.0",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.queue = None
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for module in (jobs, events, models, workers, queues, health, metrics):
        app.include_router(module.router)
    return app


app = create_app()
