"""Answers of the scripted API (httpx.MockTransport) shared by the client and CLI tests."""

from __future__ import annotations

from typing import Any

__all__ = ["status_reply"]


def status_reply(job_id: str = "j1", state: str = "queued", **extra: Any) -> dict[str, Any]:
    """A ``JobStatus`` body as ``GET /jobs/{id}/status`` answers it."""
    return {
        "job_id": job_id,
        "status": state,
        "job_type": "training",
        "runtime": "sklearn",
        **extra,
    }
