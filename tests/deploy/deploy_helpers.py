"""Shared by the static checks of the deployment files (test_compose, test_dockerfiles,
test_systemd, test_k8s, test_scripts): the repository root and what the code defines
(settings, the variables it reads, the worker's extras), and the parsers of Dockerfiles
and durations several files need.

No Docker engine, cluster or systemd is needed: every check reads the files and compares
them with the code they deploy (settings classes, pyproject extras, the metrics route, entry
points), so a renamed setting, a dropped extra or a moved entry point fails here.
Run with the backend environment's python (it has pyyaml and the ``trainyard`` package):

    cd tests && "$BACKEND_ENV/bin/python" -m pytest deploy -q
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

__all__ = [
    "EXTRAS",
    "KNOWN_VARS",
    "REPO",
    "SETTINGS",
    "dockerfile_instructions",
    "duration_s",
    "grace_needed",
    "k8s_name",
]

REPO = Path(__file__).resolve().parents[2]

# Variables that are not Trainyard settings but are legitimately set for the runtime.
RUNTIME_VARS = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "UV_PYTHON_DOWNLOADS",
    "UV_COMPILE_BYTECODE",
    "UV_LINK_MODE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    # Read by the frameworks in the job processes (the worker defaults them the same way).
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TF_CPP_MIN_LOG_LEVEL",
    # Read by the NVIDIA Container Toolkit: what it mounts into a container given a GPU.
    "NVIDIA_DRIVER_CAPABILITIES",
}


# --- what the code defines --------------------------------------------------------------


def _settings_fields(path: Path, class_name: str) -> dict[str, tuple[str, Any]]:
    """ENV_NAME -> (annotation source, literal default or None) of a pydantic Settings
    class, read from its source (the worker's class is not importable from here)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    fields: dict[str, tuple[str, Any]] = {}
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        if node.target.id == "model_config":
            continue
        default: Any = None
        value = node.value
        if isinstance(value, ast.Call) and value.args:
            value = value.args[0]
        try:
            default = ast.literal_eval(value) if value is not None else None
        except ValueError:
            default = None
        fields[node.target.id.upper()] = (ast.unparse(node.annotation), default)
    assert fields, f"no fields found in {class_name} ({path})"
    return fields


BACKEND_FIELDS = _settings_fields(REPO / "backend/src/trainyard_api/config.py", "Settings")
WORKER_FIELDS = _settings_fields(
    REPO / "ai-worker/src/trainyard_worker/config.py", "WorkerSettings"
)
SETTINGS = {**WORKER_FIELDS, **BACKEND_FIELDS}


def _code_env_reads() -> set[str]:
    """Variables the services' code reads directly (os.environ.get("X"), ...)."""
    found: set[str] = set()
    pattern = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    for src in ("core/src", "backend/src", "ai-worker/src"):
        for path in (REPO / src).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


CODE_VARS = _code_env_reads()
KNOWN_VARS = set(SETTINGS) | CODE_VARS | RUNTIME_VARS


def _worker_extras() -> set[str]:
    data = tomllib.loads((REPO / "ai-worker/pyproject.toml").read_text())
    return set(data["project"].get("optional-dependencies", {}))


EXTRAS = _worker_extras()


# --- used by several files --------------------------------------------------------------


def grace_needed(env: dict[str, str]) -> float:
    """Seconds a stopping worker may take: SHUTDOWN_GRACE_S + KILL_GRACE_S."""

    def value(name: str) -> float:
        return float(env.get(name, WORKER_FIELDS[name][1]))

    return value("SHUTDOWN_GRACE_S") + value("KILL_GRACE_S")


def duration_s(text: str) -> float:
    """Compose/systemd durations: 30s, 1m30s, 90 (seconds)."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"bad duration {text!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def k8s_name(runtime: str) -> str:
    """The Kubernetes object name of a runtime's worker: a DNS label (no dots), because
    a Deployment's name becomes part of its pods' host names."""
    return "trainyard-worker-" + runtime.replace(".", "-")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        kind, _, rest = buffer.partition(" ")
        out.append((kind.upper(), rest.strip()))
        buffer = ""
    return out
