"""The embedded Valkey never carries on against a server it did not start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from trainyard.embedded import EmbeddedServer, EmbeddedServerError, free_port


def test_starts_answers_and_stops(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "valkey") as server:
        client = Redis.from_url(server.url)
        assert server.process is not None
        assert int(client.info("server")["process_id"]) == server.process.pid
        client.close()
    assert server.process.poll() is not None


def test_refuses_a_port_another_server_holds(tmp_path: Path, server: EmbeddedServer) -> None:
    # The session's own server stands in for "another server on 6390".
    other = EmbeddedServer(tmp_path / "valkey", port=server.port)
    with pytest.raises(EmbeddedServerError, match=rf"port {server.port} is already in use"):
        other.start()
    assert other.process is None  # nothing was started
    assert not (tmp_path / "valkey").exists()


def test_refuses_a_port_any_process_holds(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match=r"REDIS_URL=redis://127\.0\.0\.1"):
            EmbeddedServer(tmp_path / "valkey", port=port).start()


def test_trainyard_up_says_why_and_exits_2(tmp_path: Path, server: EmbeddedServer) -> None:
    # Only the embedded server's start is reached: the port is taken before any backend.
    result = subprocess.run(
        [sys.executable, "-m", "trainyard.cli", "up", "--repo-root", str(tmp_path),
         "--redis-port", str(server.port), "--var-dir", str(tmp_path / "var"),
         "--data-root", str(tmp_path / "data"), "--backend-python", sys.executable],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"port {server.port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
