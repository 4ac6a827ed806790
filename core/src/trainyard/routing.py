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
    "can_load",
    "check_base_model",
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


def route_training(
    model_type: str,
    requires_gpu: bool,
    framework_override: str | None,
    base_runtime: str | None = None,
) -> str:
    """The runtime a training job goes to, or :class:`RouteError` saying why none can.
    A fine-tuning job (``base_runtime``: where its base model was trained) without an
    override goes to a runtime that can load that model, on the device it asks for."""
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
    if base_runtime is not None and base_runtime in RUNTIMES:
        device = "gpu" if requires_gpu else "cpu"
        for candidate in RUNTIMES.values():
            if candidate.device == device and can_load(base_runtime, candidate.name):
                return candidate.name
        raise RouteError(
            "requires_gpu",
            f"no {device.upper()} runtime can load a model trained on {base_runtime}",
        )
    if requires_gpu:
        if route.gpu_runtime is None:
            raise RouteError(
                "requires_gpu",
                f"requires_gpu is true but no GPU runtime serves {route.framework} "
                f"(model_type {model_type!r}); set requires_gpu to false",
            )
        return route.gpu_runtime
    return route.cpu_runtime


def can_load(model_runtime: str, runtime: str) -> bool:
    """Whether ``runtime`` can load a model trained on ``model_runtime``: the same framework
    at the same pinned version (a -gpu runtime and its CPU twin install the same packages;
    transformers 4.55 checkpoints are not promised to load in 4.49)."""
    a, b = RUNTIMES.get(model_runtime), RUNTIMES.get(runtime)
    return (
        a is not None
        and b is not None
        and a.framework == b.framework
        and a.framework_version == b.framework_version
    )


def check_base_model(model_type: str, runtime: str, base: dict[str, Any]) -> None:
    """A fine-tuning job's ``base_model_id`` must name a model of the same type that the
    job's runtime can load; :class:`RouteError` otherwise."""
    if MODEL_TYPES[model_type].framework == "sklearn":
        raise RouteError(
            "base_model_id",
            f"{model_type} models cannot be fine-tuned (scikit-learn estimators are refitted "
            "from scratch); leave base_model_id out",
        )
    if base.get("model_type") != model_type:
        raise RouteError(
            "base_model_id",
            f"model {base.get('model_id')!r} is a {base.get('model_type')} model; this job "
            f"trains a {model_type}",
        )
    trained_on = str(base.get("runtime", ""))
    if not can_load(trained_on, runtime):
        raise RouteError(
            "base_model_id",
            f"model {base.get('model_id')!r} was trained on {trained_on}, which runtime "
            f"{runtime!r} cannot load; set framework_override to {trained_on!r}",
        )


def routing_table() -> dict[str, Any]:
    """The table as JSON-ready data, for ``GET /routing``."""
    return {
        "runtimes": [asdict(r) for r in RUNTIMES.values()],
        "model_types": [asdict(m) for m in MODEL_TYPES.values()],
        "inference": "an inference job runs on the runtime that trained its model (the only "
        "one promised to load it)",
        "fine_tuning": "a training job with base_model_id runs on a runtime of the same "
        "framework version as the base model's",
    }


def runtimes_of_framework(framework: str) -> list[str]:
    return [r.name for r in RUNTIMES.values() if r.framework == framework]
