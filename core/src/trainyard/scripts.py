"""Loads the Lua scripts in ``lua/``: each gets the generated key table, the statistics'
bucket bounds (``trainyard.stats``) and the shared helpers prepended, and is registered
with redis-py (EVALSHA, falling back to EVAL)."""

from __future__ import annotations

from importlib.resources import files

from redis import Redis
from redis.commands.core import Script

from .keys import KeySchema
from .stats import stats_lua_table

__all__ = ["SCRIPT_NAMES", "Scripts", "script_source"]

SCRIPT_NAMES = (
    "enqueue",
    "enqueue_batch",
    "claim",
    "renew",
    "report",
    "finish",
    "cancel",
    "reap",
    "release",
    "redrive",
    "heartbeat",
    "claim_batch",
    "finish_batch",
    "worker_state",
    "loaded_models",
    "unregister",
)


def _read(name: str) -> str:
    return files("trainyard").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def script_source(name: str, keys: KeySchema) -> str:
    return keys.lua_table() + stats_lua_table() + _read("_common") + "\n" + _read(name)


class Scripts:
    def __init__(self, redis: Redis, keys: KeySchema) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, redis.register_script(script_source(name, keys)))

    enqueue: Script
    enqueue_batch: Script
    claim: Script
    renew: Script
    report: Script
    finish: Script
    cancel: Script
    reap: Script
    release: Script
    redrive: Script
    heartbeat: Script
    claim_batch: Script
    finish_batch: Script
    worker_state: Script
    loaded_models: Script
    unregister: Script
