"""The routing table: which runtime runs which job. Data in one place; the API shows it.

A *runtime* is a named dependency environment a worker serves (the seed's
``WORKER_TYPE``). Each model type belongs to one framework and has a default runtime for
CPU and, where one exists, for GPU. ``framework_override`` names a runtime explicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "MODEL_TYPES",
    "RUNTIMES",
    "ModelTypeRoute",
    "RouteError",
    "Runtime",
    "route_training",
    "routing_table",
]

Framework = Literal["pytorch", "tensorflow", "sklearn"]
Device = Literal["cpu", "gpu"]
Task = Literal["text", "image", "tabular"]


@dataclass(frozen=True)
class Runtime:
    name: str
    framework: Framework
    device: Device
    extra: str  # the ai-worker extra that installs it: `uv sync --extra <extra>`
    framework_version: str  # the version range the extra pins


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("pytorch-2.0", "pytorch", "cpu", "pytorch_2_0", "2.0"),
        Runtime("pytorch-2.1", "pytorch", "cpu", "pytorch_2_1", "2.1"),
        Runtime("pytorch-2.0-gpu", "pytorch", "gpu", "pytorch_2_0_gpu", "2.0"),
        Runtime("pytorch-2.1-gpu", "pytorch", "gpu", "pytorch_2_1_gpu", "2.1"),
        Runtime("tensorflow", "tensorflow", "cpu", "tensorflow", "2"),
        Runtime("sklearn", "sklearn", "cpu", "sklearn", "1"),
    )
}


@dataclass(frozen=True)
class ModelTypeRoute:
    model_type: str
    framework: Framework
    task: Task
    cpu_runtime: str
    gpu_runtime: str | None  # None: this framework has no GPU runtime here


MODEL_TYPES: dict[str, ModelTypeRoute] = {
    m.model_type: m
    for m in (
        ModelTypeRoute("bert", "pytorch", "text", "pytorch-2.1", "pytorch-2.1-gpu"),
        ModelTypeRoute("transformer", "pytorch", "text", "pytorch-2.1", "pytorch-2.1-gpu"),
        ModelTypeRoute("resnet", "pytorch", "image", "pytorch-2.0", "pytorch-2.0-gpu"),
        ModelTypeRoute("vgg", "pytorch", "image", "pytorch-2.0", "pytorch-2.0-gpu"),
        ModelTypeRoute("inception", "tensorflow", "image", "tensorflow", None),
        ModelTypeRoute("mobilenet", "tensorflow", "image", "tensorflow", None),
        ModelTypeRoute("random_forest", "sklearn", "tabular", "sklearn", None),
        ModelTypeRoute("svm", "sklearn", "tabular", "sklearn", None),
    )
}


class RouteError(ValueError):
    """A job that no runtime could ever run; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def route_training(model_type: str, requires_gpu: bool, framework_override: str | None) -> str:
    """The runtime a training job goes to, or :class:`RouteError` saying why none can."""
    route = MODEL_TYPES.get(model_type)
    if route is None:
        known = ", ".join(sorted(MODEL_TYPES))
        raise RouteError("model_type", f"unknown model_type {model_type!r}; known: {known}")
    if framework_override is not None:
        runtime = RUNTIMES.get(framework_override)
        if runtime is None:
            known = ", ".join(RUNTIMES)
            raise RouteError(
                "framework_override",
                f"unknown runtime {framework_override!r}; known: {known}",
            )
        if runtime.framework != route.framework:
            raise RouteError(
                "framework_override",
                f"model_type {model_type!r} is a {route.framework} model; runtime "
                f"{runtime.name!r} runs {runtime.framework}",
            )
        if requires_gpu and runtime.device != "gpu":
            raise RouteError(
                "requires_gpu",
                f"requires_gpu is true but runtime {runtime.name!r} is CPU-only; use a -gpu "
                "runtime or set requires_gpu to false",
            )
        return runtime.name
    if requires_gpu:
        if route.gpu_runtime is None:
            raise RouteError(
                "requires_gpu",
                f"requires_gpu is true but no GPU runtime serves {route.framework} "
                f"(model_type {model_type!r}); set requires_gpu to false",
            )
        return route.gpu_runtime
    return route.cpu_runtime


def routing_table() -> dict[str, Any]:
    """The table as JSON-ready data, for ``GET /routing``."""
    return {
        "runtimes": [asdict(r) for r in RUNTIMES.values()],
        "model_types": [asdict(m) for m in MODEL_TYPES.values()],
    }


def runtimes_of_framework(framework: str) -> list[str]:
    return [r.name for r in RUNTIMES.values() if r.framework == framework]
