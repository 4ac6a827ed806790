"""Static checks of the deployment files: Dockerfiles, docker-compose.yml, the systemd units
and their env file, the Kubernetes/KEDA manifests and the deployment scripts.

No Docker engine, cluster or systemd is needed: every check reads the files and compares
them with the code they deploy (settings classes, pyproject extras, the metrics route, entry
points), so a renamed setting, a dropped extra or a moved entry point fails here.
Run with the backend environment's python (it has pyyaml and the ``trainyard`` package):

    cd tests && "$BACKEND_ENV/bin/python" -m pytest deploy -q
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainyard.routing import RUNTIMES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
SYSTEMD = REPO / "deploy" / "systemd"
ENV_EXAMPLE = REPO / "deploy" / "trainyard.env.example"
DOCKERFILES = {
    "backend": REPO / "backend" / "Dockerfile",
    "ai-worker": REPO / "ai-worker" / "Dockerfile",
}

# The services that exist today. A worker service per runtime arrives with that runtime's
# extra (pytorch-2.0, pytorch-2.1, their -gpu variants, tensorflow): not before.
EXPECTED_SERVICES = {"redis", "sample-data", "backend", "ai-worker-sklearn"}

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
}
# Settings the example env file deliberately sets to something other than the built-in
# default (relative defaults do not work under systemd; the worker's runtime is required).
ENV_EXAMPLE_OVERRIDES = {"DATA_ROOT", "MODEL_STORE", "WORK_DIR", "WORKER_TYPE", "MODEL_FRAMEWORK"}


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
RUN_LOCAL_VARS = set(re.findall(r"\$\{(\w+):-", (REPO / "scripts/run_local.sh").read_text()))


def _worker_extras() -> set[str]:
    data = tomllib.loads((REPO / "ai-worker/pyproject.toml").read_text())
    return set(data["project"].get("optional-dependencies", {}))


EXTRAS = _worker_extras()


def _metrics_gauges() -> dict[str, set[str]]:
    """Gauge name -> label names, from the backend's metrics route."""
    tree = ast.parse((REPO / "backend/src/trainyard_api/routes/metrics.py").read_text())
    assigned = {
        n.targets[0].id: n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    gauges: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_family"
        ):
            continue
        name = ast.literal_eval(node.args[0])
        labels: set[str] = set()
        samples = node.args[2]
        if isinstance(samples, ast.Name):  # samples built beforehand: depth_samples = [...]
            samples = assigned[samples.id]
        for dict_node in ast.walk(samples):
            if isinstance(dict_node, ast.Dict):
                labels.update(
                    key.value
                    for key in dict_node.keys
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)
                )
        gauges[name] = labels
    assert gauges, "no gauge families found in the metrics route"
    return gauges


def _grace_needed(env: dict[str, str]) -> float:
    """Seconds a stopping worker may take: SHUTDOWN_GRACE_S + KILL_GRACE_S."""

    def value(name: str) -> float:
        return float(env.get(name, WORKER_FIELDS[name][1]))

    return value("SHUTDOWN_GRACE_S") + value("KILL_GRACE_S")


