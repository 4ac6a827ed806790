"""Every test talks to a real Redis-protocol server: an embedded Valkey started for the
session on a free port (never the machine's shared Redis), flushed between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue


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


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


os.environ.setdefault("OMP_NUM_THREADS", "1")
