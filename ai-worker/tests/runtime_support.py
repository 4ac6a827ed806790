"""Importing a framework in tests: skipped where the environment lacks it, except in the
environments that must have it (CI sets ``TRAINYARD_REQUIRE_RUNTIME`` to the runtime whose
environment runs the tests, so a broken install fails instead of silently skipping)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, cast

import pytest

from trainyard.routing import RUNTIMES

__all__ = ["REQUIRED_RUNTIME", "Recorder", "require_framework"]

REQUIRED_RUNTIME = os.environ.get("TRAINYARD_REQUIRE_RUNTIME", "")

# import name -> the framework family whose environments must provide it
_FRAMEWORK_OF_MODULE = {
    "torch": "pytorch",
    "torchvision": "pytorch",
    "transformers": "pytorch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "sklearn": "sklearn",
}


def require_framework(module: str) -> ModuleType:
    framework = _FRAMEWORK_OF_MODULE[module]
    runtime = RUNTIMES.get(REQUIRED_RUNTIME)
    if runtime is not None and runtime.framework == framework:
        return importlib.import_module(module)  # must import: an ImportError fails the run
    return cast(ModuleType, pytest.importorskip(module))


class Recorder:
    """The runtime tests' TrainContext: keeps what a training function reports (the
    reporting interface only; the queue-backed one is exercised by test_runtime_jobs)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []

    def progress(self, **kwargs: Any) -> None:
        self.events.append(kwargs)

    def log(self, line: str) -> None:
        self.lines.append(line)
