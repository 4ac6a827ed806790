"""What durability costs: the queue engine on embedded Valkey servers that differ only in
their AOF fsync policy, side by side in one run.

    cd core && uv run python ../bench/bench_durability.py [--jobs 3000] [--rounds 3]

For each policy (`appendfsync always`, `everysec`, and AOF off as the reference) it starts
a fresh server in a temporary folder and measures:

  (a) enqueue throughput: one `JobQueue.enqueue` per job (one Lua script each)
  (b) job lifecycle throughput: enqueue -> claim -> finish per job, one at a time
      (three scripts, three AOF writes)
  (c) after (a), kill -9 of the server and a restart from its AOF: how many of the
      acknowledged jobs came back (a process crash; a power loss is not simulated here)

and prints each policy's median over `--rounds` rounds with the ratio to AOF off. Not
asserted anywhere: on a machine with a slow disk `always` costs far more than on an SSD.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trainyard.connection import connect
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.types import JobType

REQUEST = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}


class _NoAof(EmbeddedServer):
    """The reference: the same server with the AOF off (a cache, not a queue)."""

    def start(self, timeout_s: float = 15.0) -> _NoAof:
        self.appendfsync = "no"
        super().start(timeout_s)
        client = connect(self.url)
        client.config_set("appendonly", "no")
        client.close()
        return self


def _measure(server: EmbeddedServer, jobs: int) -> dict[str, float]:
    queue = JobQueue(connect(server.url))
    for _ in range(200):  # warm-up: scripts loaded, connection and caches warm
        queue.enqueue(job_type=JobType.TRAINING, runtime="pytorch-2.0", request=REQUEST)
    started = time.perf_counter()
    for _ in range(jobs):
        queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request=REQUEST)
    enqueue_rate = jobs / (time.perf_counter() - started)

    cycle = max(jobs // 3, 1)
    started = time.perf_counter()
    for _ in range(cycle):
        job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="tensorflow", request={})
        claim = queue.claim("bench", ["tensorflow"], 60_000)
        assert claim is not None and claim.job_id == job_id
        queue.finish(job_id, claim.attempt_id, "succeeded", result={})
    cycle_rate = cycle / (time.perf_counter() - started)

    acknowledged = jobs + cycle + 200
    queue.redis.close()
    server.stop(kill=True)  # kill -9 of the server process
    server.start()
    after = JobQueue(connect(server.url))
    kept = int(after.redis.zcard(after.keys.index_all))
    after.redis.close()
    return {"enqueue": enqueue_rate, "cycle": cycle_rate, "kept": kept, "acked": acknowledged}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    args = parser.parse_args(argv)
    rounds: dict[str, list[dict[str, float]]] = {"AOF off": [], "everysec": [], "always": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            # Each round on fresh servers, the policies interleaved so that a noisy moment on
            # a shared machine does not fall on one policy only.
            for name, server in (
                ("AOF off", _NoAof(Path(tmp) / f"off{i}")),
                ("everysec", EmbeddedServer(Path(tmp) / f"es{i}", appendfsync="everysec")),
                ("always", EmbeddedServer(Path(tmp) / f"al{i}", appendfsync="always")),
            ):
                with server:
                    rounds[name].append(_measure(server, args.jobs))
    results = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in rounds.items()
    }
    ref = results["AOF off"]
    print(f"{'policy':10} {'enqueue/s':>10} {'ratio':>6} {'lifecycle/s':>12} {'ratio':>6}"
          f"  {'kept after kill -9':>20}")  # fmt: skip
    for name, r in results.items():
        print(
            f"{name:10} {r['enqueue']:10.0f} {r['enqueue'] / ref['enqueue']:5.2f}x"
            f" {r['cycle']:12.0f} {r['cycle'] / ref['cycle']:5.2f}x"
            f"  {int(r['kept']):>9} of {int(r['acked'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
