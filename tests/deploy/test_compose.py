"""Static checks of docker-compose.yml: its services, build arguments, environment,
GPU reservations, profiles and wiring against the code they deploy and the seed's commands."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO
from deploy_helpers import dockerfile_instructions as _instructions
from deploy_helpers import duration_s as _duration_s
from deploy_helpers import grace_needed as _grace_needed

from trainyard.routing import MODEL_TYPES, RUNTIMES

COMPOSE = REPO / "docker-compose.yml"

# The seed README's Docker Compose commands, verbatim ("Quick Start" and "Start specific AI
# worker types"): each must work as written.
SEED_COMMANDS = [
    "docker-compose up -d",
    "docker compose up -d",
    "./scripts/docker-compose.sh up -d",
    "docker compose up -d redis backend ai-worker-pytorch-2.0",
    "docker compose up -d redis backend ai-worker-pytorch-2.1",
    "docker compose up -d redis backend ai-worker-tensorflow",
    "docker compose up -d redis backend ai-worker-sklearn",
    "docker compose up -d redis backend ai-worker-pytorch-2.0-gpu",
    "docker compose up -d redis backend ai-worker-pytorch-2.1-gpu",
]
WORKER_SERVICES = {f"ai-worker-{name}": runtime for name, runtime in RUNTIMES.items()}
EXPECTED_SERVICES = {"redis", "sample-data", "backend", *WORKER_SERVICES}
GPU_PROFILE = "gpu"


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


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with no VAR set (a fresh clone, no .env)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _default_services(compose: dict[str, Any]) -> set[str]:
    """What a plain `docker compose up -d` starts: the services without a profile."""
    return {name for name, svc in compose["services"].items() if not svc.get("profiles")}


def _started_by(compose: dict[str, Any], command: str) -> set[str]:
    """The services `up` starts for a command line: the named ones (or the default set),
    with everything they depend on."""
    words = shlex.split(command)
    up = words.index("up")
    named = [w for w in words[up + 1 :] if not w.startswith("-")]
    todo = list(named) if named else sorted(_default_services(compose))
    started: set[str] = set()
    while todo:
        name = todo.pop()
        assert name in compose["services"], f"{command!r}: no such service {name}"
        if name not in started:
            started.add(name)
            todo.extend(compose["services"][name].get("depends_on") or {})
    return started


def test_compose_services_are_the_seed_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == EXPECTED_SERVICES


@pytest.mark.parametrize("command", SEED_COMMANDS)
def test_seed_commands_start_a_working_system(compose: dict[str, Any], command: str) -> None:
    started = _started_by(compose, command)
    assert {"redis", "sample-data", "backend"} <= started, command
    workers = started & set(WORKER_SERVICES)
    assert workers, f"{command!r} starts no worker"
    named = {w for w in shlex.split(command) if w.startswith("ai-worker-")}
    if named:
        assert workers == named, f"{command!r} starts other workers too: {workers - named}"


def test_plain_up_needs_no_gpu_and_serves_every_cpu_route(compose: dict[str, Any]) -> None:
    started = _started_by(compose, "docker compose up -d")
    served = {WORKER_SERVICES[s].name for s in started if s in WORKER_SERVICES}
    assert all(RUNTIMES[r].device == "cpu" for r in served), f"GPU worker by default: {served}"
    # Every seed example without requires_gpu (bert, resnet, inception, random_forest...)
    # has a worker after the Quick Start's `docker-compose up -d`.
    for model_type, route in MODEL_TYPES.items():
        assert route.cpu_runtime in served, f"{model_type}: {route.cpu_runtime} not started"


@pytest.mark.parametrize("service_name", sorted(WORKER_SERVICES))
def test_compose_worker_service_builds_and_sets_its_runtime(
    compose: dict[str, Any], service_name: str
) -> None:
    runtime = WORKER_SERVICES[service_name]
    service = compose["services"][service_name]
    assert runtime.extra in EXTRAS, f"{runtime.name}: extra {runtime.extra} not in pyproject"
    build = service["build"]
    assert build["dockerfile"] == "ai-worker/Dockerfile" and build["context"] == "."
    assert build["args"] == {"EXTRA": runtime.extra, "WORKER_TYPE": runtime.name}
    assert service["image"] == f"trainyard-worker-{runtime.name}:local"
    env = _env_dict(service)
    assert env["WORKER_TYPE"] == runtime.name
    assert env["MODEL_FRAMEWORK"] == runtime.framework
    assert env["USE_GPU"] == ("true" if runtime.device == "gpu" else "false")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert int(_interpolate(env["JOB_THREADS"])) >= 1


@pytest.mark.parametrize("service_name", sorted(WORKER_SERVICES))
def test_compose_gpu_workers_reserve_a_gpu_behind_the_gpu_profile(
    compose: dict[str, Any], service_name: str
) -> None:
    runtime = WORKER_SERVICES[service_name]
    service = compose["services"][service_name]
    devices = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    if runtime.device == "cpu":
        assert not service.get("profiles"), f"{service_name}: a CPU worker starts by default"
        assert not devices, f"{service_name}: a CPU worker must not reserve a GPU"
        return
    assert service["profiles"] == [GPU_PROFILE]
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    # One GPU: `count: 1`/`all`, or exactly one id (a worker owns its GPU).
    if "device_ids" in device:
        assert "count" not in device, "count and device_ids exclude each other"
        (device_id,) = device["device_ids"]
        assert re.fullmatch(r"\d+|GPU-[0-9a-f-]+", _interpolate(str(device_id))), device_id
    else:
        assert device["count"] in (1, "all")


def test_compose_interpolations_have_defaults() -> None:
    """A fresh clone has no .env: every ${VAR} needs a default, or Compose warns and
    substitutes an empty string."""
    for match in re.finditer(r"\$\{([^}]*)\}", COMPOSE.read_text()):
        assert re.fullmatch(r"\w+:-[^}]*", match[1]), f"${{{match[1]}}} has no default"


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
    for name in ("backend", *sorted(WORKER_SERVICES)):
        service = services[name]
        env = _env_dict(service)
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DATA_ROOT"] == "/data"
        assert "./data:/data:ro" in service["volumes"], f"{name}: ./data read-only at /data"
        deps = service["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["sample-data"]["condition"] == "service_completed_successfully"
        # Dependencies must start without a profile, or naming this service fails.
        assert not any(services[dep].get("profiles") for dep in deps), name
    for name in sorted(WORKER_SERVICES):
        worker = services[name]
        # One model store for every worker: a model trained by one is served by another.
        assert "models:/models" in worker["volumes"] and "models" in compose["volumes"]
        assert _env_dict(worker)["MODEL_STORE"] == "/models"
        assert worker["stop_signal"] == "SIGTERM"
        needed = _grace_needed(_env_dict(worker))
        assert _duration_s(worker["stop_grace_period"]) > needed, name


def test_compose_sample_data_runs_the_real_module(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sample = services["sample-data"]
    assert sample["image"] == services["backend"]["image"]
    assert sample["build"] == services["backend"]["build"]
    assert sample["command"] == ["python", "-m", "trainyard.sample_data", "--root", "/data"]
    assert (REPO / "core/src/trainyard/sample_data.py").is_file()
    assert "./data:/data" in sample["volumes"]
    assert sample.get("restart") in ("no", None)


# Service and deploy keys of the Compose specification that this file may use: a typo
# (`profile:`, `stop_grace:`) would be a silent no-op in YAML but an error in Compose.
SERVICE_KEYS = {
    "build", "command", "depends_on", "deploy", "entrypoint", "environment", "healthcheck",
    "image", "ports", "profiles", "restart", "stop_grace_period", "stop_signal", "user",
    "volumes", "shm_size", "ulimits", "env_file", "labels", "networks",
}  # fmt: skip
DEVICE_KEYS = {"capabilities", "count", "device_ids", "driver", "options"}


def test_compose_keys_are_compose_keys(compose: dict[str, Any]) -> None:
    assert set(compose) <= {"services", "volumes", "networks"} | {
        k for k in compose if k.startswith("x-")
    }
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: {set(service) - SERVICE_KEYS}"
        deploy = service.get("deploy")
        if deploy is not None:
            assert set(deploy) == {"resources"}, name
            assert set(deploy["resources"]) == {"reservations"}, name
            for device in deploy["resources"]["reservations"]["devices"]:
                assert set(device) <= DEVICE_KEYS and device["capabilities"], name
