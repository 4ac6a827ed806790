"""Plain-text rendering for the ``trainyard`` command line: tables, status blocks, the
progress line. Pure functions of the API's JSON, no I/O, no dependencies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "JOB_COLUMNS",
    "MODEL_COLUMNS",
    "QUEUE_COLUMNS",
    "WORKER_COLUMNS",
    "bar",
    "cell",
    "duration_text",
    "job_rows",
    "kv_block",
    "log_text",
    "model_block",
    "model_rows",
    "progress_fraction",
    "progress_line",
    "progress_text",
    "queue_rows",
    "short_time",
    "size_text",
    "status_block",
    "table",
    "time_of_id",
    "worker_rows",
]

JOB_COLUMNS = ["JOB ID", "TYPE", "RUNTIME", "STATUS", "ATTEMPT", "CREATED", "MODEL", "NOTE"]
MODEL_COLUMNS = ["MODEL ID", "TYPE", "RUNTIME", "ACCURACY", "SIZE", "CREATED", "JOB ID"]
WORKER_COLUMNS = [
    "WORKER ID",
    "RUNTIME",
    "FRAMEWORK",
    "DEVICE",
    "HOST",
    "PID",
    "STATE",
    "JOB",
    "MODELS",
    "LAST SEEN",
]
QUEUE_COLUMNS = ["RUNTIME", "HIGH", "NORMAL", "LOW", "TOTAL", "WORKERS"]


def cell(value: Any, width: int | None = None) -> str:
    """One value as table text: ``-`` for nothing, compact JSON for containers, and cut to
    ``width`` characters with an ellipsis."""
    if value is None or value == "":
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    text = " ".join(text.split())  # one line per cell
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return text


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "") -> str:
    """Left-aligned columns separated by two spaces; trailing spaces stripped. With no rows,
    ``empty`` (if given) instead of a lone header."""
    if not rows and empty:
        return empty
    texts = [[cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in texts:
        for i, text in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(text))
    lines = []
    for row in [list(columns), *texts]:
        parts = [text.ljust(widths[i]) for i, text in enumerate(row[: len(widths)])]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def kv_block(pairs: Sequence[tuple[str, Any]]) -> str:
    """``key: value`` lines with the values aligned; pairs whose value is None are left out."""
    kept = [(k, v) for k, v in pairs if v is not None and v != "" and v != [] and v != {}]
    if not kept:
        return ""
    width = max(len(k) for k, _ in kept) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {cell(v)}" for k, v in kept)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def short_time(value: Any) -> str | None:
    """An API timestamp as local ``YYYY-MM-DD HH:MM:SS`` (None if absent or unreadable)."""
    parsed = _parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S") if parsed else None


def duration_text(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _duration(status: Mapping[str, Any]) -> str | None:
    start, end = _parse_time(status.get("started_at")), _parse_time(status.get("finished_at"))
    if start and end:
        return duration_text((end - start).total_seconds())
    return None


def size_text(size: Any) -> str | None:
    if not isinstance(size, int | float) or isinstance(size, bool):
        return None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return None  # pragma: no cover - the loop always returns


# -- progress --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def progress_fraction(progress: Mapping[str, Any] | None) -> float | None:
    """How far along a progress event says the job is (0..1), from step/steps, else
    epoch/epochs; None when it does not say."""
    if not progress:
        return None
    for done_key, total_key in (("step", "steps"), ("epoch", "epochs"), ("step", "total")):
        done, total = _number(progress.get(done_key)), _number(progress.get(total_key))
        if done is not None and total:
            return min(max(done / total, 0.0), 1.0)
    return None


def bar(fraction: float, width: int = 20) -> str:
    """``[#######.............]``"""
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_text(progress: Mapping[str, Any] | None) -> str:
    """``epoch 1/3  step 40/100  loss 0.1234  eta 12s  <message>`` from a progress event."""
    if not progress:
        return ""
    parts: list[str] = []
    for key, total_key in (("epoch", "epochs"), ("step", "steps")):
        done = progress.get(key)
        if done is None:
            continue
        total = progress.get(total_key) or (progress.get("total") if key == "step" else None)
        parts.append(f"{key} {cell(done)}/{cell(total)}" if total else f"{key} {cell(done)}")
    loss = _number(progress.get("loss"))
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    eta = _number(progress.get("eta_s", progress.get("eta")))
    if eta is not None:
        parts.append(f"eta {duration_text(eta)}")
    message = progress.get("message")
    if message:
        parts.append(cell(message))
    return "  ".join(parts)


def progress_line(state: str, progress: Mapping[str, Any] | None, elapsed_s: float) -> str:
    """The one-line display while following a job:
    ``running   [##########..........]  50%  epoch 1/2  loss 0.3000  (12.0s)``"""
    parts = [state.ljust(9)]
    fraction = progress_fraction(progress)
    if fraction is not None:
        parts.append(f"{bar(fraction)} {fraction * 100:3.0f}%")
    text = progress_text(progress)
    if text:
        parts.append(text)
    parts.append(f"({duration_text(elapsed_s)})")
    return "  ".join(parts)


# -- jobs --------------------------------------------------------------------------------


def _note(status: Mapping[str, Any]) -> Any:
    return (
        status.get("error")
        or status.get("waiting_reason")
        or ("cancel requested" if status.get("cancel_requested") else None)
    )


def status_block(status: Mapping[str, Any]) -> str:
    """A job's status as ``key: value`` lines (what ``trainyard status`` prints)."""
    attempt = status.get("attempt")
    result = status.get("result") if isinstance(status.get("result"), dict) else None
    metrics = result.get("metrics") if result else None
    # The rest of the result (an inference's prediction, probabilities...), a line each.
    rest = [
        (str(k), v)
        for k, v in (result or {}).items()
        if k != "metrics" and not (k == "model_id" and v == status.get("model_id"))
    ]
    pairs: list[tuple[str, Any]] = [
        ("job", status.get("job_id")),
        ("status", status.get("status")),
        ("type", status.get("job_type")),
        ("runtime", status.get("runtime")),
        ("attempt", f"{attempt}/{status.get('max_attempts')}" if attempt else None),
        ("progress", progress_text(status.get("progress")) or None),
        ("waiting", status.get("waiting_reason")),
        ("cancel", "requested" if status.get("cancel_requested") else None),
        ("model", status.get("model_id")),
        ("metrics", _metrics_text(metrics)),
        *rest,
        ("error", status.get("error")),
        ("error kind", status.get("error_kind")),
        ("created", short_time(status.get("created_at"))),
        ("started", short_time(status.get("started_at"))),
        ("finished", short_time(status.get("finished_at"))),
        ("took", _duration(status)),
        ("retry at", short_time(status.get("retry_at"))),
    ]
    return kv_block(pairs)


def _metrics_text(metrics: Any) -> str | None:
    if not isinstance(metrics, dict) or not metrics:
        return None
    return "  ".join(f"{k}={cell(v)}" for k, v in metrics.items())


def job_rows(jobs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for job in jobs:
        attempt = job.get("attempt")
        rows.append(
            [
                job.get("job_id"),
                job.get("job_type"),
                job.get("runtime"),
                job.get("status"),
                f"{attempt}/{job.get('max_attempts')}" if attempt is not None else None,
                short_time(job.get("created_at")),
                job.get("model_id"),
                cell(_note(job), 60),
            ]
        )
    return rows


def time_of_id(event_id: str) -> str | None:
    """The time a stream id (``<ms>-<seq>``) was written, as an ISO timestamp."""
    try:
        ms = int(str(event_id).split("-", 1)[0])
    except ValueError:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def log_text(line: Mapping[str, Any], timestamps: bool = False) -> str:
    """A log line as printed by ``trainyard logs`` (``-t``: with its time and stream)."""
    text = str(line.get("line", ""))
    if not timestamps:
        return text
    when = short_time(line.get("time")) or "-"
    return f"{when}  {line.get('stream', 'stdout')!s:<6}  {text}"


# -- models, workers, queues ------------------------------------------------------------


def model_rows(models: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for model in models:
        metrics = model.get("metrics") if isinstance(model.get("metrics"), dict) else {}
        rows.append(
            [
                model.get("model_id"),
                model.get("model_type"),
                model.get("runtime"),
                metrics.get("accuracy") if metrics else None,
                size_text(model.get("size_bytes")),
                short_time(model.get("created_at")),
                model.get("job_id"),
            ]
        )
    return rows


def model_block(model: Mapping[str, Any]) -> str:
    details = model.get("details") if isinstance(model.get("details"), dict) else {}
    pairs: list[tuple[str, Any]] = [
        ("model", model.get("model_id")),
        ("type", model.get("model_type")),
        ("framework", model.get("framework")),
        ("runtime", model.get("runtime")),
        ("description", model.get("description")),
        ("job", model.get("job_id")),
        ("created", short_time(model.get("created_at"))),
        ("size", size_text(model.get("size_bytes"))),
        ("labels", ", ".join(str(x) for x in model.get("label_names") or []) or None),
        ("metrics", _metrics_text(model.get("metrics"))),
        ("hyperparameters", model.get("hyperparameters")),
        ("artifact", model.get("artifact")),
    ]
    pairs += [(f"  {k}", v) for k, v in (details or {}).items()]
    return kv_block(pairs)


def worker_rows(workers: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for w in workers:
        framework = " ".join(str(x) for x in (w.get("framework"), w.get("framework_version")) if x)
        loaded = w.get("loaded_models") or []
        rows.append(
            [
                w.get("worker_id"),
                w.get("runtime"),
                framework,
                w.get("device"),
                w.get("host"),
                w.get("pid"),
                w.get("state"),
                w.get("current_job"),
                ",".join(str(m) for m in loaded) if loaded else None,
                short_time(w.get("last_seen")),
            ]
        )
    return rows


def queue_rows(queues: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for runtime, depth in sorted((queues.get("queues") or {}).items()):
        d = depth if isinstance(depth, dict) else {}
        rows.append(
            [
                runtime,
                d.get("high"),
                d.get("normal"),
                d.get("low"),
                d.get("total"),
                d.get("live_workers"),
            ]
        )
    return rows
