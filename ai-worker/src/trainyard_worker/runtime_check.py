"""The start-up check: the worker serves the runtime it claims, with that runtime's
framework installed at the pinned version; otherwise it refuses to start."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from trainyard.routing import RUNTIMES, Runtime

__all__ = ["RuntimeMismatch", "RuntimeReport", "check_runtime"]

# framework -> the distributions that provide it (the first one installed counts)
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "pytorch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
}


class RuntimeMismatch(RuntimeError):
    """The environment cannot serve the runtime the worker was asked to serve."""


@dataclass(frozen=True)
class RuntimeReport:
    runtime: Runtime
    framework_version: str


def _installed_version(framework: str) -> str | None:
    for dist in _DISTRIBUTIONS[framework]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_runtime(worker_type: str, model_framework: str | None, use_gpu: bool) -> RuntimeReport:
    runtime = RUNTIMES.get(worker_type)
    if runtime is None:
        raise RuntimeMismatch(
            f"WORKER_TYPE={worker_type!r} is not a runtime; known: {', '.join(RUNTIMES)}"
        )
    if model_framework and model_framework != runtime.framework:
        raise RuntimeMismatch(
            f"MODEL_FRAMEWORK={model_framework!r} but runtime {runtime.name!r} runs "
            f"{runtime.framework}"
        )
    if use_gpu != (runtime.device == "gpu"):
        raise RuntimeMismatch(
            f"USE_GPU={'true' if use_gpu else 'false'} but runtime {runtime.name!r} is a "
            f"{runtime.device.upper()} runtime"
        )
    version = _installed_version(runtime.framework)
    if version is None:
        raise RuntimeMismatch(
            f"runtime {runtime.name!r} needs {runtime.framework}, which is not installed in "
            f"this environment; run: uv sync --extra {runtime.extra}"
        )
    wanted = runtime.framework_version
    if not (version == wanted or version.startswith(wanted + ".")):
        raise RuntimeMismatch(
            f"runtime {runtime.name!r} needs {runtime.framework} {wanted}.x but {version} is "
            f"installed; run: uv sync --extra {runtime.extra}"
        )
    return RuntimeReport(runtime=runtime, framework_version=version)
