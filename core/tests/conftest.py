"""Core tests run against an embedded Valkey of their own (``trainyard.testing`` gives the
``server``, ``redis_client`` and ``queue`` fixtures); the engine tests also check the
index invariant after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_checks import assert_index_invariants

from trainyard.engine import JobQueue

pytest_plugins = ["trainyard.testing"]


@pytest.fixture
def index_invariant(queue: JobQueue) -> Iterator[None]:
    """After the test, every job is in exactly the indexes its state calls for (a module
    opts in with ``pytestmark = pytest.mark.usefixtures("index_invariant")``)."""
    yield
    assert_index_invariants(queue)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


os.environ.setdefault("OMP_NUM_THREADS", "1")
