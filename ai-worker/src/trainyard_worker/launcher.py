"""How a training worker starts its job processes: forked from a warm fork server
(:mod:`.forkserver`), or as a fresh ``python -m trainyard_worker.child SPEC`` when the fork
server is off, the framework is not fork-safe, or the server is gone (then it is restarted
for the next job, and the log says why)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from .forkserver import (
    CHILD_MODULE,
    EXIT_UNSAFE,
    FORK_SAFE,
    ProtocolError,
    ServerEvent,
    SpawnRequest,
    recv_message,
    send_message,
)
from .processes import ChildProcess, LineForwarder, kill_group, spawn_group

__all__ = ["ForkedChild", "TrainingLauncher"]

log = logging.getLogger("trainyard.worker")

T = TypeVar("T")


class ForkedChild:
    """A job process forked by the fork server, with Popen's surface (``ChildProcess``).

    Its exit status comes from the server, which reaps it. If the server dies first, the
    child dies with it (PR_SET_PDEATHSIG): once its pidfd says it is gone it reads as
    killed by SIGKILL, since its real status went with the server."""

    def __init__(
        self, pid: int, pidfd: int, args: list[str], stdout: IO[str], stderr: IO[str]
    ) -> None:
        self.pid = pid
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._done = threading.Event()
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (never another one that reused its pid)."""
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, sig)

    def _exited(self, returncode: int) -> None:
        with self._lock:
            if self.returncode is None:
                self.returncode = returncode
                os.close(self._pidfd)
        self._done.set()

    def _await_gone(self) -> None:
        """Block until the process has ended (its server, which would report it, died)."""
        with self._lock:
            if self.returncode is not None:
                return
            pidfd = self._pidfd
        select.select([pidfd], [], [])


class _Unavailable(Exception):
    """This job cannot be forked; ``broken``: the server must be replaced."""

    def __init__(self, reason: str, broken: bool) -> None:
        super().__init__(reason)
        self.broken = broken


@dataclass
class _Pending:
    args: list[str]
    stdout: IO[str]
    stderr: IO[str]
    answered: threading.Event = field(default_factory=threading.Event)
    child: ForkedChild | None = None
    error: str = ""

    def discard(self) -> None:
        for stream in (self.stdout, self.stderr):
            stream.close()


