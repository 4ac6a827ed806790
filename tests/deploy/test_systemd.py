"""Static checks of the systemd units and their env file (deploy/trainyard.env.example),
and of the units setup_dev.sh renders."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO, SETTINGS
from deploy_helpers import duration_s as _duration_s
from deploy_helpers import grace_needed as _grace_needed

from trainyard.routing import RUNTIMES

SYSTEMD = REPO / "deploy" / "systemd"
ENV_EXAMPLE = REPO / "deploy" / "trainyard.env.example"
# Settings the example env file deliberately sets to something other than the built-in
# default (relative defaults do not work under systemd; the worker's runtime is required).
ENV_EXAMPLE_OVERRIDES = {"DATA_ROOT", "MODEL_STORE", "WORK_DIR", "WORKER_TYPE", "MODEL_FRAMEWORK"}
RUN_LOCAL_VARS = set(re.findall(r"\$\{(\w+):-", (REPO / "scripts/run_local.sh").read_text()))


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / f"{name}.service").read_text())
    return parser


def _env_example() -> tuple[dict[str, str], set[str]]:
    """Active KEY=value assignments, and the names of commented-out ones."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s?([A-Z][A-Z0-9_]*)=.*", line):
            commented.add(m[1])
    return active, commented


@pytest.mark.parametrize(
    ("unit", "project", "target"),
    [
        ("ai-backend", "backend", "src.main:app"),
        ("ai-worker", "ai-worker", "src/worker.py"),
    ],
)
def test_systemd_units_have_the_required_keys(unit: str, project: str, target: str) -> None:
    parser = _unit(unit)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    assert service["EnvironmentFile"] == "/etc/trainyard/trainyard.env"
    assert service["WorkingDirectory"] == f"@REPO@/{project}"
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0] == f"@REPO@/{project}/.venv/bin/python"
    assert target in exec_start
    path = (target.split(":")[0].replace(".", "/") + ".py") if ":" in target else target
    assert (REPO / project / path).is_file()
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert "redis-server.service" in parser["Unit"]["After"].split()
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_worker_stops_gracefully() -> None:
    service = _unit("ai-worker")["Service"]
    assert service["KillMode"] == "mixed", "only the supervisor may get SIGTERM"
    active, _ = _env_example()
    assert _duration_s(service["TimeoutStopSec"]) > _grace_needed(active)


def test_env_example_names_are_settings_and_cover_the_readme() -> None:
    active, commented = _env_example()
    unknown = set(active) - KNOWN_VARS
    assert not unknown, f"not a setting of backend or worker: {sorted(unknown)}"
    unknown = commented - KNOWN_VARS - RUN_LOCAL_VARS
    assert not unknown, f"commented names that nothing reads: {sorted(unknown)}"
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])
    }
    assert documented, "README configuration table not found"
    missing = documented - set(active) - commented
    assert not missing, f"README variables missing from {ENV_EXAMPLE.name}: {sorted(missing)}"


def test_env_example_values_are_the_defaults_and_parse() -> None:
    active, _ = _env_example()
    for name, value in active.items():
        if name not in SETTINGS:
            continue
        annotation, default = SETTINGS[name]
        if "float" in annotation:
            parsed: Any = float(value)
        elif "int" in annotation:
            parsed = int(value)
        elif "bool" in annotation:
            assert value in ("true", "false"), f"{name}={value}"
            parsed = value == "true"
        else:
            parsed = value
        if name not in ENV_EXAMPLE_OVERRIDES and default is not None:
            assert parsed == default, f"{name}={value} but the built-in default is {default!r}"
    assert active["DATA_ROOT"].startswith("@REPO@/"), "relative DATA_ROOT breaks under systemd"
    assert active["WORKER_TYPE"] in RUNTIMES
    assert RUNTIMES[active["WORKER_TYPE"]].extra in EXTRAS


def test_env_example_is_accepted_by_the_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainyard_api.config import Settings

    active, _ = _env_example()
    for name, value in active.items():
        monkeypatch.setenv(name, value.replace("@REPO@", str(REPO)))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_root == REPO / "data"


def _fake_repo(tmp_path: Path) -> Path:
    """A tree with the executables the rendered units name, for systemd-analyze."""
    repo = tmp_path / "repo"
    for project in ("backend", "ai-worker"):
        bin_dir = repo / project / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    return repo


def _render_units(tmp_path: Path) -> Path:
    out = tmp_path / "units"
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts/setup_dev.sh"),
            "--render-units",
            str(out),
            str(_fake_repo(tmp_path)),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out


def test_setup_dev_renders_every_placeholder(tmp_path: Path) -> None:
    out = _render_units(tmp_path)
    for unit in ("ai-backend", "ai-worker"):
        text = (out / f"{unit}.service").read_text()
        assert "@" not in text, f"{unit}: placeholder left: {text}"
        assert str(tmp_path / "repo" / "backend") in text or unit == "ai-worker"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on PATH"
)
def test_systemd_analyze_verify_rendered_units(tmp_path: Path) -> None:
    out = _render_units(tmp_path)
    units = [str(out / f"{u}.service") for u in ("ai-backend", "ai-worker")]
    result = subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=out,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    ours = [
        ln
        for ln in (result.stdout + result.stderr).splitlines()
        if "ai-backend" in ln or "ai-worker" in ln
    ]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
