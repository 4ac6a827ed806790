"""Framework runtimes. Each module implements the contract in :mod:`.base`; it is imported
only inside a job's child process, never by the supervisor."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["RUNTIME_MODULES", "load_runtime_module"]

# framework -> module implementing train/load/predict for it
RUNTIME_MODULES: dict[str, str] = {
    "sklearn": "trainyard_worker.runtimes.sklearn_runtime",
    "pytorch": "trainyard_worker.runtimes.torch_runtime",
    "tensorflow": "trainyard_worker.runtimes.tensorflow_runtime",
}


def load_runtime_module(framework: str) -> ModuleType:
    name = RUNTIME_MODULES.get(framework)
    if name is None:
        raise LookupError(f"this worker has no runtime module for framework {framework!r}")
    return importlib.import_module(name)
