"""The seed's entry point: ``uv run python -m uvicorn src.main:app`` from ``backend/``."""

from trainyard_api.app import app

__all__ = ["app"]
