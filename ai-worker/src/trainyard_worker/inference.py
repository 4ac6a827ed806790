"""The supervisor's handle on the long-lived inference child (see ``inference_host``).

A reader thread per host process turns each line of its protocol stream into a wake-up
for the supervisor (:class:`~.wakeups.HostReplied`, and :class:`~.wakeups.HostGone` at
the end of the stream), so the supervisor blocks on the reply instead of looking for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from .processes import kill_group, spawn_group
from .protocol import BatchReply, BatchRequest, HostReady, ProtocolError, parse_host_line
from .wakeups import HostGone, HostReplied, Wakeups

__all__ = ["InferenceHost"]

log = logging.getLogger("trainyard.worker")


@dataclass
class _HostProcess:
    proc: subprocess.Popen[str]
    generation: int
    ended: threading.Event = field(default_factory=threading.Event)
    loaded: list[str] = field(default_factory=list)


class InferenceHost:
    def __init__(self, framework: str, capacity: int, env: dict[str, str], wakeups: Wakeups):
        self._framework = framework
        self._capacity = capacity
        self._env = env  # the supervisor's dict: a changed GPU set shows in the next host
        self._wakeups = wakeups
        self._host: _HostProcess | None = None
        self._generations = 0

    @property
    def loaded(self) -> list[str]:
        """The model ids the host holds now ([] when there is no live host). Read by the
        heartbeat thread too: one attribute read of an immutable snapshot."""
        host = self._host
        return list(host.loaded) if host is not None and not host.ended.is_set() else []

    def _start(self) -> _HostProcess:
        args = [sys.executable, "-m", "trainyard_worker.inference_host", self._framework,
                str(self._capacity), str(os.getpid())]  # fmt: skip
        self._generations += 1
        host = _HostProcess(spawn_group(args, self._env, stdin=True), self._generations)
        threading.Thread(target=self._read, args=(host,), name="inference-out",
                         daemon=True).start()  # fmt: skip
        threading.Thread(target=self._drain_stderr, args=(host.proc,), name="inference-err",
                         daemon=True).start()  # fmt: skip
        self._host = host
        return host

    def _read(self, host: _HostProcess) -> None:
        assert host.proc.stdout is not None
        for line in host.proc.stdout:
            try:
                message = parse_host_line(line)
            except ProtocolError as exc:
                log.warning("inference host wrote a non-protocol line: %s", exc)
                continue
            if not isinstance(message, HostReady):
                self._wakeups.post(HostReplied(host.generation, message))
        host.ended.set()
        self._wakeups.post(HostGone(host.generation))

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.info("inference: %s", line.rstrip("\n"))

    def send(self, request: BatchRequest) -> int:
        """Hand a batch to the host (started first if there is none); the generation of
        the host that got it. Its reply, or its end, comes as a wake-up."""
        host = self._host
        if host is None or host.ended.is_set() or host.proc.poll() is not None:
            # The request waits in the pipe while the new host imports its framework.
            host = self._start()
        assert host.proc.stdin is not None
        try:
            host.proc.stdin.write(request.to_line())
            host.proc.stdin.flush()
        except OSError:  # BrokenPipeError: it died; its reader posts HostGone at EOF
            kill_group(host.proc, 0)
        return host.generation

    def accept(self, reply: HostReplied) -> BatchReply | None:
        """The reply if it comes from the live host (its loaded models then become the
        host's), else None (a host killed since)."""
        host = self._host
        if host is None or host.generation != reply.generation:
            return None
        host.loaded = list(reply.reply.loaded)
        return reply.reply

    def kill(self, grace_s: float) -> None:
        """Stop the host (every job of its batch was cancelled, lost or timed out)."""
        host, self._host = self._host, None
        if host is not None:
            kill_group(host.proc, grace_s)

    def close(self) -> None:
        self.kill(grace_s=2.0)
