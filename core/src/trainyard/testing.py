"""Fixtures and helpers shared by Trainyard's test suites: a pytest plugin.

A suite loads it from its rootdir ``conftest.py``::

    pytest_plugins = ["trainyard.testing"]

It imports pytest, so it is loaded only by the test suites, never by the services (pytest
is a dev dependency of each project, not a runtime one of ``trainyard``).

Fixtures: ``server`` (an embedded Valkey for the whole session, on a free port: never the
machine's shared Redis), ``redis_client`` (a connection to it, the database flushed before
each test) and ``queue`` (a ``JobQueue`` on that connection). ``wait_for`` is a bounded
poll, for tests that must wait on another process or the server's clock;
``stop_gracefully`` stops a system a test started.

PYTEST_DONT_REWRITE (no assert statements here; suites may import ``wait_for`` in their
conftest before pytest loads this module as a plugin).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from redis import Redis

from .connection import connect
from .embedded import EmbeddedServer
from .engine import JobQueue

__all__ = ["queue", "redis_client", "server", "stop_gracefully", "wait_for"]

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 5.0,
    what: str = "condition",
    *,
    interval_s: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail with an
    ``AssertionError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def stop_gracefully(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Stop a started system (``trainyard up``) as Ctrl-C does, so it stops its own
    children; kill it if it is still running after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("valkey")) as srv:
        yield srv


@pytest.fixture
def redis_client(server: EmbeddedServer) -> Iterator[Redis]:
    client = connect(server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def queue(redis_client: Redis) -> JobQueue:
    return JobQueue(redis_client)
