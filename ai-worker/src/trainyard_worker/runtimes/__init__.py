"""Framework runtimes. Each module implements the contract in :mod:`.base`; it is imported
only inside a job's child process, never by the supervisor."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["CONTRACT", "RUNTIME_MODULES", "load_runtime_module"]

# framework -> module implementing the contract for it
RUNTIME_MODULES: dict[str, str] = {
    "sklearn": "trainyard_worker.runtimes.sklearn_runtime",
    "pytorch": "trainyard_worker.runtimes.torch_runtime",
    "tensorflow": "trainyard_worker.runtimes.tensorflow_runtime",
}
# The functions every runtime module exposes (see :mod:`.base`).
CONTRACT = ("train", "load", "predict", "predict_many")


def load_runtime_module(framework: str) -> ModuleType:
    """The framework's runtime module, checked to expose every function of the contract."""
    name = RUNTIME_MODULES.get(framework)
    if name is None:
        raise LookupError(f"this worker has no runtime module for framework {framework!r}")
    module = importlib.import_module(name)
    missing = [f for f in CONTRACT if not callable(getattr(module, f, None))]
    if missing:
        raise TypeError(f"runtime module {name} lacks {', '.join(missing)}")
    return module
