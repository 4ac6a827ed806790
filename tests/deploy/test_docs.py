"""The deployment commands the docs show must be ones the files support: every Compose
service, profile, build argument, systemd unit, runtime and image they name exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import EXTRAS, REPO
from deploy_helpers import dockerfile_instructions as _instructions

from trainyard.routing import RUNTIMES

DOCS = [REPO / "docs/DEPLOYMENT.md", REPO / "README.md"]
COMPOSE_FRONTENDS = (["docker", "compose"], ["docker-compose"], ["./scripts/docker-compose.sh"])
# Compose options that take a value, before and after the subcommand.
COMPOSE_GLOBAL_VALUED = {"--profile", "-f", "--file", "-p", "--project-name", "--env-file"}
COMPOSE_VALUED = {"--scale", "-t", "--timeout", "--tail"}
UNITS = {"redis-server", "ai-backend", "ai-worker"} | {f"ai-worker@{r}" for r in RUNTIMES}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # REGISTRY, TAG, RUNTIME, ...


def _commands(path: Path) -> list[tuple[dict[str, str], list[str]]]:
    """(variable assignments, words) of every shell command in the file's code blocks,
    with continuation lines joined, comments dropped, `&&` chains and `sudo` unwrapped."""
    commands: list[tuple[dict[str, str], list[str]]] = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # not shell (a PromQL query, ...)
            chain: list[str] = []
            for word in [*words, "&&"]:
                if word not in ("&&", ";"):
                    chain.append(word)
                    continue
                env: dict[str, str] = {}
                while chain and (chain[0] == "sudo" or re.fullmatch(r"[A-Z_]+=.*", chain[0])):
                    if chain[0] != "sudo":
                        key, _, value = chain[0].partition("=")
                        env[key] = value
                    chain.pop(0)
                if chain:
                    commands.append((env, chain))
                chain = []
    return commands


ALL_COMMANDS = [(path.name, env, words) for path in DOCS for env, words in _commands(path)]


def _of(program: list[str]) -> list[tuple[str, dict[str, str], list[str]]]:
    n = len(program)
    return [(f, env, w[n:]) for f, env, w in ALL_COMMANDS if w[:n] == program]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_docs_show_the_deployment_commands() -> None:
    """The parser finds what the docs show (an empty list would pass every check below)."""
    compose_lines = [c for front in COMPOSE_FRONTENDS for c in _of(front)]
    assert len(compose_lines) >= 10
    assert len(_of(["systemctl"])) >= 5
    assert len(_of(["docker", "build"])) >= 3


def test_docs_compose_commands_name_real_services(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    profiles = {p for svc in compose["services"].values() for p in svc.get("profiles", [])}
    interpolated = set(re.findall(r"\$\{(\w+)", (REPO / "docker-compose.yml").read_text()))
    for front in COMPOSE_FRONTENDS:
        for doc, env, words in _of(front):
            where = f"{doc}: {' '.join(front + words)}"
            assert set(env) <= interpolated, f"{where}: compose does not read {set(env)}"
            rest = list(words)
            while rest and rest[0].startswith("-"):
                option = rest.pop(0)
                if option in COMPOSE_GLOBAL_VALUED:
                    value = rest.pop(0)
                    if option == "--profile":
                        assert value in profiles, f"{where}: no profile {value}"
            assert rest, where
            subcommand, args = rest[0], rest[1:]
            assert subcommand in {
                "up", "down", "logs", "stop", "start", "restart", "ps", "build", "pull",
                "config", "exec",
            }, where  # fmt: skip
            while args:
                arg = args.pop(0)
                if arg in COMPOSE_VALUED:
                    value = args.pop(0)
                    if arg == "--scale":
                        assert value.split("=")[0] in services, f"{where}: {value}"
                elif not arg.startswith("-"):
                    assert arg in services, f"{where}: no service {arg}"
                    if subcommand == "exec":
                        break  # the rest is the command run in the container


def test_docs_docker_builds_use_real_extras_and_runtimes() -> None:
    for doc, _, words in _of(["docker", "build"]):
        where = f"{doc}: docker build {' '.join(words)}"
        dockerfile = REPO / words[words.index("-f") + 1]
        assert dockerfile.is_file(), where
        declared = {a.split("=")[0] for k, a in _instructions(dockerfile) if k == "ARG"}
        args = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--build-arg")
        assert set(args) <= declared, where
        assert words[-1] == ".", f"{where}: the build context is the repository root"
        if dockerfile.parent.name == "ai-worker":
            extra = args.get("EXTRA", "sklearn")
            runtime = args.get("WORKER_TYPE", extra)
            assert extra in EXTRAS, where
            assert runtime in RUNTIMES and RUNTIMES[runtime].extra == extra, where


def test_docs_systemctl_names_real_units() -> None:
    for doc, _, words in _of(["systemctl"]):
        where = f"{doc}: systemctl {' '.join(words)}"
        verb, names = words[0], [w for w in words[1:] if not w.startswith("-")]
        if verb in {"daemon-reload"}:
            continue
        assert verb in {"start", "stop", "restart", "enable", "disable", "status", "edit"}, where
        assert names, where
        for name in names:
            assert name.removesuffix(".service") in UNITS, f"{where}: no unit {name}"
    for name in ("ai-backend", "ai-worker", "ai-worker@"):
        assert (REPO / f"deploy/systemd/{name}.service").is_file()


@pytest.mark.parametrize("script", ["./scripts/setup_dev.sh", "./scripts/run_local.sh"])
def test_docs_workers_lists_name_real_runtimes(script: str) -> None:
    for doc, env, _ in _of([script]):
        for runtime in env.get("WORKERS", "sklearn").split(","):
            assert runtime in RUNTIMES, f"{doc}: WORKERS names {runtime}"


def test_docs_kustomize_images_are_the_manifests_images() -> None:
    images = set()
    for path in (REPO / "deploy/k8s").glob("*.yaml"):
        images |= {m.split(":")[0] for m in re.findall(r"image: (\S+)", path.read_text())}
    commands = _of(["kustomize", "edit", "set", "image"])
    assert commands
    for doc, _, words in commands:
        for pair in words:
            name, _, target = pair.partition("=")
            assert name in images, f"{doc}: no image {name} in deploy/k8s"
            assert target.split(":")[0].endswith("/" + name), f"{doc}: {pair}"
    # Every image the manifests use can be pointed at a registry by the documented command.
    named = {w.partition("=")[0] for _, _, words in commands for w in words}
    assert images <= named, f"not in the docs' kustomize command: {images - named}"


def test_deployment_doc_names_real_files_services_and_units(compose: dict[str, Any]) -> None:
    text = (REPO / "docs/DEPLOYMENT.md").read_text()
    for name in set(re.findall(r"`([\w.@-]+\.(?:yaml|service|env))`", text)):
        if PLACEHOLDER.search(name.split(".")[0]) or name.startswith("worker-RUNTIME"):
            continue
        found = list(REPO.glob(f"deploy/**/{name}")) + list(REPO.glob(name))
        if name.startswith("ai-worker@") and name != "ai-worker@.service":
            found += [REPO / "deploy/systemd/ai-worker@.service"]
        assert found, f"docs/DEPLOYMENT.md names {name}, which no deploy file is"
    for service in set(re.findall(r"`(ai-worker-[\w.-]+)`", text)):
        assert service in compose["services"], f"no compose service {service}"
    for runtime in set(re.findall(r"ai-worker@([a-z][\w.-]*[\w])", text)):
        assert runtime in RUNTIMES, f"no runtime {runtime} (ai-worker@{runtime})"
    # Every runtime has its worker in each way of deploying it.
    for runtime in RUNTIMES:
        assert f"`ai-worker-{runtime}`" in text
        assert f"worker-{runtime}.yaml" in text
    assert not re.search(r"only (runtime|the scikit-learn worker)", text)
