"""The API's routers, one module per resource."""

from . import events, health, jobs, metrics, models, queues, workers

__all__ = ["events", "health", "jobs", "metrics", "models", "queues", "workers"]
