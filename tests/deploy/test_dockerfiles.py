"""Static checks of the Dockerfiles: COPY sources, base image, environment, user,
signals, the frozen uv sync with real extras, and each image's command."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO
from deploy_helpers import dockerfile_instructions as _instructions

from trainyard.routing import RUNTIMES

DOCKERFILES = {
    "backend": REPO / "backend" / "Dockerfile",
    "ai-worker": REPO / "ai-worker" / "Dockerfile",
}


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for kind, rest in instructions:
        if kind == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), value)
    return defaults


def _env_pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest))


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, bare):
                return True
    return False


@pytest.mark.parametrize("project", sorted(DOCKERFILES))
def test_dockerfile_copy_sources_exist_and_are_not_ignored(project: str) -> None:
    patterns = _dockerignore_patterns()
    copies = [rest for kind, rest in _instructions(DOCKERFILES[project]) if kind == "COPY"]
    assert copies
    for rest in copies:
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"


@pytest.mark.parametrize("project", sorted(DOCKERFILES))
def test_dockerfile_base_env_user_and_signals(project: str) -> None:
    instructions = _instructions(DOCKERFILES[project])
    kinds = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert (REPO / ".python-version").read_text().strip() == "3.11"
    env: dict[str, str] = {}
    for kind, rest in instructions:
        if kind == "ENV":
            env.update(_env_pairs(rest))
    assert env["UV_PYTHON_DOWNLOADS"] == "never"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["DATA_ROOT"] == "/data" and env["MODEL_STORE"] == "/models"
    unknown = set(env) - KNOWN_VARS
    assert not unknown, f"ENV names that are no setting: {sorted(unknown)}"
    users = [rest for kind, rest in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert kinds[-1] == "CMD"
    # uv pinned to the version scripts/lib/envs.sh installs.
    envs_sh = (REPO / "scripts/lib/envs.sh").read_text()
    pinned = re.search(r'"uv==([\d.]+)"', envs_sh)
    assert pinned and f'"uv=={pinned[1]}"' in DOCKERFILES[project].read_text()


@pytest.mark.parametrize("project", sorted(DOCKERFILES))
def test_dockerfile_uv_sync_is_frozen_and_names_real_extras(project: str) -> None:
    instructions = _instructions(DOCKERFILES[project])
    args = _arg_defaults(instructions)
    syncs = [rest for kind, rest in instructions if kind == "RUN" and "uv sync" in rest]
    assert syncs
    for rest in syncs:
        assert "--frozen" in rest and "--no-dev" in rest
        for extra in re.findall(r"--extra\s+(\S+)", rest):
            name = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), extra)
            assert name in EXTRAS, f"--extra {extra} ({name}) is not an extra of ai-worker"
        if project == "ai-worker":
            # The download cache would stay in the layer (GBs for the torch extras).
            assert "--no-cache" in rest
    if project == "ai-worker":
        assert args["EXTRA"] == "sklearn"
        assert args["WORKER_TYPE"] == "sklearn" and RUNTIMES["sklearn"].extra == args["EXTRA"]


def _run_runtime_check(
    tmp_path: Path, worker_type: str, extra: str
) -> subprocess.CompletedProcess[str]:
    """The worker Dockerfile's build-time check (its RUN python -c ...), run by sh as the
    build runs it, with this environment's python (which has trainyard) as `python`."""
    (check,) = [
        rest
        for kind, rest in _instructions(DOCKERFILES["ai-worker"])
        if kind == "RUN" and "trainyard.routing" in rest
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "WORKER_TYPE": worker_type,
        "EXTRA": extra,
    }
    return subprocess.run(["sh", "-c", check], capture_output=True, text=True, env=env, timeout=60)


def test_worker_dockerfile_accepts_every_runtime_with_its_extra(tmp_path: Path) -> None:
    for runtime in RUNTIMES.values():
        result = _run_runtime_check(tmp_path, runtime.name, runtime.extra)
        assert result.returncode == 0, (runtime.name, result.stderr)


@pytest.mark.parametrize(
    ("worker_type", "extra", "suggested"),
    [
        ("pytorch_2_1", "pytorch_2_1", "pytorch-2.1"),  # EXTRA given, WORKER_TYPE left default
        ("pytorch-2.1", "pytorch_2_1_gpu", "pytorch-2.1-gpu"),  # GPU extra, CPU runtime
        ("sklearn", "tensorflow", "tensorflow"),
    ],
)
def test_worker_dockerfile_refuses_a_runtime_of_another_extra(
    tmp_path: Path, worker_type: str, extra: str, suggested: str
) -> None:
    result = _run_runtime_check(tmp_path, worker_type, extra)
    assert result.returncode != 0
    assert f"--build-arg WORKER_TYPE={suggested}" in result.stderr, result.stderr


def test_worker_image_gets_the_driver_parts_a_gpu_worker_needs() -> None:
    env: dict[str, str] = {}
    for kind, rest in _instructions(DOCKERFILES["ai-worker"]):
        if kind == "ENV":
            env.update(_env_pairs(rest))
    # compute: libcuda for torch; utility: nvidia-smi, which the supervisor queries.
    assert {"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert env["HF_HUB_OFFLINE"] == "1"


def _final_workdir(instructions: list[tuple[str, str]]) -> str:
    return [rest for kind, rest in instructions if kind == "WORKDIR"][-1]


def test_backend_dockerfile_cmd_and_healthcheck() -> None:
    instructions = _instructions(DOCKERFILES["backend"])
    assert _final_workdir(instructions) == "/app/backend"
    cmd = ast.literal_eval([rest for kind, rest in instructions if kind == "CMD"][-1])
    assert cmd[:3] == ["python", "-m", "uvicorn"]
    module, attr = cmd[3].split(":")
    source = REPO / "backend" / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"uvicorn target {cmd[3]}: {source} missing"
    assert re.search(rf"\b{attr}\b", source.read_text())
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8000"
    health = [rest for kind, rest in instructions if kind == "HEALTHCHECK"]
    assert health and "urllib" in health[0] and "127.0.0.1:8000/health" in health[0]


def test_worker_dockerfile_cmd() -> None:
    instructions = _instructions(DOCKERFILES["ai-worker"])
    assert _final_workdir(instructions) == "/app/ai-worker"
    cmd = ast.literal_eval([rest for kind, rest in instructions if kind == "CMD"][-1])
    assert cmd == ["python", "src/worker.py"]
    assert (REPO / "ai-worker/src/worker.py").is_file()
