"""The ``trainyard`` command line.

``trainyard up`` starts the whole system locally (``scripts/run_local.sh`` calls it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