def _duration_s(text: str) -> float:
    """Compose/systemd durations: 30s, 1m30s, 90 (seconds)."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"bad duration {text!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _env_dict(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_services_are_exactly_the_ones_that_work_today(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_compose_worker_services_serve_runtimes_that_have_an_extra(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        if not name.startswith("ai-worker-"):
            continue
        runtime = _env_dict(service)["WORKER_TYPE"]
        assert name == f"ai-worker-{runtime}", "the seed names worker services by runtime"
        assert runtime in RUNTIMES, f"{name}: unknown runtime {runtime}"
        assert RUNTIMES[runtime].extra in EXTRAS, f"{name}: runtime {runtime} has no extra"
        args = service["build"]["args"]
        assert args["EXTRA"] == RUNTIMES[runtime].extra
        assert args["WORKER_TYPE"] == runtime
        assert _env_dict(service)["MODEL_FRAMEWORK"] == RUNTIMES[runtime].framework


def test_compose_build_paths_and_args_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            continue
        context = REPO / build["context"]
        assert context.is_dir(), f"{name}: context {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile}"
        declared = {
            arg.split("=", 1)[0] for kind, arg in _instructions(dockerfile) if kind == "ARG"
        }
        for arg in build.get("args") or {}:
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of {dockerfile}"


def test_compose_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        unknown = set(_env_dict(service)) - KNOWN_VARS
        assert not unknown, f"{name}: not a setting of backend or worker: {sorted(unknown)}"


def test_compose_redis_is_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    pairs = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
    assert pairs.get("--appendonly") == "yes"
    assert pairs.get("--appendfsync") in {"everysec", "always"}
    assert pairs.get("--maxmemory-policy") == "noeviction"
    assert redis["healthcheck"]["test"], "redis needs a healthcheck for depends_on"
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "redis data must be a named volume"
    assert "ports" not in redis, "Redis must not be published on the host"


def test_compose_backend_and_workers_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    backend = services["backend"]
    assert "8000:8000" in [str(p) for p in backend["ports"]]
    for name in ("backend", "ai-worker-sklearn"):
        service = services[name]
        env = _env_dict(service)
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DATA_ROOT"] == "/data"
        assert "./data:/data:ro" in service["volumes"], f"{name}: ./data read-only at /data"
        deps = service["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["sample-data"]["condition"] == "service_completed_successfully"
    worker = services["ai-worker-sklearn"]
    assert "models:/models" in worker["volumes"] and "models" in compose["volumes"]
    assert _env_dict(worker)["MODEL_STORE"] == "/models"
    needed = _grace_needed(_env_dict(worker))
    assert _duration_s(worker["stop_grace_period"]) > needed


def test_compose_sample_data_runs_the_real_module(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sample = services["sample-data"]
    assert sample["image"] == services["backend"]["image"]
    assert sample["build"] == services["backend"]["build"]
    assert sample["command"] == ["python", "-m", "trainyard.sample_data", "--root", "/data"]
    assert (REPO / "core/src/trainyard/sample_data.py").is_file()
    assert "./data:/data" in sample["volumes"]
    assert sample.get("restart") in ("no", None)


# --- Dockerfiles --------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
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
        assert args["EXTRA"] == "sklearn"
        assert args["WORKER_TYPE"] == "sklearn" and RUNTIMES["sklearn"].extra == args["EXTRA"]


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


# --- systemd ------------------------------------------------------------------------------


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


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), path
            doc["__file__"] = path.name
            docs.append(doc)
    return docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_k8s_documents_are_well_formed(k8s_docs: list[dict[str, Any]]) -> None:
    for doc in k8s_docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        assert doc.get("metadata", {}).get("name"), doc["__file__"]


def test_k8s_kustomization_lists_the_manifests(k8s_docs: list[dict[str, Any]]) -> None:
    kustomization = next(d for d in k8s_docs if d["kind"] == "Kustomization")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S / name).is_file(), name
    optional = {"kustomization.yaml", "sample-data-job.yaml"}
    assert {p.name for p in K8S.glob("*.yaml")} - optional == listed


def test_k8s_ships_no_redis(k8s_docs: list[dict[str, Any]]) -> None:
    for doc in k8s_docs:
        for container in _containers(doc):
            image = container["image"].split("/")[-1]
            assert not image.startswith(("redis", "valkey")), "point REDIS_URL at a managed Redis"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


def test_k8s_references_resolve(k8s_docs: list[dict[str, Any]]) -> None:
    configmaps = _of_kind(k8s_docs, "ConfigMap")
    claims = _of_kind(k8s_docs, "PersistentVolumeClaim")
    for doc in k8s_docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod["metadata"]["labels"].items()
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in _containers(doc):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{doc['metadata']['name']}: {mount['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
            names = {e["name"] for e in container.get("env", [])}
            assert not names - KNOWN_VARS, f"unknown env {sorted(names - KNOWN_VARS)}"
    for name, cm in configmaps.items():
        unknown = set(cm["data"]) - KNOWN_VARS
        assert not unknown, f"ConfigMap {name}: not a setting: {sorted(unknown)}"
    assert claims["trainyard-models"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_k8s_backend_service_and_probes(k8s_docs: list[dict[str, Any]]) -> None:
    deployment = _of_kind(k8s_docs, "Deployment")["trainyard-backend"]
    service = _of_kind(k8s_docs, "Service")["trainyard-backend"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    (container,) = _containers(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ports


def test_k8s_worker_grace_and_model_store(k8s_docs: list[dict[str, Any]]) -> None:
    deployment = _of_kind(k8s_docs, "Deployment")["trainyard-worker-sklearn"]
    config = _of_kind(k8s_docs, "ConfigMap")["trainyard-config"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _grace_needed(config)
    (container,) = _containers(deployment)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WORKER_TYPE"] == "sklearn" and RUNTIMES["sklearn"].extra in EXTRAS
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"].get("readOnly") is True
    assert config["MODEL_STORE"] in mounts and config["DATA_ROOT"] in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    models = volumes[mounts[config["MODEL_STORE"]]["name"]]
    assert models["persistentVolumeClaim"]["claimName"] == "trainyard-models"


def test_keda_query_names_a_gauge_the_backend_emits(k8s_docs: list[dict[str, Any]]) -> None:
    gauges = _metrics_gauges()
    deployments = _of_kind(k8s_docs, "Deployment")
    scaled = _of_kind(k8s_docs, "ScaledObject")
    assert scaled
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{name}: no Deployment {target}"
        (container,) = _containers(deployments[target])
        runtime = {e["name"]: e["value"] for e in container["env"]}["WORKER_TYPE"]
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert meta["serverAddress"].startswith("http")
        float(meta["threshold"])
        query = meta["query"]
        selectors = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", query)
        assert selectors, query
        for metric, matchers in selectors:
            assert metric in gauges, f"{metric} is not emitted by /metrics ({sorted(gauges)})"
            labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', matchers))
            assert set(labels) <= gauges[metric], f"{metric} has no label {set(labels)}"
            assert labels.get("runtime") == runtime, f"{name}: query is not for {runtime}"
        for label in re.findall(r"by\s*\(([^)]*)\)", query):
            assert {x.strip() for x in label.split(",")} <= gauges[selectors[0][0]]


# --- scripts ------------------------------------------------------------------------------

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
