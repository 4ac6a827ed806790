"""Child processes in their own process groups, and how they end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Protocol

__all__ = [
    "ChildProcess",
    "LineForwarder",
    "adopt_fork_server",
    "describe_exit",
    "die_with_parent",
    "kill_group",
    "spawn_group",
]


class ChildProcess(Protocol):
    """What the supervisor needs of a job's process: ``subprocess.Popen`` (a fresh
    interpreter) and :class:`~trainyard_worker.launcher.ForkedChild` (forked by the fork
    server) both have it. ``returncode`` follows Popen: None while it runs, the exit code,
    or minus the number of the signal that killed it. ``wait(timeout)`` raises
    ``subprocess.TimeoutExpired`` when the time runs out."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdout(self) -> IO[str] | None: ...

    @property
    def stderr(self) -> IO[str] | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def spawn_group(
    args: Sequence[str],
    env: dict[str, str],
    cwd: str | None = None,
    stdin: bool = False,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[str]:
    """Start a child as the leader of a new session (so a new process group): a cancel
    or timeout then kills everything it started, not just the child. ``pass_fds``: file
    descriptors it inherits besides its pipes (the fork server's socket)."""
    return subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )


def kill_group(proc: ChildProcess, grace_s: float) -> None:
    """SIGTERM the child's whole group, then SIGKILL whatever is left after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # Also reaps grandchildren that outlived the leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def describe_exit(returncode: int) -> tuple[str, str]:
    """(failure kind, message) for a child that ended on its own with ``returncode``."""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig == signal.SIGKILL:
            return "killed", "the job's process was killed by SIGKILL (out of memory?)"
        return "crashed", f"the job's process was killed by {sig.name}"
    return "crashed", f"the job's process exited with code {returncode}"


class LineForwarder:
    """Reads a child's pipe on a thread, hands each line to ``sink`` and keeps the last
    few lines (for a crash message)."""

    def __init__(self, stream: IO[str], name: str, sink: Callable[[str, str], None]) -> None:
        self.tail: deque[str] = deque(maxlen=20)
        self._stream = stream
        self._name = name
        self._sink = sink
        self._thread = threading.Thread(target=self._pump, name=f"pipe-{name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            line = line.rstrip("\n")
            self.tail.append(line)
            self._sink(self._name, line)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self._thread.join(max(0.0, deadline - time.monotonic()))


# In a child forked by the fork server: (the supervisor's pid, the fork server's pid).
_fork_server: tuple[int, int] | None = None


def adopt_fork_server(owner_pid: int, server_pid: int) -> None:
    """In a child forked by the fork server: its parent is the server, which itself dies
    with the supervisor ``owner_pid`` (both have PR_SET_PDEATHSIG), so
    ``die_with_parent(owner_pid)`` watches the server instead of the supervisor."""
    global _fork_server
    _fork_server = (owner_pid, server_pid)


def die_with_parent(parent_pid: int) -> None:
    """In a child: get SIGKILL when the supervisor dies (Linux), so a kill -9 of the
    worker leaves no orphan holding CPU or GPU memory. Exits at once if it already died.
    A child of the fork server is killed with the server, which is killed with the
    supervisor: the same end through one more link."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the lease still fences whatever the orphan tries to write
    expected = parent_pid
    if _fork_server is not None and _fork_server[0] == parent_pid:
        expected = _fork_server[1]
    if os.getppid() != expected:
        os._exit(1)
