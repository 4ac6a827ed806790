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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from .cli_commands import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    UsageError,
    cmd_cancel,
    cmd_dead_letters,
    cmd_jobs,
    cmd_logs,
    cmd_model,
    cmd_models,
    cmd_queues,
    cmd_redrive,
    cmd_status,
    cmd_submit_inference,
    cmd_submit_training,
    cmd_workers,
)
from .client import Client, TrainyardError

__all__ = ["build_parser", "main", "parse_key_value"]

DEFAULT_URL = "http://localhost:8000"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _cmd_up(args: argparse.Namespace) -> int:
    from .embedded import EmbeddedServerError
    from .up import UpConfig, run_up

    root = Path(args.repo_root) if args.repo_root else _repo_root()
    workers: list[tuple[str, Path]] = []  # a runtime named twice gets two workers
    for item in args.worker or [f"sklearn={root / 'ai-worker/.venv/bin/python'}"]:
        runtime, sep, python = item.partition("=")
        if not sep:
            raise SystemExit(f"--worker wants RUNTIME=PYTHON, got {item!r}")
        workers.append((runtime, Path(python)))
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
    try:
        return run_up(cfg)
    except EmbeddedServerError as exc:
        print(f"trainyard up: {exc}", file=sys.stderr)
        return 2


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
    up.add_argument(
        "--var-dir",
        help="where Valkey data, models and scratch go (default: var/ in the checkout, or "
        "$TRAINYARD_HOME/var)",
    )
    up.add_argument(
        "--data-root",
        help="the data root, /data/... in requests (default: data/ in the checkout, or "
        "$TRAINYARD_HOME/data)",
    )
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
    train.set_defaults(func=cmd_submit_training, api=True)

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
    infer.set_defaults(func=cmd_submit_inference, api=True)

    status = sub.add_parser("status", parents=[common], help="a job's status")
    status.add_argument("job_id")
    status.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow it until it ends (exit 1 unless it succeeds)",
    )
    status.add_argument("--wait-timeout", type=_positive(float), metavar="S")
    status.set_defaults(func=cmd_status, api=True)

    logs = sub.add_parser("logs", parents=[common], help="a job's log lines")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show time and stream")
    logs.add_argument("--wait-timeout", type=_positive(float), metavar="S")
    logs.set_defaults(func=cmd_logs, api=True)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=cmd_cancel, api=True)

    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--state", help="queued, running, retrying, succeeded, failed, ...")
    jobs.add_argument("--runtime", help="e.g. sklearn")
    jobs.add_argument("--type", help="training or inference")
    jobs.add_argument("--limit", type=_positive(int), default=50)
    jobs.set_defaults(func=cmd_jobs, api=True)

    dead = sub.add_parser(
        "dead-letters", parents=[common], help="dead jobs (out of attempts), newest first"
    )
    dead.add_argument("--runtime", help="e.g. sklearn")
    dead.add_argument("--type", help="training or inference")
    dead.add_argument("--not-redriven", action="store_true", help="only those not redriven yet")
    dead.add_argument("--limit", type=_positive(int), default=50)
    dead.set_defaults(func=cmd_dead_letters, api=True)

    redrive = sub.add_parser("redrive", parents=[common], help="run dead jobs again, as new jobs")
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", help="one dead job")
    which.add_argument("--all", action="store_true", help="every dead job matching the filters")
    redrive.add_argument("--runtime", help="with --all: only this runtime")
    redrive.add_argument("--type", help="with --all: training or inference")
    redrive.add_argument("--error-kind", help="with --all: e.g. lost, killed, crashed")
    redrive.add_argument(
        "--limit", type=_positive(int), default=100, help="with --all: at most this many"
    )
    redrive.set_defaults(func=cmd_redrive, api=True)

    models = sub.add_parser("models", parents=[common], help="the model registry")
    models.set_defaults(func=cmd_models, api=True)
    model = sub.add_parser("model", parents=[common], help="one model")
    model.add_argument("model_id")
    model.set_defaults(func=cmd_model, api=True)
    workers = sub.add_parser("workers", parents=[common], help="live workers")
    workers.set_defaults(func=cmd_workers, api=True)
    queues = sub.add_parser("queues", parents=[common], help="queue depth per runtime")
    queues.set_defaults(func=cmd_queues, api=True)
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
    except UsageError as exc:
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
