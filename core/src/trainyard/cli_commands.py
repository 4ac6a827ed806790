"""The ``trainyard`` API commands (submit, status, logs, cancel, jobs, models, model,
workers, queues): the request bodies they send, following a job's progress, and what
they print. ``trainyard.cli`` parses the command line and calls them; ``cli_render``
formats tables and blocks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from . import cli_render as render
from .client import TERMINAL, Client, JobHandle

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "UsageError",
    "cmd_cancel",
    "cmd_dead_letters",
    "cmd_jobs",
    "cmd_logs",
    "cmd_model",
    "cmd_models",
    "cmd_queues",
    "cmd_redrive",
    "cmd_status",
    "cmd_submit_inference",
    "cmd_submit_training",
    "cmd_workers",
    "inference_body",
    "training_body",
]

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
#: How long ``submit inference --wait`` lets the API hold the request before following.
INFERENCE_HOLD_S = 60.0
#: Non-TTY follow output: at most one progress line this often (state changes always).
PLAIN_PROGRESS_EVERY_S = 2.0


# -- --body files ----------------------------------------------------------------------


def _read_body(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--body {source}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--body {source}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--body {source}: expected a JSON object")
    return body


class UsageError(Exception):
    """A command line the CLI can tell is wrong before asking the API (exit 2)."""


# -- output ----------------------------------------------------------------------------


def _out(text: str) -> None:
    if text:
        print(text)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


class _Display:
    """Shows a followed job: one redrawn line on a terminal, plain lines otherwise (state
    changes always, progress at most every few seconds). Writes to stderr so stdout keeps
    only the result."""

    def __init__(self, stream: TextIO, job_id: str) -> None:
        self.stream = stream
        self.job_id = job_id
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.state = ""
        self.progress: dict[str, Any] | None = None
        self._drawn = False
        self._last_plain = 0.0
        self._plain_pending = False

    def update(self, state: str | None = None, progress: dict[str, Any] | None = None) -> None:
        changed_state = bool(state) and state != self.state
        if state:
            self.state = state
        if progress is not None:
            self.progress = progress
        elapsed = time.monotonic() - self.started
        line = render.progress_line(self.state or "?", self.progress, elapsed)
        if self.tty:
            width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
            if len(line) > width:
                line = line[: width - 1] + "…"
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if changed_state or now - self._last_plain >= PLAIN_PROGRESS_EVERY_S:
            self.stream.write(f"{self.job_id}  {line}\n")
            self.stream.flush()
            self._last_plain = now
            self._plain_pending = False
        else:
            self._plain_pending = True

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _follow(handle: JobHandle, status: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Follow a job's events until it ends, drawing progress; its final status."""
    # The event stream replays the job's history first, so the display starts from it
    # rather than from ``status`` (which would then appear to go backwards).
    display = _Display(sys.stderr, handle.id)
    try:
        if status.get("status") not in TERMINAL:
            for event in handle.events(timeout=timeout):
                data = event["data"]
                if event["kind"] == "state":
                    display.update(state=str(data.get("state")))
                elif event["kind"] == "progress":
                    display.update(progress=data)
        final = handle.status()
        display.update(str(final.get("status")), final.get("progress"))
    finally:
        display.finish()
    return final


def _finish_followed(args: argparse.Namespace, final: dict[str, Any]) -> int:
    if args.json:
        _print_json(final)
    else:
        _out(render.status_block(final))
    if final.get("status") == "succeeded":
        return EXIT_OK
    what = final.get("error") or f"the job ended {final.get('status')}"
    print(f"job {final.get('job_id')} {final.get('status')}: {what}", file=sys.stderr)
    return EXIT_JOB_FAILED


def _wait_timeout(args: argparse.Namespace) -> float:
    return float(args.wait_timeout) if args.wait_timeout else 1e9


# -- commands --------------------------------------------------------------------------

