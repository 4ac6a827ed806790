"""The fault suite's side channel: a ledger of every fenced queue write, from every process.

The fault harness puts this folder first on the ``PYTHONPATH`` of the backend and the
worker processes (the supervisor passes ``PYTHONPATH`` on to its training children and its
inference process), so Python imports this module at start in each of them. When
``TRAINYARD_FAULT_LEDGER`` names a file, it wraps ``JobQueue.claim_work`` (which ``claim``
calls), ``renew``, ``report``, ``finish``, ``release``, ``reap``, ``enqueue`` and ``cancel``
to append one JSON line per call, and the batch calls (``claim_batch``, ``finish_many``,
``renew_many``, ``enqueue_many``) to append one line per job, the line the single call
would write (``op`` claim, finish, renew, enqueue; ``batch`` true) with the batch call's
``t0``/``t1``: the checks hold per job, whichever call claimed, renewed or ended it. In a
training child (or the fork server its children come from) it also wraps the runtime's
``train`` (so the suite can count executions).

Why a side channel: the queue's own records say how a job ended, not who tried to write
what. Fencing ("a stale attempt's writes are refused") can only be checked by seeing the
refused writes, and "finished at most once" by seeing every applied finish.

Each line carries ``t0``/``t1``: ``time.monotonic()`` before and after the call. Linux's
monotonic clock is one clock for all processes of a machine, so the server applied the
call somewhere inside ``[t0, t1]``, and two calls whose intervals do not overlap happened in
that order, whichever processes made them. A call that raised has ``"error"``: the
server may or may not have applied it (a reply lost to a restart).

Lines are written with one ``write`` on an ``O_APPEND`` descriptor (a batch call's lines
in one together): the kernel appends each whole, so lines of concurrent processes never
interleave.

Without the variable this module does nothing; with it, a failure to install or to write
is swallowed: the ledger must never be what breaks a process under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__: list[str] = []

LEDGER_ENV = "TRAINYARD_FAULT_LEDGER"
# A deliberately broken system, to show that the checks catch what they claim to:
# "unfenced" makes every fenced write use the attempt id that holds the job now (a zombie
# attempt then writes over the newer one). Never set outside run_faults.py --canary.
CANARY_ENV = "TRAINYARD_FAULT_CANARY"

_fd: int | None = None
_fd_pid = 0
_RAISED: Any = object()  # ``describe``'s value when the call raised


def _write(*records: dict[str, Any]) -> None:
    global _fd
    try:
        if _fd is None or _fd_pid != os.getpid():
            _open()
        assert _fd is not None
        lines = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        os.write(_fd, lines.encode())
    except Exception:  # noqa: BLE001  # the ledger must never break the process
        pass


def _open() -> None:
    global _fd, _fd_pid
    path = os.environ[LEDGER_ENV]
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _fd_pid = os.getpid()


# What a call's line holds beside op, pid, t0 and t1; None: nothing worth a line (e.g. a
# claim that found no job). A batch call's: a list, one per job.
Described = dict[str, Any] | list[dict[str, Any]] | None


def _recorded(
    op: str, describe: Callable[[tuple[Any, ...], dict[str, Any], Any], Described]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a JobQueue method: call it, then append the lines ``describe`` makes of the
    call. A call that raised gets its lines too, each with ``error``."""

    def lines(described: Described, **common: Any) -> list[dict[str, Any]]:
        items = described if isinstance(described, list) else [described or {}]
        return [{"op": op, "pid": os.getpid(), **common, **item} for item in items]

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                value = method(self, *args, **kwargs)
            except BaseException as exc:
                t1 = time.monotonic()
                try:
                    fields = describe(args, kwargs, _RAISED)
                except Exception:  # noqa: BLE001
                    fields = {}
                error = f"{type(exc).__name__}: {exc}"[:300]
                _write(*[{**line, "error": error} for line in lines(fields, t0=t0, t1=t1)])
                raise
            t1 = time.monotonic()
            try:
                described = describe(args, kwargs, value)
            except Exception:  # noqa: BLE001
                described = None
            if described:
                _write(*lines(described, t0=t0, t1=t1))
            return value

        return wrapper

    return wrap


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _ids(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The (job_id, attempt_id) every fenced write takes first."""
    return {"job_id": _arg(args, kwargs, 0, "job_id"),
            "attempt_id": _arg(args, kwargs, 1, "attempt_id")}  # fmt: skip


def _claimed(worker: Any, job: dict[str, str]) -> dict[str, Any]:
    return {"job_id": job.get("id"), "attempt_id": job.get("attempt_id"),
            "attempt": int(job.get("attempt", 0)), "max_attempts": int(job.get("max_attempts", 0)),
            "worker_id": worker, "job_type": job.get("type"), "applied": True}  # fmt: skip


def _claim(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Described:
    """``claim_work`` (which ``claim`` calls): a ClaimResult; an older engine's ``claim``:
    a Claim or None."""
    worker = _arg(args, kwargs, 0, "worker_id")
    if value is _RAISED:
        return {"worker_id": worker}
    claim = getattr(value, "claim", value)
    if claim is None:
        return None  # no job was ready: not worth a line
    return _claimed(worker, claim.job)


def _claim_batch(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Described:
    worker = _arg(args, kwargs, 0, "worker_id")
    if value is _RAISED:
        return {"worker_id": worker, "batch": True}
    return [{**_claimed(worker, claim.job), "batch": True} for claim in value]


def _renew(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    out = _ids(args, kwargs)
    if value is not _RAISED:
        out.update(applied=bool(value.held), state=value.state,
                   cancel_requested=bool(value.cancel_requested))  # fmt: skip
    return out


def _report(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    out = {**_ids(args, kwargs), "kind": _arg(args, kwargs, 2, "kind")}
    if value is not _RAISED:
        out["applied"] = bool(value)
    return out


def _finish(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    model = kwargs.get("model")
    out = {**_ids(args, kwargs),
           "outcome": str(_arg(args, kwargs, 2, "outcome")),
           "error_kind": str(kwargs.get("error_kind") or ""),
           "model_id": model.get("model_id") if isinstance(model, dict) else None}  # fmt: skip
    if value is not _RAISED:
        out.update(applied=bool(value.applied), state=value.state)
    return out


def _finish_many(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Described:
    """One ``finish`` line per FinishItem."""
    out = []
    for i, item in enumerate(_arg(args, kwargs, 0, "items")):
        model = item.model
        line = {"job_id": item.job_id, "attempt_id": item.attempt_id,
                "outcome": str(item.outcome), "error_kind": str(item.error_kind or ""),
                "model_id": model.get("model_id") if isinstance(model, dict) else None,
                "batch": True}  # fmt: skip
        if value is not _RAISED:
            line.update(applied=bool(value[i].applied), state=value[i].state)
        out.append(line)
    return out


def _renew_many(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Described:
    """One ``renew`` line per (job_id, attempt_id)."""
    out = []
    for i, (job_id, attempt_id) in enumerate(_arg(args, kwargs, 0, "items")):
        line: dict[str, Any] = {"job_id": job_id, "attempt_id": attempt_id, "batch": True}
        if value is not _RAISED:
            line.update(applied=bool(value[i].held), state=value[i].state,
                        cancel_requested=bool(value[i].cancel_requested))  # fmt: skip
        out.append(line)
    return out


def _release(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    out = _ids(args, kwargs)
    if value is not _RAISED:
        out["applied"] = bool(value)
    return out


def _reap(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any] | None:
    if value is _RAISED:
        return {}
    if not value:
        return None  # nothing expired: the common case, not worth a line
    return {"reaped": [[job_id, state] for job_id, state in value]}


def _enqueue(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    out = {"idempotency_key": kwargs.get("idempotency_key"),
           "job_type": str(kwargs.get("job_type"))}  # fmt: skip
    if value is not _RAISED:
        out.update(job_id=value[0], created=bool(value[1]))
    return out


def _enqueue_many(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Described:
    """One ``enqueue`` line per Submission."""
    out = []
    for i, sub in enumerate(_arg(args, kwargs, 0, "submissions")):
        line: dict[str, Any] = {"idempotency_key": sub.idempotency_key,
                                "job_type": str(sub.job_type), "batch": True}  # fmt: skip
        if value is not _RAISED:
            line.update(job_id=value[i][0], created=bool(value[i][1]))
        out.append(line)
    return out


def _cancel(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> dict[str, Any]:
    out = {"job_id": _arg(args, kwargs, 0, "job_id")}
    if value is not _RAISED:
        out.update(found=value.found, state=value.state, changed=value.changed)
    return out


def _unfenced(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, job_id: str, attempt_id: str, *args: Any, **kwargs: Any) -> Any:
        current = self.redis.hget(self.keys.job(job_id), "attempt_id")
        return method(self, job_id, current or attempt_id, *args, **kwargs)

    return wrapper


def _unfenced_many(method: Callable[..., Any]) -> Callable[..., Any]:
    """``_unfenced`` for ``finish_many`` (FinishItems) and ``renew_many`` (pairs)."""

    @functools.wraps(method)
    def wrapper(self: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        fixed: list[Any] = []
        for item in items:
            job_id = item[0] if isinstance(item, tuple) else item.job_id
            current = self.redis.hget(self.keys.job(job_id), "attempt_id")
            if isinstance(item, tuple):
                fixed.append((job_id, current or item[1]))
            else:
                fixed.append(dataclasses.replace(item, attempt_id=current or item.attempt_id))
        return method(self, fixed, *args, **kwargs)

    return wrapper


def _install_queue() -> None:
    from trainyard.engine import JobQueue

    if os.environ.get(CANARY_ENV) == "unfenced":
        for name in ("renew", "report", "finish", "release"):
            setattr(JobQueue, name, _unfenced(getattr(JobQueue, name)))
        for name in ("finish_many", "renew_many"):
            if hasattr(JobQueue, name):
                setattr(JobQueue, name, _unfenced_many(getattr(JobQueue, name)))

    # ``claim`` calls ``claim_work`` (on an engine that has it): wrapping both would write
    # two lines per claim. Every line's op names the single call, so the checks need not
    # know whether a job was claimed, renewed or ended alone or in a batch.
    claim = "claim_work" if hasattr(JobQueue, "claim_work") else "claim"
    for name, op, describe in (
        (claim, "claim", _claim),
        ("claim_batch", "claim", _claim_batch),
        ("renew", "renew", _renew),
        ("renew_many", "renew", _renew_many),
        ("report", "report", _report),
        ("finish", "finish", _finish),
        ("finish_many", "finish", _finish_many),
        ("release", "release", _release),
        ("reap", "reap", _reap),
        ("enqueue", "enqueue", _enqueue),
        ("enqueue_many", "enqueue", _enqueue_many),
        ("cancel", "cancel", _cancel),
    ):
        if hasattr(JobQueue, name):
            setattr(JobQueue, name, _recorded(op, describe)(getattr(JobQueue, name)))


class _RecordingRuntime:
    """A runtime module whose ``train`` leaves a line when a run completes (or raises)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def train(self, request: Any, ctx: Any) -> Any:
        ids = {"job_id": getattr(ctx, "_job_id", None),
               "attempt_id": getattr(ctx, "_attempt_id", None)}  # fmt: skip
        t0 = time.monotonic()
        try:
            outcome = self._module.train(request, ctx)
        except BaseException as exc:
            _write({"op": "train", "pid": os.getpid(), "t0": t0, "t1": time.monotonic(), **ids,
                    "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})  # fmt: skip
            raise
        _write({"op": "train", "pid": os.getpid(), "t0": t0, "t1": time.monotonic(), **ids,
                "ok": True})  # fmt: skip
        return outcome


def _install_child() -> None:
    """Only in a training child (``python -m trainyard_worker.child``): child.py binds
    ``load_runtime_module`` when it is imported, which is after this module ran."""
    if "trainyard_worker.child" not in getattr(sys, "orig_argv", []):
        return
    from trainyard_worker import runtimes

    load = runtimes.load_runtime_module

    def load_recording(framework: str) -> Any:
        return _RecordingRuntime(load(framework))

    runtimes.load_runtime_module = load_recording


if os.environ.get(LEDGER_ENV):
    for _install in (_install_queue, _install_child):
        # e.g. a process without trainyard installed: it records nothing, and runs on.
        with contextlib.suppress(Exception):
            _install()
