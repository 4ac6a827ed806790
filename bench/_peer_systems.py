"""The systems ``bench_peers.py`` compares, each behind the same small interface: the
submitter's side (single submits, bulk submits, round trips) runs in the bench process;
the consumer runs in a process of its own (``consume``), started the same way for all.

- trainyard: the engine, with a consumer loop shaped like the real worker per job
  (``claim_work``, ``set_worker_state`` busy, ``finish``; ``set_worker_state`` idle
  only when nothing is left to claim, as the supervisor writes a state only when it
  changes; a renew only for jobs longer than ``renew_every_s``, so none here; a full
  heartbeat, the loaded models and a reap every ``heartbeat_s`` on a second connection,
  like the supervisor's registration thread).
- dramatiq: ``RedisBroker`` and its ``Worker`` (threads as configured) running a no-op actor.
- taskiq-list / taskiq-stream: taskiq-redis's ``ListQueueBroker`` (BRPOP, no ack) and
  ``RedisStreamBroker`` (consumer group, ack), each with taskiq's ``Receiver`` (what
  ``taskiq worker`` runs) and a no-op async task.
- raw: redis-py request/reply, the floor: LPUSH to submit, BLPOP + SET result to consume.

Every no-op job returns the same small result, stored in each system's result store
when results are on (Trainyard always keeps one in the job hash).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from _benchlib import RoundTripCounter, hiredis_in_use

__all__ = [
    "REQUEST",
    "SYSTEMS",
    "WHATIFS",
    "ConsumerReport",
    "JobCounter",
    "Options",
    "consume",
    "make_submitter",
]

SYSTEMS = ("trainyard", "dramatiq", "taskiq-list", "taskiq-stream", "raw")
# Drain only: Trainyard's loop with fewer round trips, to size the engine changes proposed.
WHATIFS = ("trainyard-lean", "trainyard-fused")
RUNTIME = "sklearn"
REQUEST: dict[str, Any] = {"model_type": "random_forest", "data_path": "/data/tabular_data.csv"}
RESULT: dict[str, Any] = {"ok": True}
WORKER_ID = "bench-worker"
LEASE_MS = 30_000
HEARTBEAT_S = 5.0
WORKER_TTL_MS = 20_000
BLOCK_S = 5.0
AFFINITY_MS = 50  # the worker's default (ai-worker config: affinity_ms)

# One set of client settings for every system (redis-py's own defaults otherwise: RESP
# version, pool): the engine's ``connect`` settings where a library takes them.
CLIENT_KW: dict[str, Any] = {"socket_connect_timeout": 5.0, "health_check_interval": 30}


@dataclass(frozen=True)
class Options:
    url: str
    tag: str  # namespaces this run's keys: every phase starts from empty queues
    results: bool = True  # peers store results (Trainyard always does)
    dramatiq_threads: int = 8  # dramatiq's default
    taskiq_poll_s: float = 0.001  # taskiq's wait_result check interval (its default: 0.2)


@dataclass(frozen=True)
class ConsumerReport:
    first_s: float  # perf_counter when the first job started (system-wide clock)
    last_s: float  # perf_counter when the last job had finished (its result stored)
    jobs: int
    round_trips: int
    commands: int
    hiredis: bool


class JobCounter:
    """Jobs done in a consumer, and when the first started and the last finished."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.done = 0
        self.first_s = 0.0
        self.last_s = 0.0
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self.rt0 = RoundTripCounter.read()

    def started(self) -> None:
        if not self.first_s:
            self.first_s = time.perf_counter()
            self.rt0 = RoundTripCounter.read()

    def finished_one(self) -> None:
        with self._lock:
            self.done += 1
            if self.done == self.target:
                self.last_s = time.perf_counter()
                self.finished.set()

    def report(self) -> ConsumerReport:
        rt, cmds = RoundTripCounter.read()
        return ConsumerReport(
            self.first_s, self.last_s, self.done, rt - self.rt0[0], cmds - self.rt0[1],
            hiredis_in_use(),
        )  # fmt: skip


# -- dramatiq ----------------------------------------------------------------------------


def _dramatiq_noop(request: dict[str, Any]) -> dict[str, Any]:
    return RESULT


def _dramatiq_noop_no_result(request: dict[str, Any]) -> None:
    return None  # without Results, Dramatiq logs a warning for every value returned


