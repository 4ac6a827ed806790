"""Async reads of the queue, for servers that keep many readers waiting (event streams,
``?wait=``): redis-py's asyncio client, and one shared stream reader per process.

Why one shared reader (``StreamHub``) rather than one ``XREAD BLOCK`` per open stream on an
async pool: a blocked ``XREAD`` holds its connection for the whole wait, so 1,000 open
streams would need 1,000 Redis connections per backend process (and 1,000 more file
descriptors than the HTTP sockets already take, past the usual 1,024 soft limit), each a
blocked client on the server. The hub holds ONE connection that ``XREAD``s every followed
key in one call and hands the entries to each follower's in-memory inbox; a key gained
while that read blocks is added at once with ``CLIENT UNBLOCK`` (from a pool connection).
A new follower first catches up on its own with non-blocking ``XRANGE`` pages (so a long
replay costs the shared read nothing), and joins the shared read once it has seen as far
as the hub. A follower that falls behind (full inbox) is detached and catches up by
``XRANGE`` again, so a slow client never makes the hub buffer without bound or miss an
entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError, ResponseError

from .engine_types import Entry, Event, events_from_entries
from .keys import KeySchema
from .types import TERMINAL_STATES

__all__ = [
    "AsyncQueue",
    "Follower",
    "StreamHub",
    "connect_async",
    "events_from_entries",
    "stream_id_after",
]

log = logging.getLogger(__name__)

_TERMINAL = {s.value for s in TERMINAL_STATES}


def connect_async(url: str, *, max_connections: int = 64, single: bool = False) -> aioredis.Redis:
    """An asyncio client decoding replies to ``str``, like ``connection.connect``.

    The pool is bounded and *waits* for a free connection (``BlockingConnectionPool``), so
    a burst of short reads queues instead of opening a connection each. ``single``: one
    dedicated connection that never retries behind the caller's back (the hub's reader
    must know when its connection, and so its client id, changed)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 30.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    if single:
        return aioredis.Redis.from_url(
            url, single_connection_client=True, retry=Retry(NoBackoff(), 0), **options
        )
    # A connection dropped while idle (a server restart, CLIENT KILL) is reopened and the
    # read retried, as the sync client does by default; every call here is a read.
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), 3)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, retry=retry, **options
    )
    return aioredis.Redis(connection_pool=pool)


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def stream_id_after(a: str, b: str) -> bool:
    """Whether stream id ``a`` comes after ``b`` (``"0"`` is the start)."""
    return _id(a) > _id(b)


