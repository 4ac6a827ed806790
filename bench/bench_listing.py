"""How fast ``GET /jobs`` paging stays with many jobs (the engine's ``list_jobs``).

    cd core && uv run python ../bench/bench_listing.py [--jobs 100000]

Fills its own embedded Valkey with jobs spread over runtimes, types and states, then
times pages with each filter combination, and a walk of 20 consecutive pages. Prints
milliseconds per page next to one raw ZREVRANGEBYSCORE + pipelined HGETALL of the same
page size on the same server (the floor any index-based listing pays).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.types import JobType

RUNTIMES = ["sklearn", "pytorch-2.1", "tensorflow"]


def fill(queue: JobQueue, n: int) -> None:
    for i in range(n):
        runtime = RUNTIMES[i % 3]
        job_type = JobType.TRAINING if i % 4 else JobType.INFERENCE
        job_id, _ = queue.enqueue(job_type=job_type, runtime=runtime, request={"i": i})
        if i % 10 == 0:
            queue.cancel(job_id)  # 10 % cancelled: a selective state filter


def timed(fn: object, repeat: int = 15) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    with EmbeddedServer(Path(tempfile.mkdtemp()) / "valkey") as server:
        client = connect(server.url)
        queue = JobQueue(client)
        start = time.perf_counter()
        fill(queue, args.jobs)
        print(f"filled {args.jobs} jobs in {time.perf_counter() - start:.1f}s")

        def raw_page() -> None:
            ids = client.zrevrangebyscore(queue.keys.index_all, "+inf", "-inf", 0, args.limit)
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(queue.keys.job(job_id))
            pipe.execute()

        floor = timed(raw_page)
        cases = {
            "no filter": {},
            "state=cancelled (10%)": {"state": "cancelled"},
            "runtime=tensorflow (33%)": {"runtime": "tensorflow"},
            "type=inference + state=cancelled": {"job_type": "inference", "state": "cancelled"},
            "state=succeeded (none)": {"state": "succeeded"},
        }
        print(f"\n{'page of ' + str(args.limit):<36} {'ms':>8} {'vs raw':>8}")
        print(f"{'raw ZREVRANGEBYSCORE + HGETALL':<36} {floor:8.2f} {1.0:8.2f}x")
        for name, filters in cases.items():
            ms = timed(lambda f=filters: queue.list_jobs(limit=args.limit, **f))  # type: ignore[misc]
            print(f"{name:<36} {ms:8.2f} {ms / floor:8.2f}x")

        def walk() -> None:
            cursor = None
            for _ in range(20):
                page = queue.list_jobs(limit=args.limit, cursor=cursor, state="queued")
                cursor = page.next_cursor

        ms = timed(walk, repeat=3) / 20
        print(f"{'20-page walk, state=queued, per page':<36} {ms:8.2f} {ms / floor:8.2f}x")


if __name__ == "__main__":
    main()
