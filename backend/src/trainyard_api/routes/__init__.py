"""The API's routers, one module per resource."""

from . import dead_letters, events, health, jobs, metrics, models, queues, workers

__all__ = ["dead_letters", "events", "health", "jobs", "metrics", "models", "queues", "workers"]
