"""Static checks of docker-compose.yml: its services, build arguments, environment
and wiring against the code they deploy."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO
from deploy_helpers import dockerfile_instructions as _instructions
from deploy_helpers import duration_s as _duration_s
from deploy_helpers import grace_needed as _grace_needed

from trainyard.routing import RUNTIMES

COMPOSE = REPO / "docker-compose.yml"

# The services that exist today. A worker service per runtime arrives with that runtime's
# extra (pytorch-2.0, pytorch-2.1, their -gpu variants, tensorflow): not before.
EXPECTED_SERVICES = {"redis", "sample-data", "backend", "ai-worker-sklearn"}


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
