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
from typing import IO

__all__ = ["LineForwarder", "describe_exit", "die_with_parent", "kill_group", "spawn_group"]


def spawn_group(
    args: Sequence[str], env: dict[str, str], cwd: str | None = None, stdin: bool = False
) -> subprocess.Popen[str]:
    """Start a child as the leader of a new session (so a new process group): a cancel
    or timeout then kills everything it started, not just the child."""
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
    )


def kill_group(proc: subprocess.Popen[str], grace_s: float) -> None:
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


def die_with_parent(parent_pid: int) -> None:
    """In a child: get SIGKILL when the supervisor dies (Linux), so a kill -9 of the
    worker leaves no orphan holding CPU or GPU memory. Exits at once if it already died."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the lease still fences whatever the orphan tries to write
    if os.getppid() != parent_pid:
        os._exit(1)
