"""Every Redis key Trainyard uses, in one place.

All keys share one hash tag (``{trainyard}`` by default) so that a Redis Cluster keeps
them on one slot and every Lua script may touch any of them. The Lua scripts get the same
names through a preamble generated from :meth:`KeySchema.lua_table`, so no key name is
spelled twice.

| key                                | type   | holds                                              |
|------------------------------------|--------|----------------------------------------------------|
| ``<p>job:<id>``                    | hash   | the job record; the source of truth                |
| ``<p>events:<id>``                 | stream | the job's events (state changes, progress, logs)   |
| ``<p>ready:<runtime>``             | zset   | queued job ids; score = priority band + sequence   |
| ``<p>ready_model:<rt>:<model>``    | zset   | the queued inference jobs of one model (a subset   |
|                                    |        | of ``ready:<rt>``, same scores): batches, affinity |
| ``<p>wake:<runtime>``              | list   | wake-up tokens idle workers block on (BLPOP)       |
| ``<p>wake_worker:<worker id>``     | list   | wake-up tokens for one worker: a job of a model it |
|                                    |        | holds was left to it (affinity); expires           |
| ``<p>delayed``                     | zset   | job ids waiting for a retry; score = due time (ms) |
| ``<p>expiring``                    | zset   | never-started jobs with a queue TTL; score = when  |
| ``<p>leases``                      | zset   | running job ids; score = lease deadline (ms)       |
| ``<p>seq``                         | string | submission counter (FIFO order, cursors)           |
| ``<p>reaper_lock``                 | string | set while a reap scan's interval runs (PX): one    |
|                                    |        | scan per interval for the whole fleet              |
| ``<p>idem:<key>``                  | string | idempotency key -> job id (expires)                |
| ``<p>index:all``                   | zset   | every job id; score = sequence                     |
| ``<p>index:state:<state>``         | zset   | job ids in that state; score = sequence            |
| ``<p>index:runtime:<runtime>``     | zset   | job ids routed to that runtime; score = sequence   |
| ``<p>index:type:<job_type>``       | zset   | job ids of that type; score = sequence             |
| ``<p>workers``                     | zset   | worker ids; score = last heartbeat (ms)            |
| ``<p>worker:<id>``                 | hash   | a worker's registration (expires)                  |
| ``<p>worker_models:<id>``          | set    | ``<rt>:<model>`` the worker holds loaded (expires) |
| ``<p>model_holders:<rt>:<model>``  | zset   | worker ids holding the model; score = last seen ms |
| ``<p>cancels:<worker id>``         | pubsub | channel: ids of that worker's jobs to cancel       |
| ``<p>models``                      | zset   | model ids; score = registration time (ms)          |
| ``<p>model:<id>``                  | string | the model record (JSON)                            |
| ``<p>activity``                    | stream | every job's state changes and progress, and worker |
|                                    |        | up/down/lost, for dashboards (MAXLEN ~ 10000)      |
| ``<p>worker_runtimes``             | hash   | worker id -> runtime, while it is registered (so   |
|                                    |        | a worker reaped as lost still names its runtime)   |
| ``<p>stats:finished``              | hash   | ``<rt>|<type>|<outcome>|<error kind>`` -> count    |
| ``<p>stats:retries``               | hash   | ``<rt>|<type>`` -> count                           |
| ``<p>stats:queue_wait``            | hash   | histogram (see ``trainyard.stats``): fields        |
|                                    |        | ``<rt>|<type>|<outcome>|<bucket>`` and ``...|sum`` |
| ``<p>stats:run_time``              | hash   | the same, run time of the last attempt             |
| ``<p>stats:batch_size``            | hash   | ``<rt>|<bucket>`` and ``<rt>|sum``                 |

``<rt>:<model>`` is the runtime and the model id joined by ``:`` (runtime names hold no
``:``). The ``stats:*`` hashes are counters the scripts keep for ``/metrics``; their
label values come from closed sets, so they hold a bounded number of fields.
``cancels:<worker id>`` is a pub/sub channel, not a key; it carries the prefix so
that it is namespaced like the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_NAMESPACE", "KeySchema"]

DEFAULT_NAMESPACE = "trainyard"

# name -> suffix after the prefix. A suffix ending in ":" takes one argument (an id).
# Both the Python methods below and the Lua preamble are built from this table.
_KEYS: dict[str, str] = {
    "job": "job:",
    "events": "events:",
    "ready": "ready:",
    "ready_model": "ready_model:",
    "wake": "wake:",
    "wake_worker": "wake_worker:",
    "delayed": "delayed",
    "expiring": "expiring",
    "leases": "leases",
    "seq": "seq",
    "reaper_lock": "reaper_lock",
    "idem": "idem:",
    "index_all": "index:all",
    "index_state": "index:state:",
    "index_runtime": "index:runtime:",
    "index_type": "index:type:",
    "workers": "workers",
    "worker": "worker:",
    "worker_models": "worker_models:",
    "model_holders": "model_holders:",
    "cancels": "cancels:",
    "models": "models",
    "model": "model:",
    "activity": "activity",
    "worker_runtimes": "worker_runtimes",
    "stats_finished": "stats:finished",
    "stats_retries": "stats:retries",
    "stats_queue_wait": "stats:queue_wait",
    "stats_run_time": "stats:run_time",
    "stats_batch_size": "stats:batch_size",
}


@dataclass(frozen=True)
class KeySchema:
    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}:"

    def _key(self, name: str, arg: str | None = None) -> str:
        suffix = _KEYS[name]
        if suffix.endswith(":"):
            if arg is None:
                raise TypeError(f"key {name!r} needs an argument")
            return self.prefix + suffix + arg
        return self.prefix + suffix

    def job(self, job_id: str) -> str:
        return self._key("job", job_id)

    def events(self, job_id: str) -> str:
        return self._key("events", job_id)

    def ready(self, runtime: str) -> str:
        return self._key("ready", runtime)

    def ready_model(self, runtime: str, model_id: str) -> str:
        """The per-model ready index (Lua: ``K.ready_model(runtime .. ':' .. model_id)``)."""
        return self._key("ready_model", f"{runtime}:{model_id}")

    def wake(self, runtime: str) -> str:
        return self._key("wake", runtime)

    def wake_worker(self, worker_id: str) -> str:
        return self._key("wake_worker", worker_id)

    def idem(self, key: str) -> str:
        return self._key("idem", key)

    def index_state(self, state: str) -> str:
        return self._key("index_state", state)

    def index_runtime(self, runtime: str) -> str:
        return self._key("index_runtime", runtime)

    def index_type(self, job_type: str) -> str:
        return self._key("index_type", job_type)

    def worker(self, worker_id: str) -> str:
        return self._key("worker", worker_id)

    def worker_models(self, worker_id: str) -> str:
        return self._key("worker_models", worker_id)

    def model_holders(self, runtime: str, model_id: str) -> str:
        """Lua: ``K.model_holders(runtime .. ':' .. model_id)``."""
        return self._key("model_holders", f"{runtime}:{model_id}")

    def cancels(self, worker_id: str) -> str:
        """The pub/sub channel cancel.lua publishes a running job's id on (not a key)."""
        return self._key("cancels", worker_id)

    def model(self, model_id: str) -> str:
        return self._key("model", model_id)

    @property
    def delayed(self) -> str:
        return self._key("delayed")

    @property
    def expiring(self) -> str:
        return self._key("expiring")

    @property
    def leases(self) -> str:
        return self._key("leases")

    @property
    def seq(self) -> str:
        return self._key("seq")

    @property
    def reaper_lock(self) -> str:
        return self._key("reaper_lock")

    @property
    def index_all(self) -> str:
        return self._key("index_all")

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def models(self) -> str:
        return self._key("models")

    @property
    def activity(self) -> str:
        """The global activity stream (state changes, progress, worker up/down/lost)."""
        return self._key("activity")

    @property
    def worker_runtimes(self) -> str:
        return self._key("worker_runtimes")

    @property
    def stats_finished(self) -> str:
        return self._key("stats_finished")

    @property
    def stats_retries(self) -> str:
        return self._key("stats_retries")

    @property
    def stats_queue_wait(self) -> str:
        return self._key("stats_queue_wait")

    @property
    def stats_run_time(self) -> str:
        return self._key("stats_run_time")

    @property
    def stats_batch_size(self) -> str:
        return self._key("stats_batch_size")

    def lua_table(self) -> str:
        """A Lua preamble defining ``K`` with the same key builders, for the scripts."""
        lines = [f"local P = {_lua_string(self.prefix)}", "local K = {"]
        for name, suffix in _KEYS.items():
            if suffix.endswith(":"):
                lines.append(f"  {name} = function(a) return P .. {_lua_string(suffix)} .. a end,")
            else:
                lines.append(f"  {name} = P .. {_lua_string(suffix)},")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
