"""The fork server: ``python -m trainyard_worker.forkserver FRAMEWORK OWNER_PID SOCKET_FD
CHILD_MODULE``.

A training worker keeps one of these per framework, started and used through
:class:`~trainyard_worker.launcher.TrainingLauncher`. It imports once what every training
child imports (the child module, ``trainyard.engine`` and redis, the framework's runtime
with scikit-learn + skops or torch + torchvision + transformers + safetensors), then forks
one child per job instead of the supervisor starting a fresh interpreter that pays those
imports again (~2.9 s for scikit-learn, more for the others).

Each forked child is set up to be what ``python -m trainyard_worker.child SPEC`` would
have been: leader of its own session (so its own process group: a cancel or timeout kills
its whole group), stdin from /dev/null, stdout and stderr on the pipes the supervisor
sent, no other inherited file descriptor, the job's environment, PR_SET_PDEATHSIG on the
server (which has it on the supervisor: a kill -9 of the worker kills the server and so
the job), fresh random seeds where a fresh interpreter would have had random ones (NumPy's
global RNG, torch's default generator; ``random`` reseeds itself at fork), and the process
title ``python -m trainyard_worker.child SPEC`` (``ps``, ``pgrep -f`` and the fault suite
find it as before; its ``comm`` stays ``python``). Then it runs the child module's
``main()`` and exits with its code (an uncaught exception: traceback on stderr, exit 1).
What a fork shares and a fresh interpreter would not: the hash seed of str keys
(PYTHONHASHSEED) is the server's, the same for every job of this server.

Which frameworks fork (``FORK_SAFE``, measured on this project's environments):

- scikit-learn: yes. Its imports open no file descriptor; OpenBLAS starts its thread pool
  at import when allowed more than one thread, and makes a new one in a forked child (its
  fork handlers: checked, a forked child's matrix product runs on the new pool).
- PyTorch: yes, because the server never initialises CUDA, and each child initialises it
  itself after the fork, as a fresh process would. Importing torch, torchvision and
  transformers starts no thread and does not initialise CUDA. The server checks that after
  its imports, as torch sees it: a throwaway child asks ``torch.cuda._is_in_bad_fork()``
  (True once the parent queried the driver, e.g. ``torch.cuda.is_available()``, even
  though ``is_initialized()`` stays False); if so it refuses to serve (exit
  ``EXIT_UNSAFE``: the launcher then starts fresh processes for good). Checked on an H200
  with torch 2.11 (cu130): after the imports, two forked children in turn ran CUDA
  matmuls; after ``is_available()`` in the parent, a forked child failed with "Cannot
  re-initialize CUDA in forked subprocess" and the check said so. (``libcuda.so`` being
  mapped is no sign: torch 2.11 maps it at import, and its forks use CUDA fine.)
- TensorFlow: yes, measured. Importing tensorflow and keras starts no thread and opens no
  file descriptor (its thread pools and eager context are made on first use, in the
  child). The tensorflow tests' MobileNet (12 epochs on the 40-image cifar4 sample, SGD),
  trained by 8 jobs, forked and fresh alternately (two runs of 4, two forked from the same
  server each): the same metrics and the same loss at every epoch, bit for bit, in all 8;
  no slower (training 8.3-28.4 s forked vs 12.1-38.6 s fresh on the shared 2-core machine);
  spawn to the first line of output 0.02-0.12 s forked vs 5.7-20 s fresh.

The fault suite's ledger (``tests/faults/ledger/sitecustomize.py``) installs its recorder
of ``train`` calls in processes whose ``sys.orig_argv`` has ``trainyard_worker.child``: the
server's argv ends with the child module's name, so the server installs it and its forked
children inherit it, as fresh children run it themselves.

Wire protocol (an AF_UNIX SOCK_SEQPACKET socketpair, one JSON object per message):
supervisor -> server ``SpawnRequest`` with the write ends of the child's stdout and stderr
pipes (SCM_RIGHTS); server -> supervisor ``ServerEvent``: ``ready`` once warm, ``spawned``
(after the child has called setsid, so a kill of its group right after cannot miss; with
a pidfd of the child), ``failed`` (fork failed) and ``exited`` with the raw wait status.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import json
import os
import select
import selectors
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .processes import adopt_fork_server, die_with_parent
from .runtimes import load_runtime_module

__all__ = [
    "CHILD_MODULE",
    "EXIT_UNSAFE",
    "FORK_SAFE",
    "WARM_MODULES",
    "ProtocolError",
    "ServerEvent",
    "SpawnRequest",
    "main",
    "recv_message",
    "send_message",
]

CHILD_MODULE = "trainyard_worker.child"

# framework -> whether a child forked after importing it trains as a fresh process does
# (measured: see the module's docstring). A framework not listed starts fresh processes.
FORK_SAFE: dict[str, bool] = {
    "sklearn": True,
    "pytorch": True,
    "tensorflow": True,
}

# What the server imports besides the child module and the runtime module
# (``load_runtime_module``): the PyTorch runtime imports its model families lazily.
WARM_MODULES: dict[str, tuple[str, ...]] = {
    "pytorch": ("trainyard_worker.runtimes.torch_vision", "trainyard_worker.runtimes.torch_text"),
}

EXIT_UNSAFE = 3  # the server found CUDA initialised after its imports: never fork there

MAX_MESSAGE_BYTES = 1 << 20  # a request carries the job's environment
_SYNC_TIMEOUT_S = 10.0  # a child's setup (setsid, dup2, title) takes milliseconds


class ProtocolError(RuntimeError):
    """A message that is not what the other side sends (truncated, not JSON, wrong fds)."""


@dataclass(frozen=True)
class SpawnRequest:
    """Fork one child for ``spec_path`` with environment ``env``; sent with two fds:
    the write ends of its stdout and stderr pipes."""

    request_id: int
    spec_path: str
    env: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "spec_path": self.spec_path, "env": self.env}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpawnRequest:
        env = data.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ProtocolError("spawn request: env must map strings to strings")
        return cls(int(data["request_id"]), str(data["spec_path"]), dict(env))


EventKind = Literal["ready", "spawned", "failed", "exited"]


@dataclass(frozen=True)
class ServerEvent:
    """What the server tells the supervisor. ``spawned`` comes with the child's pidfd;
    ``status`` of ``exited`` is the raw ``waitpid`` status."""

    kind: EventKind
    request_id: int = 0
    pid: int = 0
    status: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "request_id": self.request_id, "pid": self.pid,
                "status": self.status, "error": self.error}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerEvent:
        kind = data.get("kind")
        if kind not in ("ready", "spawned", "failed", "exited"):
            raise ProtocolError(f"unknown fork server event {kind!r}")
        return cls(kind, int(data.get("request_id", 0)), int(data.get("pid", 0)),
                   int(data.get("status", 0)), str(data.get("error", "")))  # fmt: skip


def send_message(
    sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None
) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], fds or [])


def recv_message(sock: socket.socket, max_fds: int) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the fds that came with it; (None, []) when the peer is gone."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE_BYTES, max_fds)
    if not data and not fds:
        return None, []
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("fork server message truncated")
        message = json.loads(data)
        if not isinstance(message, dict):
            raise ProtocolError("fork server message is not a JSON object")
    except (ProtocolError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(str(exc)) from exc
    return message, fds


# -- the server ------------------------------------------------------------------------


def _warm(framework: str, child_module: str) -> None:
    """Import what a child would; a module that fails here fails in the child the same
    way (with the job's traceback), so the server still serves."""
    import setproctitle

    setproctitle.getproctitle()  # its one-time setup, done here instead of in every child
    names = [CHILD_MODULE, child_module, *WARM_MODULES.get(framework, ())]
    for name in [None, *dict.fromkeys(names)]:  # None: the runtime module
        try:
            if name is None:
                load_runtime_module(framework)
            else:
                importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  # reported, not fatal (see above)
            print(f"forkserver: pre-import failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _cuda_touched() -> str | None:
    """Why a forked child could not use CUDA (something in the imports initialised it or
    queried the driver), or None. torch knows: it poisons fork once the driver was asked
    anything, even where ``is_initialized()`` stays False (``is_available()`` does it), so
    a throwaway child asks torch whether it is in a bad fork."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if torch.cuda.is_initialized():
        return "torch initialised CUDA while the fork server imported it"
    pid = os.fork()
    if pid == 0:
        os._exit(3 if torch.cuda._is_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "torch queried the CUDA driver while the fork server imported (a fork cannot use it)"
    return None


def _set_pdeathsig() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _set_comm(name: bytes) -> None:
    """The kernel's short name (``ps -o comm``, ``pgrep -x``): setproctitle changes it to
    the title's first 15 bytes; a fresh child's is the interpreter's name."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name[:15]))  # PR_SET_NAME


def _reseed() -> None:
    """Fresh random state where a fresh interpreter would have drawn one (``random``
    reseeds itself at fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.default_generator.seed()


def _exit_code(exc: SystemExit) -> int:
    """The status a fresh interpreter exits with for this SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _run_child_module(module: str) -> int:
    """The child module's ``main()``, ended as a fresh interpreter ends (SystemExit codes,
    a traceback and 1 for an uncaught exception, non-daemon threads joined, atexit)."""
    interrupted = False
    try:
        rc = importlib.import_module(module).main()
        rc = _exit_code(SystemExit(rc))
    except SystemExit as exc:
        rc = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        rc, interrupted = 1, True
    except BaseException:  # noqa: BLE001  # what an uncaught exception does
        traceback.print_exc()
        rc = 1
    with contextlib.suppress(BaseException):
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()  # join non-daemon threads, as interpreter shutdown does
        atexit._run_exitfuncs()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # as Python 3.8+ does: die of SIGINT so the parent sees -2
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return rc


@dataclass(frozen=True)
class _Identity:
    owner_pid: int  # the supervisor
    server_pid: int
    child_module: str
    comm: bytes  # the interpreter's short name, given back to each child


def _become_child(ident: _Identity, req: SpawnRequest, pipes: list[int], sync_w: int) -> None:
    """In the forked child: become a fresh job process, run it, exit. Never returns."""
    os.setsid()
    _set_pdeathsig()
    if os.getppid() != ident.server_pid:
        os._exit(1)  # the server died before PR_SET_PDEATHSIG: no signal will come
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(pipes[0], 1)
    os.dup2(pipes[1], 2)
    os.environ.clear()
    os.environ.update(req.env)
    import setproctitle

    setproctitle.setproctitle(f"python -m {ident.child_module} {req.spec_path}")
    _set_comm(ident.comm)
    os.write(sync_w, b"1")  # the server may now report this pid: its group exists
    # Every other inherited descriptor: the server's socket, its poll set, other
    # children's pidfds, the pipe ends.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    _reseed()
    adopt_fork_server(ident.owner_pid, ident.server_pid)
    atexit._clear()  # the server's handlers must not clean up the server's state
    spec = importlib.util.find_spec(ident.child_module)
    sys.argv = [(spec.origin if spec and spec.origin else ident.child_module), req.spec_path]
    os._exit(_run_child_module(ident.child_module))


class _Server:
    """Serves one supervisor: forks on request, reaps its children, reports both."""

    def __init__(self, sock: socket.socket, ident: _Identity) -> None:
        self.sock = sock
        self.ident = ident
        # poll, not epoll: no kernel object shared with the forked children.
        self.selector = selectors.PollSelector()
        self.children: dict[int, int] = {}  # pid -> pidfd

    def send(self, event: ServerEvent, fds: list[int] | None = None) -> None:
        send_message(self.sock, event.to_json(), fds)

    def serve(self) -> int:
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        self.send(ServerEvent("ready", pid=os.getpid()))
        _retitle_ready(self.ident.comm)
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self.handle_request():
                        self.stop_children()
                        return 0
                else:
                    self.reap(int(key.data))

    def handle_request(self) -> bool:
        """False once the supervisor closed its end (or died)."""
        try:
            message, fds = recv_message(self.sock, max_fds=2)
        except ProtocolError as exc:
            print(f"forkserver: bad request: {exc}", file=sys.stderr)
            return True
        except OSError:
            return False
        if message is None:
            return False
        try:
            req = SpawnRequest.from_json(message)
            if len(fds) != 2:
                raise ProtocolError(f"spawn request with {len(fds)} fds, expected 2")
        except (ProtocolError, KeyError, ValueError, TypeError) as exc:
            for fd in fds:
                os.close(fd)
            request_id = message.get("request_id")
            request_id = request_id if isinstance(request_id, int) else 0
            self.send(ServerEvent("failed", request_id, error=str(exc)))
            return True
        try:
            pid, pidfd = self.fork(req, fds)
        except OSError as exc:
            self.send(ServerEvent("failed", req.request_id, error=f"fork failed: {exc}"))
            return True
        self.children[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        self.send(ServerEvent("spawned", req.request_id, pid=pid), [pidfd])
        return True

    def fork(self, req: SpawnRequest, pipes: list[int]) -> tuple[int, int]:
        sync_r, sync_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    _become_child(self.ident, req, pipes, sync_w)
                except BaseException:  # noqa: BLE001  # its setup failed: say why
                    with contextlib.suppress(BaseException):
                        traceback.print_exc()
                finally:
                    os._exit(127)  # never back into the server's loop
        finally:
            os.close(sync_w)
            for fd in pipes:
                os.close(fd)
        try:
            # Taken before the child can be reaped (only this loop reaps): it is this pid.
            pidfd = os.pidfd_open(pid)
            ready, _, _ = select.select([sync_r], [], [], _SYNC_TIMEOUT_S)
            if ready:
                os.read(sync_r, 1)  # b"" when the child died during its setup: reported
        finally:
            os.close(sync_r)
        return pid, pidfd

    def reap(self, pid: int) -> None:
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        _, status = os.waitpid(pid, 0)  # the pidfd is readable: it has exited
        os.close(pidfd)
        self.send(ServerEvent("exited", pid=pid, status=status))

    def stop_children(self) -> None:
        """The supervisor is gone: so are its jobs (as PR_SET_PDEATHSIG would do)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _retitle_ready(comm: bytes) -> None:
    """Append " (ready)" to the server's command line, so ``ps`` (and a test) can tell a
    warm server from one still importing; keep its short name as it was."""
    import setproctitle

    setproctitle.setproctitle(setproctitle.getproctitle() + " (ready)")
    _set_comm(comm)


def main(argv: list[str] | None = None) -> int:
    framework, owner, fd, child_module = (sys.argv[1:] if argv is None else argv)[:4]
    die_with_parent(int(owner))  # the supervisor's kill -9 takes the server (and its jobs)
    sock = socket.socket(fileno=int(fd))
    comm = Path("/proc/self/comm").read_bytes().strip()
    _warm(framework, child_module)
    _set_comm(comm)  # setproctitle's setup renamed it
    unsafe = _cuda_touched()
    if unsafe is not None:
        print(f"forkserver: not forking: {unsafe}", file=sys.stderr)
        return EXIT_UNSAFE
    import gc

    gc.collect()
    gc.freeze()  # the imports stay out of the children's collections: fewer copied pages
    return _Server(sock, _Identity(int(owner), os.getpid(), child_module, comm)).serve()


if __name__ == "__main__":
    raise SystemExit(main())