def _dramatiq_setup(opts: Options, counter: JobCounter | None) -> Any:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends.redis import RedisBackend

    client = redis.Redis.from_url(opts.url, socket_timeout=60, **CLIENT_KW)
    broker = RedisBroker(client=client, namespace=f"dq-{opts.tag}")
    if opts.results:
        backend = RedisBackend(client=client, namespace=f"dqr-{opts.tag}")
        broker.add_middleware(Results(backend=backend))
    if counter is not None:
        jobs = counter

        class Count(dramatiq.Middleware):  # after Results: counts a job once its result is kept
            def before_process_message(self, broker: Any, message: Any) -> None:
                jobs.started()

            def after_process_message(self, broker: Any, message: Any, **_: Any) -> None:
                jobs.finished_one()

        broker.add_middleware(Count())
    dramatiq.set_broker(broker)
    options: dict[str, Any] = {"max_retries": 0}
    if opts.results:
        options["store_results"] = True
    fn = _dramatiq_noop if opts.results else _dramatiq_noop_no_result
    actor = dramatiq.actor(broker=broker, actor_name="noop", **options)(fn)
    return broker, actor


def _dramatiq_consume(opts: Options, n: int, counter: JobCounter) -> None:
    import dramatiq

    broker, _ = _dramatiq_setup(opts, counter)
    worker = dramatiq.Worker(broker, worker_threads=opts.dramatiq_threads)
    worker.start()
    try:
        counter.finished.wait(600)
    finally:
        worker.stop(timeout=5000)


class _DramatiqSubmitter:
    def __init__(self, opts: Options) -> None:
        self.broker, self.actor = _dramatiq_setup(opts, None)
        self.results = opts.results

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.actor.send(REQUEST)

    def batch(self, n: int, chunk: int) -> bool:
        return False  # no bulk submit: group(...).run() enqueues one message at a time

    def prefill(self, n: int) -> None:
        self.enqueue(n)

    def round_trip(self) -> None:
        message = self.actor.send(REQUEST)
        assert message.get_result(block=True, timeout=10_000) == RESULT

    def close(self) -> None:
        self.broker.close()


# -- taskiq ------------------------------------------------------------------------------


async def _taskiq_noop(request: dict[str, Any]) -> dict[str, Any]:
    return RESULT


def _taskiq_setup(kind: str, opts: Options, counter: JobCounter | None) -> tuple[Any, Any]:
    from taskiq import TaskiqMiddleware
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

    broker: Any
    if kind == "taskiq-list":
        broker = ListQueueBroker(opts.url, queue_name=f"tql-{opts.tag}", **CLIENT_KW)
    else:
        broker = RedisStreamBroker(opts.url, queue_name=f"tqs-{opts.tag}", **CLIENT_KW)
    if opts.results:
        backend: Any = RedisAsyncResultBackend(opts.url, prefix_str=f"tqr-{opts.tag}", **CLIENT_KW)
        broker = broker.with_result_backend(backend)
    if counter is not None:
        jobs = counter

        class Count(TaskiqMiddleware):
            def pre_execute(self, message: Any) -> Any:
                jobs.started()
                return message

            def post_save(self, message: Any, result: Any) -> None:
                jobs.finished_one()

        broker.add_middlewares(Count())
    task = broker.register_task(_taskiq_noop, task_name="noop")
    return broker, task


def _taskiq_consume(kind: str, opts: Options, n: int, counter: JobCounter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from taskiq.receiver import Receiver

    broker, _ = _taskiq_setup(kind, opts, counter)
    broker.is_worker_process = True

    async def main() -> None:
        finish = asyncio.Event()
        with ThreadPoolExecutor() as pool:
            # What `taskiq worker` builds, with its defaults (100 tasks at once, ack once saved).
            receiver = Receiver(broker, executor=pool, max_async_tasks=100)
            listening = asyncio.create_task(receiver.listen(finish))
            while not counter.finished.is_set():
                await asyncio.sleep(0.01)
            finish.set()
            try:
                await asyncio.wait_for(listening, 5)
            except TimeoutError:
                listening.cancel()
        await broker.shutdown()

    asyncio.run(main())


class _TaskiqSubmitter:
    def __init__(self, kind: str, opts: Options) -> None:
        self.broker, self.task = _taskiq_setup(kind, opts, None)
        self.poll_s = opts.taskiq_poll_s
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.broker.startup())

    def enqueue(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.task.kiq(REQUEST)

        self.loop.run_until_complete(go())

    def batch(self, n: int, chunk: int) -> bool:
        return False  # no bulk submit in taskiq

    def prefill(self, n: int) -> None:
        self.enqueue(n)

    def round_trip(self) -> None:
        async def go() -> None:
            handle = await self.task.kiq(REQUEST)
            result = await handle.wait_result(check_interval=self.poll_s, timeout=10)
            assert result.return_value == RESULT, result

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.broker.shutdown())
        self.loop.close()


