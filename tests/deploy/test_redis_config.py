"""The shipped Redis/Valkey durability settings: `deploy/redis/trainyard.conf` (for a
server you run), the Compose `redis` service and the embedded server of `trainyard up`
say the same thing (AOF on, fsync every second, no eviction), and a real server started
with the file runs with those settings."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from deploy_helpers import REPO

from trainyard.embedded import EmbeddedServer, find_server_binary, free_port
from trainyard.testing import wait_for

CONF = REPO / "deploy/redis/trainyard.conf"
EXPECTED = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


def _conf_settings() -> dict[str, str]:
    pairs = {}
    for line in CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split(None, 1)
            pairs[name] = value.strip()
    return pairs


def _compose_settings() -> dict[str, str]:
    compose: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    return {words[i][2:]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}


def test_the_three_configurations_agree() -> None:
    assert _conf_settings() == EXPECTED
    compose = _compose_settings()
    assert {k: compose[k] for k in EXPECTED} == EXPECTED


def _config(url: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {k: client.config_get(k)[k] for k in EXPECTED}
    finally:
        client.close()


def test_a_server_started_with_the_file_runs_with_its_settings(tmp_path: Path) -> None:
    port = free_port()
    # Start from settings that differ, so the file is seen to change them.
    args = [find_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(tmp_path), "--appendonly", "no", "--maxmemory-policy", "allkeys-lru",
            "--include", str(CONF)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(url).ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 15, "the server to start")
        assert _config(url) == EXPECTED
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_the_embedded_server_runs_durable(tmp_path: Path, appendfsync: str) -> None:
    with EmbeddedServer(tmp_path, appendfsync=appendfsync) as server:
        assert _config(server.url) == {**EXPECTED, "appendfsync": appendfsync}