class _Server:
    """One fork server process and the supervisor's end of its socket."""

    def __init__(self, proc: subprocess.Popen[str], sock: socket.socket, env: dict[str, str],
                 child_module: str) -> None:  # fmt: skip
        self.proc = proc
        self.sock = sock
        self.env = env
        self.child_module = child_module
        self.ready = threading.Event()
        self.gone = threading.Event()
        self.settled = threading.Event()  # ready or gone
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._children: dict[int, ForkedChild] = {}
        self._ids = itertools.count(1)
        assert proc.stdout is not None and proc.stderr is not None
        self._output = [LineForwarder(proc.stdout, "stdout", self._log_line),
                        LineForwarder(proc.stderr, "stderr", self._log_line)]  # fmt: skip
        threading.Thread(target=self._read, name=f"forkserver-{proc.pid}", daemon=True).start()

    @staticmethod
    def _log_line(stream: str, line: str) -> None:
        log.info("fork server: %s", line)

    def describe_end(self) -> str:
        """Why it is gone: its exit and its last lines of stderr."""
        try:
            code: int | None = self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        tail = " | ".join(list(self._output[1].tail)[-3:])
        return f"the fork server exited ({code})" + (f": {tail}" if tail else "")

    def request(self, spec_path: str, env: dict[str, str], ready_timeout_s: float,
                reply_timeout_s: float) -> ForkedChild:  # fmt: skip
        if not self.settled.wait(ready_timeout_s):
            raise _Unavailable(f"the fork server is still warming up after {ready_timeout_s:g}s",
                               broken=False)  # fmt: skip
        if self.gone.is_set():
            raise _Unavailable(self.describe_end(), broken=True)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        args = [sys.executable, "-m", self.child_module, spec_path]
        pending = _Pending(args, _reader(out_r), _reader(err_r))
        with self._lock:
            request_id = next(self._ids)
            self._pending[request_id] = pending
        try:
            send_message(self.sock, SpawnRequest(request_id, spec_path, env).to_json(),
                         [out_w, err_w])  # fmt: skip
            sent = True
        except OSError:
            sent = False
        finally:
            os.close(out_w)
            os.close(err_w)
        if not sent or not pending.answered.wait(reply_timeout_s) or pending.child is None:
            with self._lock:
                self._pending.pop(request_id, None)
            pending.discard()
            if pending.error and not self.gone.is_set():
                raise _Unavailable(f"the fork server could not fork: {pending.error}", broken=False)
            reason = self.describe_end() if self.gone.is_set() or not sent else (
                f"the fork server did not answer within {reply_timeout_s:g}s")  # fmt: skip
            raise _Unavailable(reason, broken=True)
        return pending.child

    def _read(self) -> None:
        try:
            while True:
                message, fds = recv_message(self.sock, max_fds=1)
                if message is None:
                    break
                self._handle(ServerEvent.from_json(message), fds)
        except (OSError, ProtocolError) as exc:
            log.warning("fork server connection failed: %s", exc)
        finally:
            self._lost()

    def _handle(self, event: ServerEvent, fds: list[int]) -> None:
        if event.kind == "ready":
            self.ready.set()
            self.settled.set()
        elif event.kind == "spawned":
            with self._lock:
                pending = self._pending.pop(event.request_id, None)
                if pending is None or len(fds) != 1:
                    # Given up on (timed out): nobody will watch it, so it must not run.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(event.pid, signal.SIGKILL)
                    for fd in fds:
                        os.close(fd)
                    return
                child = ForkedChild(event.pid, fds[0], pending.args, pending.stdout,
                                    pending.stderr)  # fmt: skip
                self._children[event.pid] = child
                pending.child = child
            pending.answered.set()
        elif event.kind == "failed":
            with self._lock:
                failed = self._pending.get(event.request_id)
            if failed is not None:
                failed.error = event.error or "unknown error"
                failed.answered.set()
        else:
            with self._lock:
                ended = self._children.pop(event.pid, None)
            if ended is not None:
                ended._exited(os.waitstatus_to_exitcode(event.status))

    def _lost(self) -> None:
        """The server is gone: no pending request will be answered, and its children die
        with it (PR_SET_PDEATHSIG)."""
        self.gone.set()
        self.settled.set()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)  # reaped now, not at the next spawn
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            children, self._children = list(self._children.values()), {}
        for waiting in pending:
            waiting.answered.set()
        for child in children:
            child._await_gone()
            child._exited(-signal.SIGKILL)

    def stop(self) -> None:
        """End the server (and with it any child still running)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # it sees EOF: kills its children, exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2.0)
        if self.proc.poll() is None:  # still importing, or stuck
            kill_group(self.proc, grace_s=1.0)
        self.sock.close()


def _reader(fd: int) -> IO[str]:
    """A child's pipe as Popen(text=True) gives it."""
    return open(fd, encoding="utf-8", errors="replace")  # the caller owns it


class _Keeper:
    """Starts fork servers on one thread that lives as long as the launcher: the kernel
    sends PR_SET_PDEATHSIG when the *thread* that started a process exits, so a server
    started from a short-lived thread would die (with its jobs) when that thread ends."""

    def __init__(self) -> None:
        self._calls: queue.Queue[Callable[[], None] | None] = queue.Queue()
        threading.Thread(target=self._run, name="forkserver-keeper", daemon=True).start()

    def call(self, fn: Callable[[], T]) -> T:
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001  # handed to the caller
                done.set_exception(exc)

        self._calls.put(run)
        return done.result()

    def stop(self) -> None:
        self._calls.put(None)

    def _run(self) -> None:
        while (run := self._calls.get()) is not None:
            run()


