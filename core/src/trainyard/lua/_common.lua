-- Shared helpers, prepended to every script after the generated key table `K`
-- (see trainyard/keys.py). Not a script of its own.
--
-- Job state index invariant: a job id is in exactly one `index:state:<state>` zset,
-- the one named by its hash's `state` field; every transition goes through move_state.

local EVENTS_MAXLEN = 10000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ready-queue score: priority band first (0 = high), then submission order (FIFO).
local function ready_score(rank, seq)
  return tonumber(rank) * 1099511627776 + tonumber(seq)
end

local function emit(id, kind, data_json)
  redis.call('XADD', K.events(id), 'MAXLEN', '~', EVENTS_MAXLEN, '*',
             'kind', kind, 'data', data_json)
end

local function move_state(id, seq, from, to)
  redis.call('ZREM', K.index_state(from), id)
  redis.call('ZADD', K.index_state(to), seq, id)
  redis.call('HSET', K.job(id), 'state', to)
end

local function wake(runtime)
  redis.call('LPUSH', K.wake(runtime), '1')
  redis.call('LTRIM', K.wake(runtime), 0, 63)
end

local function requeue(id, job)
  redis.call('ZADD', K.ready(job.runtime), ready_score(job.rank, job.seq), id)
  wake(job.runtime)
end

local function load_job(id, ...)
  local values = redis.call('HMGET', K.job(id), ...)
  local job = {}
  for i, name in ipairs({...}) do job[name] = values[i] end
  return job
end

local function state_event(id, state, extra)
  local data = extra or {}
  data['state'] = state
  emit(id, 'state', cjson.encode(data))
end

-- A job that never started within its queue_ttl_s fails as "expired".
local function expire(id, seq, now)
  redis.call('ZREM', K.expiring, id)
  redis.call('HSET', K.job(id), 'finished_at', now, 'error_kind', 'expired',
             'error', 'expired: waited in the queue past its queue_ttl_s without starting')
  move_state(id, seq, 'queued', 'failed')
  state_event(id, 'failed', {reason = 'expired'})
end

-- Create a queued job: its hash (the submission's own `fields`, then the lifecycle
-- fields), its place in every index and its ready queue, and a wake-up for its runtime.
-- Returns the job's sequence number.
local function insert_job(id, fields, runtime, job_type, rank, expires_at, idem_key, now)
  local seq = redis.call('INCR', K.seq)
  for name, value in pairs(fields) do
    redis.call('HSET', K.job(id), name, tostring(value))
  end
  redis.call('HSET', K.job(id),
    'id', id, 'type', job_type, 'runtime', runtime, 'rank', rank, 'seq', seq,
    'state', 'queued', 'attempt', 0, 'stalls', 0, 'cancel_requested', 0,
    'created_at', now, 'expires_at', expires_at, 'idempotency_key', idem_key)
  redis.call('ZADD', K.index_all, seq, id)
  redis.call('ZADD', K.index_state('queued'), seq, id)
  redis.call('ZADD', K.index_runtime(runtime), seq, id)
  redis.call('ZADD', K.index_type(job_type), seq, id)
  redis.call('ZADD', K.ready(runtime), ready_score(rank, seq), id)
  if tonumber(expires_at) > 0 then redis.call('ZADD', K.expiring, expires_at, id) end
  wake(runtime)
  return seq
end
