"""Static checks of the systemd units and their env file (deploy/trainyard.env.example),
and of the units setup_dev.sh renders."""

from __future__ import annotations

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
ENV_EXAMPLE_OVERRIDES = {
    "DATA_ROOT",
    "MODEL_STORE",
    "WORK_DIR",
    "WORKER_TYPE",
    "MODEL_FRAMEWORK",
    "REQUIRE_API_KEYS",  # production: API keys on
    "API_KEYS_FILE",
}
RUN_LOCAL_VARS = set(re.findall(r"\$\{(\w+):-", (REPO / "scripts/run_local.sh").read_text()))


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat: EnvironmentFile=, ExecStartPre=, ...)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (SYSTEMD / f"{name}.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            assert m[1] not in sections, f"{name}: section [{m[1]}] twice"
            current = sections.setdefault(m[1], {})
            continue
        assert current is not None and "=" in line, f"{name}: bad line {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(section: dict[str, list[str]], key: str) -> str:
    (value,) = section[key]
    return value


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


WORKER_UNITS = ("ai-worker", "ai-worker@")
UNITS = ("ai-backend", *WORKER_UNITS)
RUNTIME_ENVS = SYSTEMD / "runtimes"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_have_the_required_keys(unit: str) -> None:
    parser = _unit(unit)
    assert {"Unit", "Service", "Install"} <= set(parser)
    service = parser["Service"]
    assert service["EnvironmentFile"][0] == "/etc/trainyard/trainyard.env"
    project = "backend" if unit == "ai-backend" else "ai-worker"
    assert _one(service, "WorkingDirectory") == f"@REPO@/{project}"
    assert _one(service, "Restart") == "on-failure"
    assert _one(service, "KillSignal") == "SIGTERM"
    assert "redis-server.service" in _one(parser["Unit"], "After").split()
    assert _one(parser["Install"], "WantedBy") == "multi-user.target"


def test_systemd_backend_runs_the_app() -> None:
    exec_start = shlex.split(_one(_unit("ai-backend")["Service"], "ExecStart"))
    assert exec_start[0] == "@REPO@/backend/.venv/bin/python"
    assert exec_start[1:4] == ["-m", "uvicorn", "src.main:app"]
    assert (REPO / "backend/src/main.py").is_file()


@pytest.mark.parametrize(
    ("unit", "env_dir"), [("ai-worker", "${WORKER_TYPE}"), ("ai-worker@", "%i")]
)
def test_systemd_workers_run_their_runtime_environment(unit: str, env_dir: str) -> None:
    """A worker unit runs var/envs/RUNTIME/bin/python, the link setup_dev.sh makes for each
    runtime in WORKERS; through env(1), since systemd expands no variables (and older
    versions no specifiers) in the program path."""
    exec_start = shlex.split(_one(_unit(unit)["Service"], "ExecStart"))
    assert exec_start == ["/usr/bin/env", f"@REPO@/var/envs/{env_dir}/bin/python", "src/worker.py"]
    assert (REPO / "ai-worker/src/worker.py").is_file()
    setup = (REPO / "scripts/setup_dev.sh").read_text()
    assert "SERVICE_ENVS=$REPO_ROOT/var/envs" in setup
    assert 'ln -sfn "$(basename "$dir")" "$SERVICE_ENVS/$runtime"' in setup
    # setup_dev.sh names a runtime's extra the way the routing table does.
    assert "extra=${runtime//[-.]/_}" in setup
    for runtime in RUNTIMES.values():
        assert re.sub(r"[-.]", "_", runtime.name) == runtime.extra


def test_systemd_template_reads_the_runtime_then_the_overrides() -> None:
    files = _unit("ai-worker@")["Service"]["EnvironmentFile"]
    # Later files win: shared settings, the runtime's identity, then your own overrides.
    assert files == [
        "/etc/trainyard/trainyard.env",
        "@REPO@/deploy/systemd/runtimes/%i.env",
        "-/etc/trainyard/worker-%i.env",
    ]


def test_systemd_runtime_env_files_match_the_routing_table() -> None:
    files = {p.stem: p for p in RUNTIME_ENVS.glob("*.env")}
    assert set(files) == set(RUNTIMES), "one deploy/systemd/runtimes/RUNTIME.env per runtime"
    for name, path in files.items():
        runtime = RUNTIMES[name]
        values = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert values == {
            "WORKER_TYPE": name,
            "MODEL_FRAMEWORK": runtime.framework,
            "USE_GPU": "true" if runtime.device == "gpu" else "false",
        }, path
        assert runtime.extra in EXTRAS


@pytest.mark.parametrize("unit", WORKER_UNITS)
def test_systemd_worker_stops_gracefully(unit: str) -> None:
    service = _unit(unit)["Service"]
    assert _one(service, "KillMode") == "mixed", "only the supervisor may get SIGTERM"
    assert _one(service, "StateDirectory") == "trainyard"
    active, _ = _env_example()
    assert _duration_s(_one(service, "TimeoutStopSec")) > _grace_needed(active)


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


def test_env_example_is_accepted_by_the_backend_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from trainyard_api.config import Settings

    active, _ = _env_example()
    assert active["REQUIRE_API_KEYS"] == "true"  # keys are on in production
    for name, value in active.items():
        monkeypatch.setenv(name, value.replace("@REPO@", str(REPO)))
    # Without the key file setup_dev.sh writes, the backend refuses to start (fails closed).
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="api_keys_file"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    keys = tmp_path / "api-keys"
    keys.write_text("Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV6\n")  # what setup_dev.sh writes: one key
    monkeypatch.setenv("API_KEYS_FILE", str(keys))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_root == REPO / "data"
    assert len(settings.api_keys) == 1


def _fake_repo(tmp_path: Path) -> Path:
    """A tree with the executables the rendered units name, for systemd-analyze."""
    repo = tmp_path / "repo"
    pythons = [repo / "backend/.venv/bin/python"]
    pythons += [repo / "var/envs" / runtime / "bin/python" for runtime in RUNTIMES]
    for python in pythons:
        python.parent.mkdir(parents=True)
        python.symlink_to(shutil.which("python3") or "/usr/bin/python3")
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
    assert {p.name for p in out.iterdir()} == {f"{u}.service" for u in UNITS}
    repo = tmp_path / "repo"
    for unit in UNITS:
        text = (out / f"{unit}.service").read_text()
        assert "@REPO@" not in text and "@USER@" not in text and "@GROUP@" not in text, text
        assert f"WorkingDirectory={repo}/" in text
    # Every instance's program exists where setup_dev.sh links it.
    template = (out / "ai-worker@.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", template, re.M)
    for runtime in RUNTIMES:
        program = shlex.split(exec_start.replace("%i", runtime))[1]
        assert os.access(program, os.X_OK), program


def test_setup_dev_refuses_an_unknown_runtime_before_installing_anything(
    tmp_path: Path,
) -> None:
    # A copy of what the check reads, so that a broken check cannot install anything into
    # this clone or /etc: the copy has no projects to sync and fails early.
    for source in ("scripts/setup_dev.sh", "scripts/lib/envs.sh"):
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / source, tmp_path / source)
    shutil.copytree(RUNTIME_ENVS, tmp_path / "deploy/systemd/runtimes")
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts/setup_dev.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WORKERS": "sklearn,pytorch-9.9"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown runtime 'pytorch-9.9'" in result.stderr
    assert all(name in result.stderr for name in RUNTIMES), result.stderr
    assert result.stdout == "", "it must stop before any step"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on PATH"
)
def test_systemd_analyze_verify_rendered_units(tmp_path: Path) -> None:
    out = _render_units(tmp_path)
    units = [str(out / f"{u}.service") for u in ("ai-backend", "ai-worker")]
    # The template, as each runtime's instance (systemd resolves %i from the file name).
    template = (out / "ai-worker@.service").read_text()
    for runtime in RUNTIMES:
        instance = out / f"ai-worker@{runtime}.service"
        instance.write_text(template)
        units.append(str(instance))
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
