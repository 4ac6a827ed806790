"""The read side of the queue engine: job records, listings, events, queue depths,
workers and models. Reads only, no scripts: a mixin of ``trainyard.engine.JobQueue``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from redis import Redis

from .engine_types import Event, JobPage, events_from_entries
from .keys import KeySchema
from .routing import RUNTIMES
from .types import JobState

__all__ = ["QueueReads"]


class QueueReads:
    """Reads of a queue; ``JobQueue`` sets these three attributes."""

    redis: Redis
    _r: Any  # the same connection; replies are str, which redis-py's stubs cannot express
    keys: KeySchema

    # -- reading ---------------------------------------------------------------------

    def server_time_ms(self) -> int:
        seconds, micros = self._r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def get_job(self, job_id: str) -> dict[str, str] | None:
        h = self._r.hgetall(self.keys.job(job_id))
        return h or None

    def get_jobs(self, job_ids: Iterable[str]) -> list[dict[str, str]]:
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        return [h for h in pipe.execute() if h]

    def list_jobs(
        self,
        *,
        state: str | None = None,
        runtime: str | None = None,
        job_type: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        scan_budget: int = 5000,
    ) -> JobPage:
        """Newest first. Walks the smallest matching index and filters the rest, so a
        page costs at most ``scan_budget`` index entries even with 100,000s of jobs; a
        page may come back short with a cursor when the budget ran out."""
        candidates = [self.keys.index_all]
        if state:
            candidates.append(self.keys.index_state(state))
        if runtime:
            candidates.append(self.keys.index_runtime(runtime))
        if job_type:
            candidates.append(self.keys.index_type(job_type))
        pipe = self._r.pipeline(transaction=False)
        for key in candidates:
            pipe.zcard(key)
        sizes = pipe.execute()
        driver = candidates[min(range(len(candidates)), key=lambda i: sizes[i])]

        # With at most one filter the driver index is that filter: every entry matches, so
        # read exactly what the page needs. Otherwise over-read to pay fewer round trips.
        exact = sum(1 for f in (state, runtime, job_type) if f) <= 1
        upper = f"({int(cursor)}" if cursor else "+inf"
        found: list[dict[str, str]] = []
        scanned = 0
        last_seq: int | None = None
        while len(found) < limit and scanned < scan_budget:
            want = limit - len(found)
            num = min(want if exact else max(want * 4, 100), scan_budget - scanned)
            batch = self._r.zrevrangebyscore(
                driver, upper, "-inf", start=0, num=num, withscores=True
            )
            scanned += len(batch)
            for job in self.get_jobs(job_id for job_id, _ in batch):
                if (
                    (state and job.get("state") != state)
                    or (runtime and job.get("runtime") != runtime)
                    or (job_type and job.get("type") != job_type)
                ):
                    continue
                found.append(job)
                if len(found) == limit:
                    return JobPage(found, job["seq"])
            if len(batch) < num:
                return JobPage(found, None)  # the index has nothing older
            last_seq = int(batch[-1][1])
            upper = f"({last_seq}"
        return JobPage(found, str(last_seq) if last_seq is not None else None)

    def events(
        self, job_id: str, after: str = "0", count: int = 1000, block_ms: int | None = None
    ) -> list[Event]:
        """Events after stream id ``after``; with ``block_ms``, wait that long for one."""
        key = self.keys.events(job_id)
        if block_ms is None:
            entries = self._r.xrange(key, min=f"({after}" if after != "0" else "-", count=count)
        else:
            reply = self._r.xread({key: after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return events_from_entries(entries)

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Queued jobs per runtime, by priority and in total."""
        band = 1 << 40
        pipe = self._r.pipeline(transaction=False)
        names = list(RUNTIMES)
        for name in names:
            key = self.keys.ready(name)
            for rank in range(3):
                pipe.zcount(key, rank * band, (rank + 1) * band - 1)
        counts = pipe.execute()
        depths: dict[str, dict[str, int]] = {}
        for i, name in enumerate(names):
            high, normal, low = counts[i * 3 : i * 3 + 3]
            depths[name] = {
                "high": high,
                "normal": normal,
                "low": low,
                "total": high + normal + low,
            }
        return depths

    def running_by_runtime(self) -> dict[str, int]:
        """Running jobs per runtime (the intersection of two listing indexes)."""
        pipe = self._r.pipeline(transaction=False)
        names = list(RUNTIMES)
        running = self.keys.index_state(JobState.RUNNING)
        for name in names:
            pipe.zintercard(2, [running, self.keys.index_runtime(name)])
        return dict(zip(names, pipe.execute(), strict=True))

    def count_by_state(self) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        for s in JobState:
            pipe.zcard(self.keys.index_state(s))
        return dict(zip([str(s) for s in JobState], pipe.execute(), strict=True))

    def live_workers(self, max_age_ms: int) -> list[dict[str, str]]:
        now = self.server_time_ms()
        ids = self._r.zrangebyscore(self.keys.workers, now - max_age_ms, "+inf")
        pipe = self._r.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(self.keys.worker(worker_id))
        return [h for h in pipe.execute() if h]

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        raw = self._r.get(self.keys.model(model_id))
        return json.loads(raw) if raw else None

    def list_models(self, limit: int = 100, cursor: str | None = None) -> list[dict[str, Any]]:
        upper = f"({cursor}" if cursor else "+inf"
        ids = self._r.zrevrangebyscore(self.keys.models, upper, "-inf", start=0, num=limit)
        if not ids:
            return []
        raws = self._r.mget([self.keys.model(i) for i in ids])
        return [json.loads(r) for r in raws if r]
