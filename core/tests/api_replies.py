"""Answers of the scripted API (httpx.MockTransport) shared by the client and CLI tests,
and the scripted API the CLI tests run ``trainyard`` against."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from trainyard.cli import main

__all__ = [
    "URL",
    "Handler",
    "Recorder",
    "attempt_status_reply",
    "error_reply",
    "run_cli",
    "status_reply",
]

Handler = Callable[[httpx.Request], httpx.Response]
#: Where the CLI tests' scripted API answers.
URL = "http://api.test"


def status_reply(job_id: str = "j1", state: str = "queued", **extra: Any) -> dict[str, Any]:
    """A ``JobStatus`` body as ``GET /jobs/{id}/status`` answers it."""
    return {
        "job_id": job_id,
        "status": state,
        "job_type": "training",
        "runtime": "sklearn",
        **extra,
    }


def attempt_status_reply(job_id: str = "j1", state: str = "queued", **extra: Any) -> dict[str, Any]:
    """``status_reply`` of a job on its first of three attempts (the CLI tests' default)."""
    return status_reply(job_id, state, **{"attempt": 1, "max_attempts": 3, **extra})


def error_reply(status: int, message: str, field: str = "") -> httpx.Response:
    """An API error answer (``{"error": {...}}``), with one detail when ``field`` is given."""
    details = [{"field": field, "reason": message}] if field else []
    body = {"error": {"status": status, "code": "x", "message": message, "details": details}}
    return httpx.Response(status, json=body)


def run_cli(handler: Handler, *argv: str) -> int:
    """Run ``trainyard --url URL ARGV...`` against ``handler``; its exit status."""
    return main(["--url", URL, *argv], transport=httpx.MockTransport(handler))


class Recorder:
    """A scripted API that records requests and answers from a path -> response table."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is None:
            return error_reply(404, f"no route {request.url.path}")
        if callable(answer):
            result: httpx.Response = answer(request)
            return result
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def body(self, i: int = 0) -> Any:
        return json.loads(self.requests[i].content)
