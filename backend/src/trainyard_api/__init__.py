"""Trainyard's HTTP API: a FastAPI app over the shared Redis queue engine (``trainyard``).

No ML framework is imported here; the backend only validates, routes and queues jobs.
"""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