_TRAINING_FLAGS = {
    "model_type": "model_type",
    "data_path": "data_path",
    "description": "description",
    "requires_gpu": "requires_gpu",
    "framework_override": "framework_override",
    "model_name": "model_name",
    "label_column": "label_column",
    "priority": "priority",
    "timeout": "timeout_s",
    "max_attempts": "max_attempts",
    "idempotency_key": "idempotency_key",
}
_INFERENCE_FLAGS = {
    "model_id": "model_id",
    "priority": "priority",
    "timeout": "timeout_s",
    "max_attempts": "max_attempts",
    "idempotency_key": "idempotency_key",
}


def training_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /jobs/training`` body: ``--body`` verbatim, with any flags given on top."""
    body = _read_body(args.body) if args.body else {}
    for flag, field in _TRAINING_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            body[field] = value
    if args.hp:
        given = body.get("hyperparameters")
        body["hyperparameters"] = {**(given if isinstance(given, dict) else {}), **dict(args.hp)}
    if not args.body:
        missing = [f"--{f.replace('_', '-')}" for f in ("model_type", "data_path") if f not in body]
        if missing:
            raise UsageError(f"submit training needs {' and '.join(missing)} (or --body FILE)")
        body.setdefault("hyperparameters", {})
    return body


def inference_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /jobs/inference`` body: ``--body`` verbatim, with any flags given on top."""
    body = _read_body(args.body) if args.body else {}
    for flag, field in _INFERENCE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            body[field] = value
    if args.input:
        body["input_data"] = args.input[0] if len(args.input) == 1 else list(args.input)
    if args.param:
        given = body.get("parameters")
        body["parameters"] = {**(given if isinstance(given, dict) else {}), **dict(args.param)}
    if not args.body:
        missing = [
            f
            for f, field in (("--model-id", "model_id"), ("--input", "input_data"))
            if field not in body
        ]
        if missing:
            raise UsageError(f"submit inference needs {' and '.join(missing)} (or --body FILE)")
        body.setdefault("parameters", {})
    return body


def _submitted(args: argparse.Namespace, handle: JobHandle) -> int:
    status = handle.submitted or handle.status()
    args.job_id = handle.id  # for the Ctrl-C note
    if args.wait and status.get("status") not in TERMINAL:
        return _finish_followed(args, _follow(handle, status, _wait_timeout(args)))
    if args.wait:
        return _finish_followed(args, status)
    if args.json:
        _print_json(status)
        return EXIT_OK
    line = f"job {handle.id} {status.get('status')} (runtime {status.get('runtime')})"
    _out(line)
    if status.get("waiting_reason"):
        _out(f"waiting: {status['waiting_reason']}")
    _out(f"follow it: trainyard status {handle.id} --follow")
    return EXIT_OK


def cmd_submit_training(client: Client, args: argparse.Namespace) -> int:
    handle = client.submit("training", training_body(args))
    return _submitted(args, handle)


def cmd_submit_inference(client: Client, args: argparse.Namespace) -> int:
    hold = min(INFERENCE_HOLD_S, _wait_timeout(args)) if args.wait else None
    handle = client.submit("inference", inference_body(args), wait=hold)
    return _submitted(args, handle)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    handle = client.job(args.job_id)
    status = handle.status()
    if args.follow:
        return _finish_followed(args, _follow(handle, status, _wait_timeout(args)))
    if args.json:
        _print_json(status)
    else:
        _out(render.status_block(status))
    return EXIT_OK


def _log_lines(handle: JobHandle, after: str = "0") -> Iterator[dict[str, Any]]:
    page = 1000
    while True:
        lines = handle.logs(after=after, limit=page)
        yield from lines
        if len(lines) < page:
            return
        after = str(lines[-1]["id"])


def _print_log(args: argparse.Namespace, line: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(line, default=str), flush=True)
    else:
        print(render.log_text(line, args.timestamps), flush=True)


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    handle = client.job(args.job_id)
    if not args.follow:
        lines = list(_log_lines(handle))
        if args.json:
            _print_json({"job_id": args.job_id, "lines": lines})
        else:
            for line in lines:
                _print_log(args, line)
        return EXIT_OK
    last = "0"
    for line in _log_lines(handle):
        _print_log(args, line)
        last = str(line.get("id") or last)
    if handle.status().get("status") in TERMINAL:
        return EXIT_OK
    for event in handle.events(after=last, timeout=_wait_timeout(args)):
        if event["kind"] == "log":
            line = {"id": event["id"], "time": render.time_of_id(event["id"]), **event["data"]}
            _print_log(args, line)
    return EXIT_OK


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    status = client.job(args.job_id).cancel()
    if args.json:
        _print_json(status)
    elif status.get("status") in TERMINAL:
        _out(f"job {args.job_id} {status.get('status')}")
    else:
        _out(
            f"job {args.job_id}: cancel requested (it is {status.get('status')}; its worker "
            "stops it within a lease renewal)"
        )
    return EXIT_OK


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(state=args.state, runtime=args.runtime, job_type=args.type, limit=args.limit)
    if args.json:
        _print_json({"jobs": jobs})
    else:
        _out(render.table(render.JOB_COLUMNS, render.job_rows(jobs), empty="no jobs"))
    return EXIT_OK


def cmd_dead_letters(client: Client, args: argparse.Namespace) -> int:
    jobs = client.dead_letters(
        runtime=args.runtime,
        job_type=args.type,
        redriven=False if args.not_redriven else None,
        limit=args.limit,
    )
    if args.json:
        _print_json({"jobs": jobs})
    else:
        _out(render.table(render.JOB_COLUMNS, render.job_rows(jobs), empty="no dead jobs"))
    return EXIT_OK


def cmd_redrive(client: Client, args: argparse.Namespace) -> int:
    if not args.all:
        if args.runtime or args.type or args.error_kind:
            raise UsageError("--runtime, --type and --error-kind go with --all")
        new = client.job(args.job_id).redrive()
        if args.json:
            _print_json(new.status())
        else:
            _out(f"job {args.job_id} redriven as job {new.id}")
        return EXIT_OK
    done = client.redrive_dead_letters(
        runtime=args.runtime, job_type=args.type, error_kind=args.error_kind, limit=args.limit
    )
    if args.json:
        _print_json(done)
        return EXIT_OK
    for pair in done.get("redriven", []):
        _out(f"job {pair['job_id']} redriven as job {pair['new_job_id']}")
    count = len(done.get("redriven", []))
    more = " (more are left: run it again)" if done.get("more") else ""
    _out(f"{count} dead job{'s' if count != 1 else ''} redriven{more}")
    return EXIT_OK


def cmd_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        _print_json({"models": models})
    else:
        _out(render.table(render.MODEL_COLUMNS, render.model_rows(models), empty="no models"))
    return EXIT_OK


def cmd_model(client: Client, args: argparse.Namespace) -> int:
    model = client.model(args.model_id)
    if args.json:
        _print_json(model)
    else:
        _out(render.model_block(model))
    return EXIT_OK


def cmd_workers(client: Client, args: argparse.Namespace) -> int:
    workers = client.workers()
    if args.json:
        _print_json({"workers": workers})
    else:
        empty = "no live workers (start one with ./scripts/run_local.sh)"
        _out(render.table(render.WORKER_COLUMNS, render.worker_rows(workers), empty=empty))
    return EXIT_OK


def cmd_queues(client: Client, args: argparse.Namespace) -> int:
    queues = client.queues()
    if args.json:
        _print_json(queues)
        return EXIT_OK
    _out(render.table(render.QUEUE_COLUMNS, render.queue_rows(queues), empty="no queues"))
    by_state = queues.get("jobs_by_state") or {}
    if by_state:
        _out("\njobs: " + "  ".join(f"{k}={v}" for k, v in by_state.items()))
    return EXIT_OK
