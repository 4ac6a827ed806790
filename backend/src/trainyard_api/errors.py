"""One error shape for every 4xx/5xx answer:

``{"error": {"status": 422, "code": "invalid_request", "message": "...", "details": [...]}}``

``details`` names each offending field (the body field path, without FastAPI's ``body.``
prefix) and why it was refused, so a client can point at the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from trainyard.schema import ErrorBody, ErrorDetail

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "error_json",
    "error_responses",
    "install_error_handlers",
    "send_error",
]

log = logging.getLogger(__name__)

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}

DESCRIPTIONS: dict[int, str] = {
    401: "Missing or invalid API key",
    404: "No such resource",
    409: "The request conflicts with the resource's state",
    413: "Request body too large",
    422: "The request is invalid; `details` names each field and why",
    503: "Redis is unreachable",
}


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raise from a route to answer with the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        details: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = details if details is not None else ([(field, message)] if field else [])


def error_json(
    status: int, message: str, details: Iterable[tuple[str, str]] = (), code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "status": status,
            "code": code or CODES.get(status, "error"),
            "message": message,
            "details": [{"field": f, "reason": r} for f, r in details],
        }
    }


async def send_error(
    send: Send,
    status: int,
    message: str,
    details: Iterable[tuple[str, str]] = (),
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer in the error shape from pure ASGI middleware (before any route or handler)."""
    payload = json.dumps(error_json(status, message, details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting these error statuses in the OpenAPI schema."""
    return {
        s: {"model": ErrorResponse, "description": DESCRIPTIONS.get(s, "Error")} for s in statuses
    }


# Pydantic names the branches of a union in ``loc`` (``str``, ``list[constrained-str]``);
# a client knows the field by its path only, so those parts are dropped.
def _is_union_tag(part: str) -> bool:
    return "[" in part or part.startswith("constrained-") or part in {"str", "int", "float", "bool"}


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    names = [str(p) for p in parts if not (isinstance(p, str) and _is_union_tag(p))]
    return ".".join(names) or "body"


def _reason_of(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "json_invalid":
        return "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", msg))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def validation_details(exc: RequestValidationError) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            loc = ("body",)
        pair = (_field_of(loc), _reason_of(err))
        if pair not in seen:
            seen.append(pair)
    return seen


def _respond(
    status: int,
    message: str,
    details: Iterable[tuple[str, str]] = (),
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_json(status, message, details, code), status_code=status, headers=headers
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    message = exc.message
    if exc.status == 422 and exc.details:
        # Same message form as FastAPI's own validation errors: "<field>: <reason>".
        message = "; ".join(f"{f}: {r}" for f, r in exc.details)
    return _respond(exc.status, message, exc.details, exc.code)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc)
    message = "; ".join(f"{f}: {r}" for f, r in details) or "invalid request"
    return _respond(422, message, details)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):
        # FastAPI answers a body it cannot decode (not UTF-8, nested past Python's
        # recursion limit, an integer past Python's 4300-digit limit) with a bare 400. It
        # is malformed JSON like any other: the same documented 422 that names the body.
        if isinstance(cause, UnicodeDecodeError):
            why = "it is not UTF-8"
        elif isinstance(cause, RecursionError):
            why = "nested too deep"
        else:
            why = "a number has too many digits" if "digits" in str(cause) else str(cause)[:200]
        reason = f"the body is not valid JSON: {why}"
        return _respond(422, f"body: {reason}", [("body", reason)])
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return _respond(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
    # Redis unreachable, full (noeviction refuses writes) or a read-only replica after a
    # failover is an outage, not a bug: say so with 503 rather than a 500.
    log.warning("redis unavailable: %s", exc)
    return _respond(503, f"the queue (Redis) is unavailable: {exc}", [("redis", str(exc))])


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(RedisOutOfMemoryError, _redis_down)
    app.add_exception_handler(RedisReadOnlyError, _redis_down)
