"""What the benchmarks share: a private server, the server's own accounting (CPU and
commands from INFO), a count of client round trips, percentiles and table printing.

Not a benchmark itself; ``bench_peers.py`` and ``bench_fleet.py`` import it.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

__all__ = [
    "RoundTripCounter",
    "ServerSnapshot",
    "hiredis_in_use",
    "machine_load",
    "median",
    "pct",
    "print_table",
    "worker_heartbeat_fields",
]

# Commands the benchmark itself sends to read the server's accounting; not counted.
_OWN_COMMANDS = frozenset(
    {"info", "config|resetstat", "client|list", "client|setname", "ping", "hello", "llen", "zcard",
     "dbsize", "client|info", "select"}
)  # fmt: skip


@dataclass(frozen=True)
class ServerSnapshot:
    """The server's CPU seconds (user + sys) and per-command call counts at one moment."""

    cpu_s: float
    calls: dict[str, int]
    usec: dict[str, int]
    blocked_clients: int = 0

    @classmethod
    def take(cls, r: redis.Redis) -> ServerSnapshot:
        info: dict[str, Any] = r.info("all")
        calls: dict[str, int] = {}
        usec: dict[str, int] = {}
        for name, value in info.items():
            if isinstance(name, str) and name.startswith("cmdstat_") and isinstance(value, dict):
                calls[name[len("cmdstat_") :]] = int(value["calls"])
                usec[name[len("cmdstat_") :]] = int(value["usec"])
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cls(cpu, calls, usec, int(info.get("blocked_clients", 0)))

    def since(self, before: ServerSnapshot) -> ServerDelta:
        calls = {
            k: v - before.calls.get(k, 0)
            for k, v in self.calls.items()
            if k not in _OWN_COMMANDS and v - before.calls.get(k, 0) > 0
        }
        usec = {k: v - before.usec.get(k, 0) for k, v in self.usec.items() if k in calls}
        return ServerDelta(self.cpu_s - before.cpu_s, calls, usec)


@dataclass(frozen=True)
class ServerDelta:
    """What the server did between two snapshots. ``calls`` counts every command it ran,
    those run inside Lua scripts included (Valkey counts them under their own names)."""

    cpu_s: float
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    @property
    def script_calls(self) -> int:
        return sum(v for k, v in self.calls.items() if k in ("eval", "evalsha", "fcall"))

    def top(self, n: int = 8) -> list[tuple[str, int]]:
        return sorted(self.calls.items(), key=lambda kv: -kv[1])[:n]


class RoundTripCounter:
    """Counts what this process sends to the server: round trips (one per request or
    pipeline) and the commands in them. Installed by patching redis-py's connection
    classes (sync and asyncio), so every library that talks through redis-py is counted
    alike. Valkey's own counts (``ServerSnapshot``) include the commands run inside Lua
    scripts; these do not."""

    round_trips = 0
    commands = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        cls._installed = True
        from redis.asyncio.connection import AbstractConnection as AsyncConnection
        from redis.connection import AbstractConnection

        sync_send, async_send = (
            AbstractConnection.send_packed_command,
            AsyncConnection.send_packed_command,
        )
        sync_one, async_one = AbstractConnection.send_command, AsyncConnection.send_command
        sync_many, async_many = AbstractConnection.pack_commands, AsyncConnection.pack_commands

        def send(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.round_trips += 1
            return sync_send(self, *args, **kwargs)

        async def asend(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.round_trips += 1
            return await async_send(self, *args, **kwargs)

        def one(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.commands += 1
            return sync_one(self, *args, **kwargs)

        async def aone(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.commands += 1
            return await async_one(self, *args, **kwargs)

        def many(self: Any, commands: Any) -> Any:
            commands = list(commands)
            cls.commands += len(commands)
            return sync_many(self, commands)

        def amany(self: Any, commands: Any) -> Any:
            commands = list(commands)
            cls.commands += len(commands)
            return async_many(self, commands)

        patches: list[tuple[Any, str, Any]] = [
            (AbstractConnection, "send_packed_command", send),
            (AsyncConnection, "send_packed_command", asend),
            (AbstractConnection, "send_command", one),
            (AsyncConnection, "send_command", aone),
            (AbstractConnection, "pack_commands", many),
            (AsyncConnection, "pack_commands", amany),
        ]
        for owner, name, fn in patches:
            setattr(owner, name, fn)

    @classmethod
    def read(cls) -> tuple[int, int]:
        return cls.round_trips, cls.commands


def worker_heartbeat_fields(
    state: str, job: str | None, runtime: str = "sklearn"
) -> dict[str, Any]:
    """What the supervisor's full heartbeat writes: the same fields, of similar sizes."""
    return {
        "runtime": runtime, "framework": "scikit-learn", "framework_version": "1.9.1",
        "packages": '{"scikit-learn":"1.9.1","numpy":"2.4.6","skops":"0.16.0"}',
        "device": "cpu", "host": "bench-host", "pid": 4242, "state": state,
        "current_job": job or "", "loaded_models": "[]", "gpus": "[]", "started_at": 0,
    }  # fmt: skip


def hiredis_in_use() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (inclusive method); the single value for one sample."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Callable[[Any], str] | None = None
) -> None:
    """A plain aligned table; the first column left-aligned, the rest right-aligned."""

    def cell(value: Any) -> str:
        if fmt is not None:
            return fmt(value)
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    text = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    for n, row in enumerate(text):
        print(
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
        )
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
