"""The start-up checks: the worker serves the runtime it claims, with that runtime's
framework installed at the pinned version, and it can use its folders (``check_storage``:
the data root readable, the model store and scratch folder writable); otherwise it
refuses to start, naming the setting to fix. A worker that starts with a wrong
``DATA_ROOT`` or ``MODEL_STORE`` would claim job after job and fail each one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from trainyard.routing import RUNTIMES, Runtime

from .gpu import GpuSet, GpuUnavailable, nvidia_smi_query

if TYPE_CHECKING:
    from .config import WorkerSettings

__all__ = [
    "RuntimeMismatch",
    "RuntimeReport",
    "StorageProblem",
    "StorageReport",
    "check_gpus",
    "check_runtime",
    "check_storage",
]

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


# ------------------------------------------------------------------------------ storage


class StorageProblem(RuntimeError):
    """A folder the worker needs is missing or unusable; the message names the setting."""


@dataclass(frozen=True)
class StorageReport:
    created: list[str]  # lines to log: the folders this check made
    warnings: list[str]  # usable, but probably not what was meant


_DATA_ROOT_HINT = (
    "set DATA_ROOT to the folder that data_path values (/data/...) refer to: the data the "
    "API sees, at the same place on every worker host"
)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _check_data_root(path: Path) -> list[str]:
    """Refuses unless ``path`` is a folder this user can list and enter; the warnings."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise StorageProblem(f"DATA_ROOT={path} does not exist; {_DATA_ROOT_HINT}") from None
    except OSError as exc:
        raise StorageProblem(
            f"DATA_ROOT={path} cannot be looked at ({_os_reason(exc)}); {_DATA_ROOT_HINT}"
        ) from None
    if not stat.S_ISDIR(mode):
        raise StorageProblem(f"DATA_ROOT={path} is not a folder; {_DATA_ROOT_HINT}")
    try:
        with os.scandir(path) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        raise StorageProblem(
            f"DATA_ROOT={path} cannot be read by this worker ({_os_reason(exc)}); give its "
            f"user read access, or {_DATA_ROOT_HINT}"
        ) from None
    if not os.access(path, os.X_OK):  # listing works without it, opening files does not
        raise StorageProblem(
            f"DATA_ROOT={path} cannot be entered by this worker (no search permission); "
            f"give its user access, or {_DATA_ROOT_HINT}"
        )
    if empty:  # e.g. a volume that is not mounted (yet): not fatal, data may arrive later
        return [f"DATA_ROOT={path} is empty: every training job will fail until data is there"]
    return []


def _writable_folder(name: str, path: Path, is_default: bool, hint: str) -> str | None:
    """Make sure ``path`` (setting ``name``) is a folder this worker can write; create it
    when it is the default, or when only its last part is missing. The line to log when
    it was created, else None."""
    created = None
    if not os.path.lexists(path):
        parent = path.parent
        if not is_default and not os.path.isdir(parent):
            # Two or more levels missing: a typo or a volume not mounted, not a first start.
            raise StorageProblem(
                f"{name}={path} does not exist, nor does its parent folder {parent}; {hint}"
            )
        try:
            path.mkdir(parents=is_default, exist_ok=True)
        except OSError as exc:
            raise StorageProblem(
                f"{name}={path} does not exist and cannot be created ({_os_reason(exc)}); {hint}"
            ) from None
        which = "the default" if is_default else "the"
        created = f"{name}: created {which} folder {path}"
    if not os.path.isdir(path):  # os.path: False, not an exception, for any OSError
        raise StorageProblem(f"{name}={path} is not a folder; {hint}")
    try:
        with os.scandir(path) as entries:
            next(entries, None)
        # A real file, not os.access: that says yes to root on a read-only mount or NFS.
        fd, probe = tempfile.mkstemp(dir=path, prefix=".trainyard-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageProblem(
            f"{name}={path} cannot be read and written by this worker ({_os_reason(exc)}); {hint}"
        ) from None
    return created


def check_storage(settings: WorkerSettings) -> StorageReport:
    """The start check of the worker's folders, or :class:`StorageProblem`.

    ``DATA_ROOT`` must be a readable folder (the start writes the sample data into a
    missing *default* one first: ``trainyard.paths``). ``MODEL_STORE`` and ``WORK_DIR``
    must be folders this worker can read and write; a missing default one is created,
    and so is a missing explicit one whose parent exists (a first start, e.g. in a
    systemd ``StateDirectory``); one whose parent is missing too is refused."""
    warnings = _check_data_root(settings.data_root)
    created: list[str] = []
    folders = (
        ("MODEL_STORE", settings.model_store, "model_store",
         "set MODEL_STORE to a folder this worker can write (with workers on several "
         "hosts, one folder shared by all of them)"),
        ("WORK_DIR", settings.work_dir, "work_dir",
         "set WORK_DIR to a local folder this worker can write"),
    )  # fmt: skip
    for name, path, setting, hint in folders:
        made = _writable_folder(name, path, settings.is_default(setting), hint)
        if made is not None:
            created.append(made)
    return StorageReport(created, warnings)
