"""The start-up check: the worker serves the runtime it claims, with that runtime's
framework installed at the pinned version; otherwise it refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

from trainyard.routing import RUNTIMES, Runtime

from .gpu import GpuSet, GpuUnavailable, nvidia_smi_query

__all__ = ["RuntimeMismatch", "RuntimeReport", "check_gpus", "check_runtime"]

# framework -> the distributions that provide it (the first one installed counts)
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "pytorch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
}


# framework -> the packages a worker reports in its registration (those installed)
_REPORTED: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn", "skops", "numpy", "scipy"),
    "pytorch": ("torch", "torchvision", "transformers", "tokenizers", "safetensors", "numpy"),
    "tensorflow": ("tensorflow-cpu", "tensorflow", "keras", "numpy"),
}


def _packages(runtime: Runtime) -> dict[str, str]:
    found = {}
    for dist in _REPORTED[runtime.framework]:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


class RuntimeMismatch(RuntimeError):
    """The environment cannot serve the runtime the worker was asked to serve."""


@dataclass(frozen=True)
class RuntimeReport:
    runtime: Runtime
    framework_version: str
    packages: dict[str, str]  # the runtime's key packages and their installed versions


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
    return RuntimeReport(runtime=runtime, framework_version=version, packages=_packages(runtime))


# Asks the framework itself (in a child, so the supervisor never imports it) whether CUDA works.
_CUDA_PROBES: dict[str, str] = {
    "pytorch": "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)",
    "tensorflow": "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices"
    "('GPU') else 3)",
}


def check_gpus(runtime: Runtime, nvidia_smi: str, devices: str | None) -> GpuSet:
    """A GPU runtime's cards, or :class:`RuntimeMismatch`: no GPU, or a framework build
    that cannot use it. A ``-gpu`` worker never starts on a machine without CUDA."""
    try:
        gpus = GpuSet.discover(nvidia_smi_query(nvidia_smi), devices)
    except GpuUnavailable as exc:
        raise RuntimeMismatch(
            f"runtime {runtime.name!r} needs a CUDA GPU: {exc}. Run a CPU runtime "
            f"(WORKER_TYPE={runtime.name.removesuffix('-gpu')}, USE_GPU=false) instead"
        ) from exc
    probe = _CUDA_PROBES.get(runtime.framework)
    if probe is not None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus.visible_devices()}
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeMismatch(
                f"runtime {runtime.name!r}: nvidia-smi lists {len(gpus.gpus)} GPU(s) but "
                f"{runtime.framework} cannot use CUDA here (driver too old for the "
                f"framework's CUDA build?): {done.stderr.strip()[-300:]}"
            )
    return gpus
