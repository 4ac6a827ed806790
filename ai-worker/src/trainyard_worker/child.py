"""A training job's child process: ``python -m trainyard_worker.child SPEC.json``.

Runs in its own process group, started by the supervisor. It imports the framework,
trains, writes the artifact into the attempt's output folder and a small JSON result
file, and exits:

- 0: trained; the result file has metrics, label names and details;
- 3 (``EXIT_USER_ERROR``): bad data or hyperparameters; the result file has the reason;
- 4 (``data_guard.EXIT_DATA_UNAVAILABLE``): the data path is allowed but not visible on
  this worker (the supervisor checked it before the start; it vanished since): retried;
- anything else: a crash (the traceback is on stderr, which the supervisor keeps).

Progress goes straight to Redis through the fenced ``report`` script, so a stale
attempt's reports are refused; stdout and stderr become the job's log lines.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis

from trainyard.connection import connect
from trainyard.datapaths import DataPathError
from trainyard.engine import JobQueue
from trainyard.keys import KeySchema

from .data_guard import EXIT_DATA_UNAVAILABLE, DataUnavailable, locate_data
from .processes import die_with_parent
from .protocol import EXIT_OK, EXIT_USER_ERROR, TrainingResult, TrainingSpec
from .runtimes import load_runtime_module
from .runtimes.base import BaseModelRef, ModelMeta, TrainRequest, UserError
from .runtimes.reporting import fraction_done

__all__ = ["EXIT_USER_ERROR", "MAX_ERROR_CHARS", "QueueTrainContext", "main", "run", "run_file"]


class _Timing:
    """``elapsed_s`` since the child started, ``fraction`` of the training done, and
    ``eta_s`` from the training's own pace: its clock starts at the first event that has a
    fraction (the runtimes send one when training starts), so the framework import, data
    loading and model building never count as training time (they made BERT's first ETA
    168 s for a 12 s job)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._train_start: tuple[float, float] | None = None  # (time, fraction)

    def fields(self, data: Mapping[str, Any]) -> dict[str, float]:
        now = self._clock()
        out = {"elapsed_s": round(now - self._started, 1)}
        fraction = data.get("fraction")
        if not isinstance(fraction, float | int) or isinstance(fraction, bool):
            fraction = fraction_done(
                data.get("epoch"), data.get("epochs"), data.get("step"), data.get("steps")
            )
        if fraction is None:
            return out
        out["fraction"] = float(fraction)
        if self._train_start is None:
            self._train_start = (now, float(fraction))
        t0, f0 = self._train_start
        if fraction >= 1:
            out["eta_s"] = 0.0
        elif fraction > f0:
            out["eta_s"] = round((now - t0) * (1 - fraction) / (fraction - f0), 1)
        return out


class QueueTrainContext:
    """Reports progress to the job's event stream; logs go to stdout (the job log)."""

    def __init__(self, queue: JobQueue, job_id: str, attempt_id: str) -> None:
        self._queue = queue
        self._job_id = job_id
        self._attempt_id = attempt_id
        self._timing = _Timing()

    def progress(self, **fields: Any) -> None:
        data = {k: v for k, v in fields.items() if v is not None}
        data.update(self._timing.fields(data))
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


_OUT_OF_MEMORY = (
    "the job ran out of memory; lower hyperparameters.batch_size (or image_size / "
    "max_length / the model's size) or give the worker more memory"
)


def _base_model(queue: JobQueue, model_store: Path, model_id: str | None) -> BaseModelRef | None:
    """The earlier model a job fine-tunes from (``base_model_id``), checked to exist here."""
    if not model_id:
        return None
    record = queue.get_model(model_id)
    if record is None:
        raise UserError(f"base_model_id: no model {model_id!r}")
    model_dir = model_store / str(record["artifact"])
    if not model_dir.is_dir():
        raise FileNotFoundError(f"base model artifact not found at {model_dir} on this worker")
    meta = ModelMeta(
        model_id=model_id,
        model_type=str(record["model_type"]),
        label_names=list(record["label_names"]),
        details=dict(record.get("details") or {}),
    )
    return BaseModelRef(model_dir, meta)


def _is_out_of_memory(exc: BaseException) -> bool:
    # MemoryError (Python, NumPy, a JOB_MEMORY_MB limit), torch's OutOfMemoryError and CPU
    # allocator errors, TF's ResourceExhaustedError. Retrying on the same worker would fail
    # the same way, so these fail the job as a user-sized problem with that reason.
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        marker in text
        for marker in ("outofmemory", "out of memory", "can't allocate memory", "resourceexhausted")
    )


MAX_ERROR_CHARS = 2000


def _user_error(result_path: Path, message: str) -> int:
    # Messages quote what the user sent (a header row, a cell): a 10 MB line must not
    # become a 10 MB job record and event.
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    TrainingResult(ok=False, error=message).write(result_path)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run(spec: TrainingSpec | Mapping[str, Any]) -> int:
    """Train as ``spec`` says; the exit code (see the module's docstring)."""
    if not isinstance(spec, TrainingSpec):
        spec = TrainingSpec.from_wire(spec)
    result_path = Path(spec.result_path)
    request = spec.request
    queue = JobQueue(connect(spec.redis_url), KeySchema(spec.namespace))
    ctx = QueueTrainContext(queue, spec.job_id, spec.attempt_id)
    try:
        data_file = locate_data(Path(spec.data_root), request.data_path)
    except DataUnavailable as exc:
        # Not the user's fault: this worker's view of the data (see data_guard).
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_DATA_UNAVAILABLE
    except DataPathError as exc:
        return _user_error(result_path, str(exc))
    try:
        if data_file.is_dir() and spec.task in ("tabular", "text"):
            raise UserError(f"data_path {request.data_path!r} is a folder; expected a CSV file")
        runtime = load_runtime_module(spec.framework)
        base = _base_model(queue, Path(spec.model_store), request.base_model_id)
        train_request = TrainRequest(
            model_type=request.model_type,
            data_file=data_file,
            hyperparameters=dict(request.hyperparameters),
            out_dir=Path(spec.out_dir),
            label_column=request.label_column,
            text_column=request.text_column,
            device=spec.device,
            data_root=Path(spec.data_root),
            base_model=base,
        )
        outcome = runtime.train(train_request, ctx)
    except (UserError, DataPathError) as exc:
        return _user_error(result_path, str(exc))
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        return _user_error(result_path, f"{_OUT_OF_MEMORY} ({type(exc).__name__}: {exc})"[:2000])
    TrainingResult(
        ok=True,
        metrics=outcome.metrics,
        label_names=outcome.label_names,
        details=outcome.details,
    ).write(result_path)
    return EXIT_OK


def run_file(spec_path: Path) -> int:
    """A training child's whole life from its spec file: bound to the supervisor's life,
    its memory limited, trained. A fresh interpreter (``main``) and a child forked by the
    fork server both start here."""
    spec = TrainingSpec.read(spec_path)
    die_with_parent(spec.supervisor_pid)
    if spec.memory_limit_mb:
        # Heap and anonymous mappings beyond this fail with MemoryError / allocator errors
        # (a failed job with that reason) instead of waking the kernel's OOM killer.
        limit = spec.memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return run(spec)


def main() -> int:
    return run_file(Path(sys.argv[1]))


if __name__ == "__main__":
    raise SystemExit(main())
