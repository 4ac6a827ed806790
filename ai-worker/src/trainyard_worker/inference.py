"""The supervisor's handle on the long-lived inference child (see ``inference_host``)."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from typing import Any

from .processes import kill_group, spawn_group

__all__ = ["InferenceHost"]

log = logging.getLogger("trainyard.worker")

_EOF = {"ok": False, "kind": "crashed", "error": "the inference process exited"}


class InferenceHost:
    def __init__(self, framework: str, capacity: int, env: dict[str, str]) -> None:
        self._framework = framework
        self._capacity = capacity
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.loaded: list[str] = []

    def _start(self) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "trainyard_worker.inference_host", self._framework,
                str(self._capacity), str(os.getpid())]  # fmt: skip
        proc = spawn_group(args, self._env, stdin=True)
        replies: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(proc, replies), daemon=True).start()
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True).start()
        self._proc, self._replies = proc, replies
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[str], replies: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                replies.put(json.loads(line))
            except json.JSONDecodeError:
                log.warning("inference host wrote a non-protocol line: %s", line[:200])
        replies.put(_EOF)

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.info("inference: %s", line.rstrip("\n"))

    def submit(self, request: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            # The request waits in the pipe while the host imports its framework.
            proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._replies.put(_EOF)

    def poll(self) -> dict[str, Any] | None:
        """The reply to the submitted request, or None while it is still working."""
        try:
            reply = self._replies.get_nowait()
        except queue.Empty:
            return None
        if reply.get("ready"):
            return None
        if "loaded" in reply:
            self.loaded = list(reply["loaded"])
        if reply is _EOF:
            self.loaded = []
            self._proc = None
        return reply

    def kill(self, grace_s: float) -> None:
        """Stop the host (a cancel or timeout of the request it is working on)."""
        if self._proc is not None:
            kill_group(self._proc, grace_s)
        self._proc = None
        self.loaded = []

    def close(self) -> None:
        self.kill(grace_s=2.0)
