"""What the fault suite's conftest and tests share (not in ``conftest.py``: another suite's
``conftest`` module may hold that name when several suites run in one session)."""

from __future__ import annotations

import os

import pytest
from scenario import RunResult

__all__ = ["RESULTS", "in_ci", "missing"]

RESULTS: list[RunResult] = []  # every run of this session, for the summary table


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Fail in CI (a suite that silently skips there proves nothing), skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true but {what}: the fault suite cannot run", pytrace=False)
    pytest.skip(f"{what} (scripts/test.sh sets these; outside CI this is skipped)")