# -- raw redis-py --------------------------------------------------------------------------


def _raw_consume(opts: Options, n: int, counter: JobCounter) -> None:
    r = redis.Redis.from_url(opts.url, socket_timeout=60, **CLIENT_KW)
    queue = f"raw:{opts.tag}:queue"
    while counter.done < n:
        got = r.blpop([queue], timeout=BLOCK_S)
        if got is None:
            continue
        counter.started()
        job = json.loads(got[1])
        r.lpush(f"raw:{opts.tag}:result:{job['id']}", json.dumps(RESULT))
        counter.finished_one()


class _RawSubmitter:
    def __init__(self, opts: Options) -> None:
        self.r = redis.Redis.from_url(opts.url, socket_timeout=60, **CLIENT_KW)
        self.tag = opts.tag
        self.queue = f"raw:{opts.tag}:queue"

    def _payload(self) -> tuple[str, str]:
        job_id = uuid.uuid4().hex
        return job_id, json.dumps({"id": job_id, "request": REQUEST})

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.r.lpush(self.queue, self._payload()[1])

    def batch(self, n: int, chunk: int) -> bool:
        """One LPUSH per job, ``chunk`` of them to a pipeline (one round trip each)."""
        for start in range(0, n, chunk):
            pipe = self.r.pipeline(transaction=False)
            for _ in range(min(chunk, n - start)):
                pipe.lpush(self.queue, self._payload()[1])
            pipe.execute()
        return True

    def batch_record(self, n: int, chunk: int) -> None:
        """Per job a record, a ready-zset entry and a wake-up (HSET + ZADD + LPUSH), the
        least a queue with job records writes; ``chunk`` jobs to a pipeline."""
        for start in range(0, n, chunk):
            pipe = self.r.pipeline(transaction=False)
            for i in range(min(chunk, n - start)):
                job_id, payload = self._payload()
                pipe.hset(f"raw:{self.tag}:job:{job_id}", mapping={
                    "id": job_id, "state": "queued", "runtime": RUNTIME, "request": payload,
                })  # fmt: skip
                pipe.zadd(f"raw:{self.tag}:ready", {job_id: start + i})
                pipe.lpush(f"raw:{self.tag}:wake", "1")
            pipe.execute()

    def prefill(self, n: int) -> None:
        self.batch(n, 1000)

    def round_trip(self) -> None:
        job_id, payload = self._payload()
        self.r.lpush(self.queue, payload)
        got = self.r.blpop([f"raw:{self.tag}:result:{job_id}"], timeout=10)
        assert got is not None

    def close(self) -> None:
        self.r.close()


# -- dispatch ------------------------------------------------------------------------------


def make_submitter(system: str, opts: Options) -> Any:
    if system.startswith("trainyard"):
        from _trainyard_system import TrainyardSubmitter

        return TrainyardSubmitter(opts)
    if system == "dramatiq":
        return _DramatiqSubmitter(opts)
    if system.startswith("taskiq"):
        return _TaskiqSubmitter(system, opts)
    if system == "raw":
        return _RawSubmitter(opts)
    raise ValueError(system)


def consume(system: str, opts: Options, n: int, reports: Any) -> None:
    """A consumer process: run ``n`` jobs of ``system``, then put a ConsumerReport."""
    RoundTripCounter.install()
    counter = JobCounter(n)
    if system.startswith("trainyard"):
        from _trainyard_system import consume_trainyard

        consume_trainyard(system, opts, n, counter)
    elif system == "dramatiq":
        _dramatiq_consume(opts, n, counter)
    elif system.startswith("taskiq"):
        _taskiq_consume(system, opts, n, counter)
    elif system == "raw":
        _raw_consume(opts, n, counter)
    else:
        raise ValueError(system)
    reports.put(counter.report())
