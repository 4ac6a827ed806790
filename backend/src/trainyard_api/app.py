"""The FastAPI application: ``create_app(settings)`` for tests and servers, and ``app``
(built from the environment) for ``uvicorn src.main:app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from trainyard.connection import connect
from trainyard.engine import JobQueue
from trainyard.engine_async import AsyncQueue
from trainyard.keys import KeySchema
from trainyard.paths import write_samples_into_missing_default

from .auth import OPEN_PATHS, ApiKeyAuth, KeyRing
from .config import Settings
from .errors import error_responses, install_error_handlers
from .limits import BodySizeLimit
from .routes import (
    activity,
    batch,
    dead_letters,
    events,
    health,
    jobs,
    metrics,
    models,
    queues,
    ui,
    workers,
)

__all__ = ["app", "create_app"]

# uvicorn's own logger: the backend sets up no logging of its own, and under uvicorn this
# one prints at INFO (an application logger would need a handler to be seen).
log = logging.getLogger("uvicorn.error")

DESCRIPTION = """\
Trainyard queues ML training and inference jobs in Redis; workers, each in its own
dependency environment (a *runtime*: `pytorch-2.1`, `tensorflow`, `sklearn`, ...), claim and
run them.

* Submit with `POST /jobs/training` or `POST /jobs/inference`; the answer (202) carries the
  job id. Follow it with `GET /jobs/{job_id}/status`, or live with `GET /jobs/{job_id}/events`;
  or add `?wait=SECONDS` to get the final status in the answer (200) when the job ends in time.
* `GET /events` streams everything that happens (every job's state changes and progress,
  workers up and down) for dashboards.
* `POST /jobs/batch` submits up to 1000 jobs at once and answers 200 with one result per
  job (its status, or why it alone was refused).
* A job no live worker can run is accepted; its `waiting_reason` says why it waits. A job no
  runtime could ever run is refused with 422.
* With API keys configured (`API_KEYS`), every route except `/health` and the docs needs
  `Authorization: Bearer <key>` (or `X-API-Key: <key>`); without a valid one: 401.
* Every error answers `{"error": {"status", "code", "message", "details": [{"field",
  "reason"}]}}`.
"""

TAGS = [
    {"name": "jobs", "description": "Submit, follow, list and cancel jobs"},
    {"name": "dead letters", "description": "Jobs out of attempts, and redriving them"},
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
        # Threads serve the sync routes only: event streams and ?wait= wait on the event
        # loop (the asyncio client and one shared stream reader), holding no thread.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        if settings.data_root_is_default:
            # A first start from a fresh checkout: the seed's /data/... paths then exist.
            wrote = await anyio.to_thread.run_sync(
                write_samples_into_missing_default, settings.data_root
            )
            if wrote is not None:
                log.log(logging.INFO if wrote.ok else logging.WARNING, "%s", wrote.message)
        # The clients connect lazily: the API starts (and /health says 503) while Redis
        # is down, and recovers when it comes back.
        keys = KeySchema(settings.trainyard_namespace)
        redis = connect(settings.redis_url)
        app.state.queue = JobQueue(redis, keys)
        async_queue = AsyncQueue.from_url(
            settings.redis_url, keys, block_ms=int(settings.sse_keepalive_s * 1000)
        )
        async_queue.start()
        app.state.async_queue = async_queue
        try:
            yield
        finally:
            app.state.queue = app.state.async_queue = None
            await async_queue.close()
            redis.close()

    app = FastAPI(
        title="Trainyard",
        description=DESCRIPTION,
        version="0.1.0",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.queue = app.state.async_queue = None
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    keys = KeyRing(k.get_secret_value() for k in settings.api_keys)
    if keys:
        # Added last, so it runs first: a refused request reaches nothing else.
        app.add_middleware(ApiKeyAuth, keys=keys)
    # batch before jobs: for a method /jobs/batch lacks, Starlette answers 405 with the Allow
    # of the first route whose path matches, and /jobs/{job_id} (GET) matches it too.
    routers = (batch, jobs, events, activity, dead_letters, models, workers, queues, health)
    for module in (*routers, metrics):
        app.include_router(module.router)
    ui.install(app)  # the dashboard (/ui/) and / leading there; not in the schema
    if keys:
        app.openapi = lambda: _openapi_with_keys(app)  # type: ignore[method-assign]
    return app


def _openapi_with_keys(app: FastAPI) -> dict[str, Any]:
    """The schema, saying that every operation but the open ones needs a key (and may 401)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        unauthorized = error_responses(401)[401]
        for path, operations in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation.setdefault("responses", {})["401"] = {
                    "description": unauthorized["description"],
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                        }
                    },
                }
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
