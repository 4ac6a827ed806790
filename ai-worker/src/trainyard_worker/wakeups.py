"""The one thing the supervisor waits on while a job runs: a queue of wake-ups, fed by the
threads that see something happen (a training child exiting, a reply of the inference
host, a cancel message, a stop signal). The supervisor blocks on it with the time left
to its next real deadline (a lease renewal, a run timeout, the shutdown grace) as the
timeout: nothing on a job's path sleeps and looks again.

Cancels: each worker subscribes to its own pub/sub channel, on which ``cancel.lua``
publishes the id of a running job it flags. Pub/sub is best effort (a message sent while
the subscriber reconnects is lost), so lease renewals still report the flag; after every
(re)subscription the listener posts :class:`Resubscribed` so the supervisor renews at once
and so reads any flag it missed.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import redis

from trainyard.connection import connect

from .protocol import BatchReply

__all__ = [
    "CancelListener",
    "CancelMessage",
    "ChildExited",
    "HostGone",
    "HostReplied",
    "Resubscribed",
    "Signalled",
    "Wake",
    "Wakeups",
]

log = logging.getLogger("trainyard.worker")

_READ_S = 10.0  # longest single read on the cancel channel (not a tick: a message ends it)


@dataclass(frozen=True)
class ChildExited:
    """A training child ended (``token`` names the attempt that started it)."""

    token: object


@dataclass(frozen=True)
class HostReplied:
    generation: int  # which inference host process (a new one after each restart)
    reply: BatchReply


@dataclass(frozen=True)
class HostGone:
    """The inference host's protocol stream ended: it exited or was killed."""

    generation: int


@dataclass(frozen=True)
class CancelMessage:
    job_id: str


@dataclass(frozen=True)
class Resubscribed:
    """The cancel listener (re)subscribed: messages may have been lost meanwhile."""


@dataclass(frozen=True)
class Signalled:
    """SIGTERM or SIGINT: look at the stop flags now."""


Wake = ChildExited | HostReplied | HostGone | CancelMessage | Resubscribed | Signalled


class Wakeups:
    """A ``queue.SimpleQueue``: its ``put`` may run in a signal handler (it is reentrant,
    where ``queue.Queue.put`` could deadlock on its own lock held by the interrupted
    ``get``)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Wake] = queue.SimpleQueue()

    def post(self, wake: Wake) -> None:
        self._queue.put(wake)

    def next(self, timeout_s: float) -> Wake | None:
        """The next wake-up, or None when ``timeout_s`` passed without one."""
        try:
            return self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None


class CancelListener:
    """A daemon thread subscribed to this worker's cancel channel; posts each job id."""

    def __init__(self, redis_url: str, channel: str, wakeups: Wakeups) -> None:
        self._redis_url = redis_url
        self._channel = channel
        self._wakeups = wakeups
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="cancels", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def _listen(self) -> None:
        client: Any = connect(self._redis_url)  # redis-py's pubsub() is untyped
        failed = False
        while not self._closed.is_set():
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._closed.is_set():
                    # A bounded read: the health check (a PING) between reads finds a
                    # connection that died silently.
                    message = pubsub.get_message(timeout=_READ_S)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        failed = False
                        self._wakeups.post(Resubscribed())
                    elif message["type"] == "message":
                        self._wakeups.post(CancelMessage(str(message["data"])))
            except (redis.RedisError, OSError) as exc:
                if not failed:
                    log.warning("cancel channel lost (renewals still see cancels): %s", exc)
                failed = True
            finally:
                pubsub.close()
            self._closed.wait(1.0)  # before subscribing again to a server that is down