@dataclass(eq=False)
class Follower:
    """One reader's place in one stream: ``last`` is the last id it was given."""

    key: str
    last: str
    inbox: list[Event] = field(default_factory=list)
    attached: bool = False  # in the hub's shared read (else it catches up with XRANGE)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class StreamHub:
    """The shared reader of one process: follows any number of stream keys on one
    connection (see the module's docstring for why)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        reader: aioredis.Redis,
        *,
        block_ms: int = 5000,
        page: int = 500,
        inbox_limit: int = 2000,
    ) -> None:
        # Replies are str (decode_responses), which redis-py's stubs cannot express: the
        # calls go through Any-typed aliases, as in engine_reads.
        self.redis = redis  # the pool: XRANGE catch-ups, CLIENT UNBLOCK
        self._r: Any = redis
        self._reader: Any = reader  # one dedicated connection: the blocking XREAD
        self._block_ms = block_ms
        self.page = page  # entries a read takes at most (XRANGE catch-up, XREAD per key)
        self._inbox_limit = inbox_limit
        self._followers: dict[str, set[Follower]] = {}
        self._cursor: dict[str, str] = {}  # key -> last id the shared read has seen
        self._reading: frozenset[str] | None = None  # keys of the XREAD in flight
        self._reader_id: int | None = None
        self._generation = 0  # one per XREAD: an interrupt stops once its read is over
        self._interrupting: asyncio.Task[None] | None = None
        self._unblock_ok = True
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-hub")

    async def close(self) -> None:
        """Stop the shared read: ended with CLIENT UNBLOCK, not by cancelling it (seen with
        redis-py 8.1: a cancel thrown into a blocked XREAD can be lost, and the read then
        blocks on)."""
        self._closing = True
        self._changed.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            if self._reading is not None and self._reader_id is not None:
                with contextlib.suppress(RedisError):
                    await self._r.client_unblock(self._reader_id)
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:  # UNBLOCK refused or lost: the read ends within its block time
                await asyncio.wait({task}, timeout=self._block_ms / 1000 + 1.0)
            if not task.done():
                task.cancel()
        if self._interrupting is not None:
            self._interrupting.cancel()
            self._interrupting = None

    @property
    def followed_keys(self) -> int:
        return len(self._cursor)

    # -- followers ---------------------------------------------------------------------

    def follow(self, key: str, after: str) -> Follower:
        """A place in ``key`` after stream id ``after``; read it with ``read``, and
        ``unfollow`` it when done."""
        return Follower(key, after)

    def unfollow(self, follower: Follower) -> None:
        self._detach(follower)

    async def read(self, follower: Follower, timeout_s: float) -> list[Event]:
        """The follower's next events (in order, none twice), waiting at most
        ``timeout_s`` for one; ``[]`` when none came."""
        deadline = time.monotonic() + timeout_s
        refused = 0
        while True:
            if follower.inbox:
                fresh = [e for e in follower.inbox if stream_id_after(e.id, follower.last)]
                follower.inbox = []
                if fresh:
                    follower.last = fresh[-1].id
                    return fresh
                continue
            if not follower.attached:
                events = await self._catch_up(follower)
                if events:
                    return events
                if not follower.attached:
                    # Nothing after its place, yet the hub has seen further: entries that
                    # arrived during the XRANGE (read again), or ones since deleted (the
                    # key removed): after a few empty looks, join anyway.
                    refused += 1
                    if refused >= 3:
                        self._attach(follower)
                    else:
                        await asyncio.sleep(0.01)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            follower.wake.clear()
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await follower.wake.wait()
            except TimeoutError:
                return []

    async def _catch_up(self, follower: Follower) -> list[Event]:
        after = follower.last
        low = f"({after}" if after != "0" else "-"
        entries = await self._r.xrange(follower.key, min=low, count=self.page)
        events = events_from_entries(entries)
        self.caught_up(follower, events)
        return events

    def caught_up(self, follower: Follower, events: Sequence[Event]) -> None:
        """The follower was given ``events``, one ``XRANGE`` page after its place (read
        here, or by a caller that pipelined it with other reads): it joins the shared read
        if the page reached the end and the hub has seen no further than the follower
        (entries the hub handed out before would be missed). No await between this check
        and the attach: the hub cannot move in between."""
        if events:
            follower.last = events[-1].id
        seen = self._cursor.get(follower.key)
        if len(events) < self.page and (seen is None or not stream_id_after(seen, follower.last)):
            self._attach(follower)

    def _attach(self, follower: Follower) -> None:
        follower.attached = True
        self._followers.setdefault(follower.key, set()).add(follower)
        if follower.key not in self._cursor:
            self._cursor[follower.key] = follower.last
            self._changed.set()
            if self._reading is not None and follower.key not in self._reading:
                self._interrupt()

    def _detach(self, follower: Follower) -> None:
        follower.attached = False
        followers = self._followers.get(follower.key)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            # The key leaves the next read; the one in flight may still return it.
            del self._followers[follower.key]
            self._cursor.pop(follower.key, None)

    # -- the shared read ---------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            if not self._cursor:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                if self._reader_id is None:
                    self._reader_id = int(await self._reader.client_id())
                    continue  # the keys may have changed meanwhile (all gone: no XREAD)
                streams = dict(self._cursor)
                self._reading = frozenset(streams)
                self._generation += 1
                try:
                    reply = await self._xread(streams)
                finally:
                    self._reading = None
                failures = 0
            except ResponseError as exc:
                # Refused, not failed: a cursor Redis will not take would stall every
                # stream. Everyone pages alone again; a bad one fails in its own request.
                log.warning("stream hub: shared read refused (%s); followers re-read", exc)
                for followers in list(self._followers.values()):
                    for follower in list(followers):
                        self._detach(follower)
                        follower.wake.set()
                continue
            except RedisError as exc:
                # Redis away: followers time out and look at the job themselves; the
                # read resumes from the same cursors when the server is back.
                self._reader_id = None
                failures += 1
                if failures == 1:
                    log.warning("stream hub: shared read failed: %s", exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            for key, entries in reply:
                self._deliver(key, events_from_entries(entries))

    async def _xread(self, streams: dict[str, str]) -> list[tuple[str, list[Entry]]]:
        """One ``XREAD COUNT BLOCK STREAMS`` of every followed key on the reader's
        connection, packed by hiredis in C: redis-py packs its 2,000 arguments (1,000
        streams) in Python, 1.8 ms of event loop a read against 0.2 ms (measured), and the
        hub reads again after every entry it hands out."""
        args = ("XREAD", "COUNT", str(self.page), "BLOCK", str(self._block_ms), "STREAMS")
        packed = hiredis.pack_command((*args, *streams.keys(), *streams.values()))  # type: ignore[arg-type]
        conn = self._reader.connection  # set by the client's first command (CLIENT ID)
        await conn.send_packed_command(packed, check_health=False)
        raw = await conn.read_response()
        # RESP3 (redis-py 8's default): {key: [[id, [field, value, ...]], ...]}; RESP2: the
        # same as [[key, rows], ...]; nil on timeout (or CLIENT UNBLOCK).
        by_key = raw.items() if isinstance(raw, dict) else raw or []
        return [
            (key, [(eid, dict(zip(flat[::2], flat[1::2], strict=True))) for eid, flat in rows])
            for key, rows in by_key
        ]

    def _deliver(self, key: str, events: Sequence[Event]) -> None:
        if not events or key not in self._cursor:
            return  # unfollowed while the read was in flight
        if stream_id_after(events[-1].id, self._cursor[key]):
            self._cursor[key] = events[-1].id
        for follower in list(self._followers.get(key, ())):
            tail = follower.inbox[-1].id if follower.inbox else follower.last
            fresh = [e for e in events if stream_id_after(e.id, tail)]
            if not fresh:
                continue
            if len(follower.inbox) + len(fresh) > self._inbox_limit:
                # A slow client: stop buffering for it; it pages the rest with XRANGE.
                self._detach(follower)
            else:
                follower.inbox.extend(fresh)
            follower.wake.set()

    def _interrupt(self) -> None:
        """End the XREAD in flight so the next one includes the keys gained since."""
        if not self._unblock_ok or (self._interrupting and not self._interrupting.done()):
            return
        self._interrupting = asyncio.get_running_loop().create_task(self._unblock(self._generation))

    async def _unblock(self, generation: int) -> None:
        # The XREAD may not have reached the server yet (UNBLOCK then answers 0): retry
        # briefly while that same read is in flight. Worst case the read ends by itself.
        for _ in range(200):
            if self._reading is None or self._generation != generation:
                return
            reader_id = self._reader_id
            if reader_id is None:
                return
            try:
                if await self._r.client_unblock(reader_id):
                    return
            except ResponseError as exc:  # e.g. an ACL without CLIENT: fall back to the block
                self._unblock_ok = False
                log.warning("stream hub: CLIENT UNBLOCK refused (%s); new streams join "
                            "the shared read within %d ms", exc, self._block_ms)  # fmt: skip
                return
            except RedisError:
                return
            await asyncio.sleep(0.005)


class AsyncQueue:
    """The async reads the backend's waiting routes need, and the stream hub."""

    def __init__(
        self,
        redis: aioredis.Redis,
        reader: aioredis.Redis,
        keys: KeySchema | None = None,
        *,
        block_ms: int = 5000,
    ) -> None:
        self.redis = redis
        self._r: Any = redis  # str replies (see StreamHub)
        self.keys = keys or KeySchema()
        self.hub = StreamHub(redis, reader, block_ms=block_ms)
        self._reader = reader

    @classmethod
    def from_url(
        cls, url: str, keys: KeySchema | None = None, *, block_ms: int = 5000
    ) -> AsyncQueue:
        return cls(connect_async(url), connect_async(url, single=True), keys, block_ms=block_ms)

    def start(self) -> None:
        self.hub.start()

    async def close(self) -> None:
        await self.hub.close()
        await self._reader.aclose()
        await self.redis.aclose()

    async def get_job(self, job_id: str) -> dict[str, str] | None:
        h: dict[str, str] = await self._r.hgetall(self.keys.job(job_id))
        return h or None

    async def events(self, job_id: str, after: str = "0", count: int = 1000) -> list[Event]:
        """Stored events after ``after`` (no wait)."""
        low = f"({after}" if after != "0" else "-"
        return events_from_entries(
            await self._r.xrange(self.keys.events(job_id), min=low, count=count)
        )

    async def last_id(self, key: str) -> str:
        """The id of the stream's newest entry ("0" when empty): "now", to follow from."""
        newest = await self._r.xrevrange(key, count=1)
        return str(newest[0][0]) if newest else "0"

    async def wait_for_terminal(self, job_id: str, timeout_s: float) -> dict[str, str] | None:
        """The job's hash once it is terminal, or after ``timeout_s``; None if absent.

        Follows the job's event stream from its start (read in one round trip with the
        job), so a state change between the first look and the first wait cannot be
        missed; a terminal state event re-reads the hash (the script that ends a job writes
        both at once, so the hash read then is final)."""
        deadline = time.monotonic() + timeout_s
        key = self.keys.events(job_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        pipe.xrange(key, min="-", count=self.hub.page)
        replies = await pipe.execute()
        job: dict[str, str] = replies[0]
        entries: list[Entry] = replies[1]
        if not job or job.get("state") in _TERMINAL:
            return job or None
        follower = self.hub.follow(key, "0")
        events = events_from_entries(entries)
        self.hub.caught_up(follower, events)
        try:
            while not any(_ends(e) for e in events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return job
                events = await self.hub.read(follower, remaining)
        finally:
            self.hub.unfollow(follower)
        return await self.get_job(job_id) or job


def _ends(event: Event) -> bool:
    return event.kind == "state" and event.data.get("state") in _TERMINAL
