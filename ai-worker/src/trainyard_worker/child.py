"""A training job's child process: ``python -m trainyard_worker.child SPEC.json``.

Runs in its own process group, started by the supervisor. It imports the framework,
trains, writes the artifact into the attempt's output folder and a small JSON result
file, and exits:

- 0: trained; the result file has metrics, label names and details;
- 3 (``EXIT_USER_ERROR``): bad data or hyperparameters; the result file has the reason;
- anything else: a crash (the traceback is on stderr, which the supervisor keeps).

Progress goes straight to Redis through the fenced ``report`` script, so a stale
attempt's reports are refused; stdout and stderr become the job's log lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import redis

from trainyard.connection import connect
from trainyard.datapaths import DataPathError, resolve_data_path
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema

from .processes import die_with_parent
from .runtimes import load_runtime_module
from .runtimes.base import TrainRequest, UserError

__all__ = ["EXIT_USER_ERROR", "QueueTrainContext", "main"]

EXIT_USER_ERROR = 3


class QueueTrainContext:
    """Reports progress to the job's event stream; logs go to stdout (the job log)."""

    def __init__(self, queue: JobQueue, job_id: str, attempt_id: str) -> None:
        self._queue = queue
        self._job_id = job_id
        self._attempt_id = attempt_id

    def progress(self, **fields: Any) -> None:
        data = {k: v for k, v in fields.items() if v is not None}
        try:
            held = self._queue.report(self._job_id, self._attempt_id, "progress", data)
        except redis.RedisError as exc:
            # Progress is best effort: a Redis outage must not crash the training. The
            # supervisor's lease decides whether this attempt still owns the job.
            print(f"progress not recorded (queue unavailable: {exc})", file=sys.stderr)
            return
        if not held:
            # This attempt no longer holds the job: stop working on it.
            raise SystemExit("this attempt lost its job (cancelled, timed out or reaped)")

    def log(self, line: str) -> None:
        print(line, flush=True)


def _write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(path)


def run(spec: dict[str, Any]) -> int:
    result_path = Path(spec["result_path"])
    request = spec["request"]
    queue = JobQueue(connect(spec["redis_url"]), KeySchema(spec["namespace"]))
    ctx = QueueTrainContext(queue, spec["job_id"], spec["attempt_id"])
    try:
        data_file = resolve_data_path(Path(spec["data_root"]), request["data_path"])
        if data_file.is_dir() and spec["task"] == "tabular":
            raise UserError(f"data_path {request['data_path']!r} is a folder; expected a CSV file")
        runtime = load_runtime_module(spec["framework"])
        train_request = TrainRequest(
            model_type=request["model_type"],
            data_file=data_file,
            hyperparameters=dict(request.get("hyperparameters") or {}),
            out_dir=Path(spec["out_dir"]),
            label_column=request.get("label_column"),
            text_column=request.get("text_column"),
        )
        outcome = runtime.train(train_request, ctx)
    except (UserError, DataPathError) as exc:
        _write_result(result_path, {"ok": False, "error": str(exc)})
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    _write_result(
        result_path,
        {
            "ok": True,
            "metrics": outcome.metrics,
            "label_names": outcome.label_names,
            "details": outcome.details,
        },
    )
    return 0


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    die_with_parent(int(spec["supervisor_pid"]))
    return run(spec)


if __name__ == "__main__":
    raise SystemExit(main())
