"""One way to open a Redis connection for Trainyard."""

from __future__ import annotations

from redis import Redis

__all__ = ["connect"]


def connect(url: str, *, socket_timeout: float | None = 30.0) -> Redis:
    """A client that decodes replies to ``str`` (the engine expects that). Blocking reads
    (BLPOP, XREAD BLOCK) need ``socket_timeout`` above their block time."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )
