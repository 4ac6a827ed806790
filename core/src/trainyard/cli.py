"""The ``trainyard`` command line.

``trainyard up`` starts the whole system locally (``scripts/run_local.sh`` calls it); the
other commands talk to a running backend over HTTP (``--url``, default ``$TRAINYARD_URL``
or http://localhost:8000):

    trainyard submit training --model-type random_forest --data-path /data/tabular_data.csv \\
        --hp n_estimators=100 --hp max_depth=10 --wait
    trainyard submit inference --model-id MODEL --input "5.1,3.5,1.4,0.2" --wait
    trainyard status JOB_ID [--follow]      trainyard logs JOB_ID [--follow]
    trainyard cancel JOB_ID                 trainyard jobs [--state S] [--runtime R]
    trainyard models | model MODEL_ID | workers | queues

``--json`` prints the API's JSON instead of tables. Exit status: 0 done (a followed job
succeeded), 1 a followed job did not succeed, 2 the API refused the request or is not
reachable (or the command line is wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from . import cli_render as render
from .client import TERMINAL, Client, JobHandle, TrainyardError

__all__ = ["build_parser", "main", "parse_key_value"]

DEFAULT_URL = "http://localhost:8000"
EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
#: How long ``submit inference --wait`` lets the API hold the request before following.
INFERENCE_HOLD_S = 60.0
#: Non-TTY follow output: at most one progress line this often (state changes always).
PLAIN_PROGRESS_EVERY_S = 2.0


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _cmd_up(args: argparse.Namespace) -> int:
    from .up import UpConfig, run_up

    root = Path(args.repo_root) if args.repo_root else _repo_root()
    workers: dict[str, Path] = {}
    for item in args.worker or [f"sklearn={root / 'ai-worker/.venv/bin/python'}"]:
        runtime, sep, python = item.partition("=")
        if not sep:
            raise SystemExit(f"--worker wants RUNTIME=PYTHON, got {item!r}")
        workers[runtime] = Path(python)
    cfg = UpConfig(
        repo_root=root,
        backend_python=Path(args.backend_python or root / "backend/.venv/bin/python"),
        workers=workers,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url or os.environ.get("REDIS_URL") or None,
        redis_port=args.redis_port,
        var_dir=Path(args.var_dir) if args.var_dir else None,
        data_root=Path(args.data_root) if args.data_root else None,
    )
    return run_up(cfg)


# -- argument helpers ------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: keep them as strings


def parse_value(text: str) -> Any:
    """A ``--hp``/``--param`` value: JSON when it parses (numbers, booleans, null, lists),
    else the text itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_key_value(item: str) -> tuple[str, Any]:
    """``key=value`` for ``--hp``/``--param``; an argparse type."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    return key, parse_value(value)


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return convert


def _pairs(items: list[tuple[str, Any]] | None) -> dict[str, Any] | None:
    return dict(items) if items else None


def _read_body(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"--body {source}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise _UsageError(f"--body {source}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _UsageError(f"--body {source}: expected a JSON object")
    return body


class _UsageError(Exception):
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
            raise _UsageError(f"submit training needs {' and '.join(missing)} (or --body FILE)")
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
            raise _UsageError(f"submit inference needs {' and '.join(missing)} (or --body FILE)")
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


def _cmd_submit_training(client: Client, args: argparse.Namespace) -> int:
    handle = client.submit("training", training_body(args))
    return _submitted(args, handle)


def _cmd_submit_inference(client: Client, args: argparse.Namespace) -> int:
    hold = min(INFERENCE_HOLD_S, _wait_timeout(args)) if args.wait else None
    handle = client.submit("inference", inference_body(args), wait=hold)
    return _submitted(args, handle)


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
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


def _cmd_logs(client: Client, args: argparse.Namespace) -> int:
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


def _cmd_cancel(client: Client, args: argparse.Namespace) -> int:
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


def _cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(state=args.state, runtime=args.runtime, job_type=args.type, limit=args.limit)
    if args.json:
        _print_json({"jobs": jobs})
    else:
        _out(render.table(render.JOB_COLUMNS, render.job_rows(jobs), empty="no jobs"))
    return EXIT_OK


def _cmd_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        _print_json({"models": models})
    else:
        _out(render.table(render.MODEL_COLUMNS, render.model_rows(models), empty="no models"))
    return EXIT_OK


def _cmd_model(client: Client, args: argparse.Namespace) -> int:
    model = client.model(args.model_id)
    if args.json:
        _print_json(model)
    else:
        _out(render.model_block(model))
    return EXIT_OK


def _cmd_workers(client: Client, args: argparse.Namespace) -> int:
    workers = client.workers()
    if args.json:
        _print_json({"workers": workers})
    else:
        empty = "no live workers (start one with ./scripts/run_local.sh)"
        _out(render.table(render.WORKER_COLUMNS, render.worker_rows(workers), empty=empty))
    return EXIT_OK


def _cmd_queues(client: Client, args: argparse.Namespace) -> int:
    queues = client.queues()
    if args.json:
        _print_json(queues)
        return EXIT_OK
    _out(render.table(render.QUEUE_COLUMNS, render.queue_rows(queues), empty="no queues"))
    by_state = queues.get("jobs_by_state") or {}
    if by_state:
        _out("\njobs: " + "  ".join(f"{k}={v}" for k, v in by_state.items()))
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------


def _add_submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--body",
        metavar="FILE",
        help="send this JSON body (a file, or - for stdin); flags given too override its fields",
    )
    p.add_argument("--priority", choices=["high", "normal", "low"])
    p.add_argument("--timeout", type=_positive(float), metavar="S", help="run timeout (timeout_s)")
    p.add_argument("--max-attempts", type=_positive(int), metavar="N")
    p.add_argument("--idempotency-key", metavar="K")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument(
        "--wait-timeout",
        type=_positive(float),
        metavar="S",
        help="with --wait: give up following after S seconds (exit 1); default no limit",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    env_url = os.environ.get("TRAINYARD_URL") or DEFAULT_URL
    parser.add_argument(
        "--url", default=env_url, help=f"the backend (default $TRAINYARD_URL or {DEFAULT_URL})"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TRAINYARD_API_KEY") or None,
        help="sent as a bearer token (default $TRAINYARD_API_KEY)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON, not tables")
    # The same options after the subcommand (``trainyard jobs --json``); SUPPRESS keeps a
    # subcommand that does not name them from resetting the values given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--api-key", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON, not tables",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start Valkey (embedded), the backend and workers locally")
    up.add_argument("--repo-root")
    up.add_argument("--backend-python")
    up.add_argument(
        "--worker",
        action="append",
        metavar="RUNTIME=PYTHON",
        help="a worker to start: its runtime and its environment's python",
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--redis-url", help="use this Redis instead of an embedded Valkey")
    up.add_argument("--redis-port", type=int, default=6390, help="port of the embedded Valkey")
    up.add_argument("--var-dir", help="where Valkey data, models and scratch go (default ./var)")
    up.add_argument("--data-root", help="the data root, /data/... in requests (default ./data)")
    up.set_defaults(func=_cmd_up)

    submit = sub.add_parser("submit", help="submit a training or inference job")
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")
    train = kinds.add_parser("training", parents=[common], help="submit a training job")
    train.add_argument("--model-type", help="e.g. random_forest, svm (see GET /routing)")
    train.add_argument("--data-path", help="a path in the data root, e.g. /data/tabular_data.csv")
    train.add_argument(
        "--hp",
        action="append",
        type=parse_key_value,
        metavar="KEY=VALUE",
        help="a hyperparameter (repeat); VALUE is JSON when it parses",
    )
    train.add_argument("--framework-override", metavar="RUNTIME", help="e.g. sklearn")
    train.add_argument("--requires-gpu", action="store_true", default=None)
    train.add_argument("--model-name", help="the model_id to register the model under")
    train.add_argument("--label-column", metavar="C")
    train.add_argument("--description", metavar="D")
    _add_submit_options(train)
    train.set_defaults(func=_cmd_submit_training, api=True)

    infer = kinds.add_parser("inference", parents=[common], help="submit an inference job")
    infer.add_argument("--model-id")
    infer.add_argument(
        "--input",
        action="append",
        metavar="DATA",
        help="an input, e.g. a CSV row of feature values (repeat for a batch)",
    )
    infer.add_argument(
        "--param",
        action="append",
        type=parse_key_value,
        metavar="KEY=VALUE",
        help="an inference parameter (repeat), e.g. probability=true",
    )
    _add_submit_options(infer)
    infer.set_defaults(func=_cmd_submit_inference, api=True)

    status = sub.add_parser("status", parents=[common], help="a job's status")
    status.add_argument("job_id")
    status.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow it until it ends (exit 1 unless it succeeds)",
    )
    status.add_argument("--wait-timeout", type=_positive(float), metavar="S")
    status.set_defaults(func=_cmd_status, api=True)

    logs = sub.add_parser("logs", parents=[common], help="a job's log lines")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show time and stream")
    logs.add_argument("--wait-timeout", type=_positive(float), metavar="S")
    logs.set_defaults(func=_cmd_logs, api=True)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=_cmd_cancel, api=True)

    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--state", help="queued, running, retrying, succeeded, failed, ...")
    jobs.add_argument("--runtime", help="e.g. sklearn")
    jobs.add_argument("--type", help="training or inference")
    jobs.add_argument("--limit", type=_positive(int), default=50)
    jobs.set_defaults(func=_cmd_jobs, api=True)

    models = sub.add_parser("models", parents=[common], help="the model registry")
    models.set_defaults(func=_cmd_models, api=True)
    model = sub.add_parser("model", parents=[common], help="one model")
    model.add_argument("model_id")
    model.set_defaults(func=_cmd_model, api=True)
    workers = sub.add_parser("workers", parents=[common], help="live workers")
    workers.set_defaults(func=_cmd_workers, api=True)
    queues = sub.add_parser("queues", parents=[common], help="queue depth per runtime")
    queues.set_defaults(func=_cmd_queues, api=True)
    return parser


def _run_api(args: argparse.Namespace, transport: httpx.BaseTransport | None) -> int:
    """Run an API command; API refusals and an unreachable backend are exit 2."""
    url = str(args.url)
    func: Callable[[Client, argparse.Namespace], int] = args.func
    try:
        with Client(url, api_key=args.api_key, transport=transport) as client:
            return func(client, args)
    except TrainyardError as exc:
        print(f"error: {exc.message or exc}", file=sys.stderr)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        print(
            f"error: the Trainyard backend is not reachable at {url}.\n"
            "Start it with ./scripts/run_local.sh (or `trainyard up`), or point --url or "
            "TRAINYARD_URL at a running one.",
            file=sys.stderr,
        )
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        print(f"error: talking to the backend at {url} failed: {exc}", file=sys.stderr)
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        job = getattr(args, "job_id", None)
        note = f"; job {job} is not cancelled (trainyard cancel {job})" if job else ""
        print(f"\nstopped{note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """The ``trainyard`` entry point. ``transport`` replaces the HTTP transport (tests)."""
    args = build_parser().parse_args(argv)
    if not getattr(args, "api", False):
        return int(args.func(args))
    try:
        return _run_api(args, transport)
    except BrokenPipeError:  # `trainyard jobs | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