class TrainingLauncher:
    """Starts training job processes for one worker.

    ``start()`` pre-warms the fork server (it imports the framework in the background);
    ``spawn(spec_path, env)`` returns the job's process (``ChildProcess``): forked when it
    can, else fresh. A job whose ``env`` differs from the server's starts fresh and the
    server is restarted with the new environment (what the framework read from it at
    import must match). ``close()`` ends the server. ``spawn`` is for one thread at a time.
    """

    def __init__(
        self,
        framework: str,
        env: dict[str, str],
        supervisor_pid: int,
        enabled: bool,
        *,
        child_module: str = CHILD_MODULE,
        ready_timeout_s: float = 120.0,
        reply_timeout_s: float = 10.0,
        max_failures: int = 3,
    ) -> None:
        self.framework = framework
        self._env = dict(env)
        self._owner_pid = supervisor_pid
        self._child_module = child_module
        self._ready_timeout_s = ready_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._max_failures = max_failures
        self._failures = 0  # servers in a row that died before they were ready
        self._closed = False
        self._forking = enabled and FORK_SAFE.get(framework, False)
        self._server: _Server | None = None
        self._keeper: _Keeper | None = None
        self._lock = threading.Lock()
        if enabled and not self._forking:
            log.info("fork server off: %s jobs start in fresh processes (not fork-safe)",
                     framework)  # fmt: skip

    @property
    def forking(self) -> bool:
        """Whether jobs are forked (False: off, not fork-safe, or given up on)."""
        return self._forking

    @property
    def server_pid(self) -> int | None:
        server = self._server
        return None if server is None or server.gone.is_set() else server.proc.pid

    def wait_ready(self, timeout_s: float) -> bool:
        """Whether the fork server is warm (waiting up to ``timeout_s``)."""
        server = self._server
        if server is None:
            return False
        server.settled.wait(timeout_s)
        return server.ready.is_set() and not server.gone.is_set()

    def start(self) -> None:
        with self._lock:
            if self._forking and self._server is None:
                self._launch(self._env)

    def spawn(self, spec_path: Path, env: dict[str, str]) -> ChildProcess:
        if self._forking:
            with self._lock:
                child = self._fork(str(spec_path), env)
            if child is not None:
                return child
        return spawn_group([sys.executable, "-m", self._child_module, str(spec_path)], env)

    def close(self) -> None:
        self._closed = True  # no restart from here on
        server = self._server
        if server is not None:
            server.stop()  # first: a spawn waiting for it to warm up gives up now
        with self._lock:
            self._forking = False
            if self._server is not None:
                self._server.stop()
                self._server = None
            if self._keeper is not None:
                self._keeper.stop()
                self._keeper = None

    # -- inside the lock ---------------------------------------------------------------

    def _fork(self, spec_path: str, env: dict[str, str]) -> ForkedChild | None:
        server = self._server
        if env != self._env:
            self._replace(dict(env), "the job's environment differs from the fork server's")
            return None
        if server is None or server.gone.is_set():
            why = server.describe_end() if server else "the fork server is not running"
            self._replace(env, why)
            return None
        try:
            return server.request(spec_path, env, self._ready_timeout_s, self._reply_timeout_s)
        except _Unavailable as exc:
            if exc.broken:
                self._replace(env, str(exc))
            else:
                log.warning("fork server: %s; this job starts in a fresh process", exc)
            return None

    def _replace(self, env: dict[str, str], reason: str) -> None:
        old, self._server = self._server, None
        if old is not None:
            if old.ready.is_set():
                self._failures = 0
            elif old.gone.is_set():
                self._failures += 1
            old.stop()
            if old.proc.returncode == EXIT_UNSAFE:
                self._give_up(reason)
                return
        if self._closed:
            return
        if self._failures >= self._max_failures:
            self._give_up(f"{reason} ({self._failures} times in a row before it was ready)")
            return
        log.warning("%s: this job starts in a fresh process; fork server restarted", reason)
        self._env = env
        self._launch(env)

    def _give_up(self, reason: str) -> None:
        self._forking = False
        log.error("fork server off for good: %s; jobs start in fresh processes", reason)

    def _launch(self, env: dict[str, str]) -> None:
        if self._keeper is None:
            self._keeper = _Keeper()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The child module's name stays the last argument: see forkserver's docstring.
        args = [sys.executable, "-m", "trainyard_worker.forkserver", self.framework,
                str(self._owner_pid), str(theirs.fileno()), self._child_module]  # fmt: skip
        try:
            proc = self._keeper.call(lambda: spawn_group(args, env, pass_fds=[theirs.fileno()]))
        except OSError as exc:
            ours.close()
            self._failures += 1
            log.warning("fork server did not start: %s", exc)
            return
        finally:
            theirs.close()
        self._server = _Server(proc, ours, env, self._child_module)
