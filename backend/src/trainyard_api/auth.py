"""API keys, as pure ASGI middleware: with keys configured, every request except the
health check and the API docs must carry one, or it gets 401 before any route (or body
parser) sees it, so a refused request changes nothing.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are
compared as SHA-256 digests with :func:`hmac.compare_digest`, against every configured
key without stopping at a match, so the time taken says nothing about how much of a key
was right or which key matched. Keys are never logged: the settings hold them as
``SecretStr`` and the 401 does not echo what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_error

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "ApiKeyAuth", "KeyRing"]

# Reachable without a key: the health check (load balancers and probes carry no key) and
# the interactive docs with the schema they read; and the dashboard's static files (it must
# load to ask for a key; it holds no data, every call it makes for data carries the key).
OPEN_PATHS = frozenset(
    {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", "/ui"}
)
OPEN_PREFIXES = ("/ui/",)


def _digest(key: str | bytes) -> bytes:
    raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


class KeyRing:
    """The accepted keys, as digests (the plain keys are not kept here)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: bytes | None) -> bool:
        if presented is None:
            return False
        candidate = _digest(presented)
        matched = False
        for digest in self._digests:  # no early exit: same work whichever key matches
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries: a bearer token, else an ``X-API-Key`` header."""
    api_key_header = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif lowered == b"x-api-key" and value:
            api_key_header = value
    return api_key_header


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyAuth:
    """Refuse requests without a valid key with 401 in the error shape."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope.get("headers") or [])
        if self.keys.accepts(presented):
            await self.app(scope, receive, send)
            return
        reason = "no API key sent" if presented is None else "the API key is not valid"
        await send_error(
            send,
            401,
            f"{reason}: send one as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            [("Authorization", reason)],
            headers=[(b"www-authenticate", b'Bearer realm="trainyard"')],
        )
