"""Queue statistics the Lua scripts keep in Redis, for ``/metrics``: counters of jobs
finished (by runtime, job type, outcome and error kind), of retries and dead letters, and
histograms of queue wait, run time and inference batch size.

The scripts count at each transition (``_common.lua``: ``count_end``, ``count_retry``,
``count_batches``), so the totals are the queue's, not one process's: every backend
replica reads the same numbers. Each family is one hash (``KeySchema.stats_*``) with one
field per label set (``|``-joined, label values from closed sets: a bounded number of
fields). A histogram keeps non-cumulative bucket counts (field ``<labels>|<i>``, ``i`` the
1-based index of the first bound the value is at or under, ``len(bounds) + 1`` above them
all) and the sum (``<labels>|sum``); :func:`read_stats` accumulates them into Prometheus's
cumulative buckets. The bucket bounds are defined here and handed to the scripts through
:func:`stats_lua_table`, so both sides share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from .keys import KeySchema
from .types import FailureKind

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "OUTCOMES",
    "QUEUE_WAIT_BOUNDS_S",
    "RUN_TIME_BOUNDS_S",
    "CounterFamily",
    "CounterSample",
    "Histogram",
    "HistogramFamily",
    "QueueStats",
    "read_oldest_waits",
    "read_stats",
    "stats_lua_table",
]

# Seconds. Queue waits run from milliseconds (an idle fleet) to hours (a backlog).
QUEUE_WAIT_BOUNDS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
    3600, 7200, 21600, 86400,
)  # fmt: skip
# Seconds. Inference jobs take milliseconds; training runs take minutes to a day.
RUN_TIME_BOUNDS_S: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
    14400, 43200, 86400,
)  # fmt: skip
BATCH_SIZE_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# The terminal outcomes counted (the terminal job states).
OUTCOMES = ("succeeded", "failed", "cancelled", "dead")
# An error kind outside this set is counted as "other" (keeps the hash bounded).
_ERROR_KINDS = tuple(kind.value for kind in FailureKind)


def _lua_list(values: tuple[float, ...], scale: int) -> str:
    return "{" + ", ".join(str(round(v * scale)) for v in values) + "}"


def stats_lua_table() -> str:
    """A Lua preamble defining ``STATS``: bucket bounds (times in ms) and the error kinds
    counted by name, for the scripts (``scripts.script_source`` prepends it)."""
    kinds = ", ".join(f"{k} = true" for k in _ERROR_KINDS)
    return (
        "local STATS = {\n"
        f"  wait_ms = {_lua_list(QUEUE_WAIT_BOUNDS_S, 1000)},\n"
        f"  run_ms = {_lua_list(RUN_TIME_BOUNDS_S, 1000)},\n"
        f"  batch = {_lua_list(BATCH_SIZE_BOUNDS, 1)},\n"
        f"  error_kinds = {{{kinds}}},\n"
        "}\n"
    )


@dataclass(frozen=True)
class CounterSample:
    labels: tuple[str, ...]  # values, in the family's label_names order
    value: int


@dataclass(frozen=True)
class CounterFamily:
    label_names: tuple[str, ...]
    samples: tuple[CounterSample, ...]

    def get(self, **labels: str) -> int:
        """The total over the samples whose labels match the given ones (0 if none)."""
        return sum(s.value for s in self.samples if _matches(self.label_names, s.labels, labels))


@dataclass(frozen=True)
class Histogram:
    labels: tuple[str, ...]
    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count); last is +Inf
    sum: float
    count: int


@dataclass(frozen=True)
class HistogramFamily:
    label_names: tuple[str, ...]
    bounds: tuple[float, ...]
    series: tuple[Histogram, ...]

    def get(self, **labels: str) -> Histogram | None:
        """The one series with exactly these labels, or None."""
        for h in self.series:
            if set(labels) == set(self.label_names) and _matches(
                self.label_names, h.labels, labels
            ):
                return h
        return None


@dataclass(frozen=True)
class QueueStats:
    finished: CounterFamily  # runtime, job_type, outcome, error_kind
    retries: CounterFamily  # runtime, job_type
    dead_letters: CounterFamily  # runtime, job_type (the finished jobs with outcome dead)
    queue_wait: HistogramFamily  # seconds; runtime, job_type, outcome
    run_time: HistogramFamily  # seconds; runtime, job_type, outcome
    batch_size: HistogramFamily  # jobs; runtime


def _matches(names: tuple[str, ...], values: tuple[str, ...], wanted: dict[str, str]) -> bool:
    got = dict(zip(names, values, strict=True))
    return all(got.get(k) == v for k, v in wanted.items())


def _counters(raw: dict[str, str], names: tuple[str, ...]) -> CounterFamily:
    samples = []
    for field, value in sorted(raw.items()):
        # Split from the right: only the runtime (first) could hold a "|".
        labels = tuple(field.rsplit("|", len(names) - 1))
        if len(labels) == len(names):
            samples.append(CounterSample(labels, int(value)))
    return CounterFamily(names, tuple(samples))


def _histograms(
    raw: dict[str, str], names: tuple[str, ...], bounds: tuple[float, ...], scale: float
) -> HistogramFamily:
    counts: dict[tuple[str, ...], list[int]] = {}
    sums: dict[tuple[str, ...], float] = {}
    for field, value in raw.items():
        parts = field.rsplit("|", len(names))
        if len(parts) != len(names) + 1:
            continue
        labels, slot = tuple(parts[:-1]), parts[-1]
        per_bucket = counts.setdefault(labels, [0] * (len(bounds) + 1))
        if slot == "sum":
            sums[labels] = int(value) / scale
        elif slot.isdigit() and 1 <= int(slot) <= len(bounds) + 1:
            per_bucket[int(slot) - 1] += int(value)
    series = []
    for labels in sorted(counts):
        running, cumulative = 0, []
        for bound, n in zip((*bounds, float("inf")), counts[labels], strict=True):
            running += n
            cumulative.append((float(bound), running))
        series.append(Histogram(labels, tuple(cumulative), sums.get(labels, 0.0), running))
    return HistogramFamily(names, bounds, tuple(series))


def read_stats(redis: Redis, keys: KeySchema) -> QueueStats:
    """Every counter and histogram, in one round trip (``redis`` with
    ``decode_responses=True``)."""
    pipe: Any = redis.pipeline(transaction=False)
    for key in (
        keys.stats_finished,
        keys.stats_retries,
        keys.stats_queue_wait,
        keys.stats_run_time,
        keys.stats_batch_size,
    ):
        pipe.hgetall(key)
    finished_raw, retries_raw, wait_raw, run_raw, batch_raw = pipe.execute()
    finished = _counters(finished_raw, ("runtime", "job_type", "outcome", "error_kind"))
    dead: dict[tuple[str, ...], int] = {}
    for s in finished.samples:
        if s.labels[2] == "dead":
            dead[s.labels[:2]] = dead.get(s.labels[:2], 0) + s.value
    by_outcome = ("runtime", "job_type", "outcome")
    return QueueStats(
        finished=finished,
        retries=_counters(retries_raw, ("runtime", "job_type")),
        dead_letters=CounterFamily(
            ("runtime", "job_type"),
            tuple(CounterSample(labels, n) for labels, n in sorted(dead.items())),
        ),
        queue_wait=_histograms(wait_raw, by_outcome, QUEUE_WAIT_BOUNDS_S, 1000),
        run_time=_histograms(run_raw, by_outcome, RUN_TIME_BOUNDS_S, 1000),
        batch_size=_histograms(batch_raw, ("runtime",), BATCH_SIZE_BOUNDS, 1),
    )


def read_oldest_waits(redis: Redis, keys: KeySchema, runtimes: list[str]) -> dict[str, float]:
    """Per runtime, how long (seconds) the longest waiting of the jobs first in line in
    each priority band has been in its ready queue (since ``ready_at``); 0 when none
    waits. Within a band the queue is FIFO by submission, so its first job is its oldest
    (a retried job keeps its place in line but its wait restarts when it is requeued)."""
    band = 1 << 40
    pipe: Any = redis.pipeline(transaction=False)
    pipe.time()
    for runtime in runtimes:
        for rank in range(3):
            pipe.zrangebyscore(keys.ready(runtime), rank * band, (rank + 1) * band - 1, 0, 1)
    replies = pipe.execute()
    now_ms = int(replies[0][0]) * 1000 + int(replies[0][1]) // 1000
    heads = [(runtimes[i // 3], ids[0]) for i, ids in enumerate(replies[1:]) if ids]
    waits = dict.fromkeys(runtimes, 0.0)
    if not heads:
        return waits
    pipe = redis.pipeline(transaction=False)
    for _, job_id in heads:
        pipe.hget(keys.job(job_id), "ready_at")
    for (runtime, _), ready_at in zip(heads, pipe.execute(), strict=True):
        if ready_at:
            waits[runtime] = max(waits[runtime], max(0, now_ms - int(ready_at)) / 1000)
    return waits
