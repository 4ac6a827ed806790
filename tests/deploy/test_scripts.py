"""Static checks of the shell scripts, and the docker-compose.sh wrapper run against
stub commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import REPO

SCRIPTS = sorted((REPO / "scripts").rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shell_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["docker-compose.sh", "setup_dev.sh"])
def test_deploy_scripts_are_strict_and_executable(name: str) -> None:
    path = REPO / "scripts" / name
    assert os.access(path, os.X_OK)
    assert "set -euo pipefail" in path.read_text()


def _stub_path(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH with only bash's helpers and the given stub commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "cat"):
        real = shutil.which(tool)
        assert real
        (bin_dir / tool).symlink_to(real)
    for name, body in tools.items():
        stub = bin_dir / name
        stub.write_text(f"#!{shutil.which('bash')}\n{body}\n")
        stub.chmod(0o755)
    return str(bin_dir)


def _run_compose_script(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            shutil.which("bash") or "bash",
            str(REPO / "scripts/docker-compose.sh"),
            "up",
            "-d",
            "redis backend",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        env={"PATH": _stub_path(tmp_path, tools), "HOME": str(tmp_path)},
    )


def test_docker_compose_script_prefers_the_plugin(tmp_path: Path) -> None:
    result = _run_compose_script(
        tmp_path,
        {
            "docker": 'echo "docker $PWD"; printf "<%s>" "$@"; echo',
            "docker-compose": 'echo "legacy"',
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [f"docker {REPO}", "<compose><up><-d><redis backend>"]


def test_docker_compose_script_falls_back_to_legacy(tmp_path: Path) -> None:
    result = _run_compose_script(
        tmp_path,
        {
            "docker": '[ "$1" = compose ] && exit 1; exit 0',
            "docker-compose": 'echo "legacy $PWD"; printf "<%s>" "$@"; echo',
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"legacy {REPO}", "<up><-d><redis backend>"]


def test_docker_compose_script_explains_when_neither_exists(tmp_path: Path) -> None:
    result = _run_compose_script(tmp_path, {})
    assert result.returncode != 0
    assert "docker compose" in result.stderr and "docker-compose" in result.stderr
