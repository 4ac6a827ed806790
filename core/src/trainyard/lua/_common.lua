-- Shared helpers, prepended to every script after the generated key table `K`
-- (see trainyard/keys.py) and the statistics table `STATS` (bucket bounds and the error
-- kinds counted by name, see trainyard/stats.py). Not a script of its own.
--
-- Besides the job's own stream, every state change is written to the global activity
-- stream K.activity (state_event; fields `kind` and `data`, MAXLEN ~ 10000), and every
-- end of a job (a terminal state) and every retry is counted in the K.stats_* hashes
-- (count_end, count_retry, count_batches), which trainyard.stats reads for /metrics.
--
-- Job state index invariant: a job id is in exactly one `index:state:<state>` zset,
-- the one named by its hash's `state` field; every transition goes through move_state.

local EVENTS_MAXLEN = 10000
local ACTIVITY_MAXLEN = 10000

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

-- At most 64 tokens wait (trimmed only when over: one command per wake-up, not two).
-- `count` (default 1): tokens to push, one per job, in one LPUSH (enqueue_batch.lua).
local WAKE_MAX = 64
local function wake(runtime, count)
  local tokens = {}
  for i = 1, math.min(count or 1, WAKE_MAX) do tokens[i] = '1' end
  if redis.call('LPUSH', K.wake(runtime), unpack(tokens)) > WAKE_MAX then
    redis.call('LTRIM', K.wake(runtime), 0, WAKE_MAX - 1)
  end
end

-- Index writes (ZADD of one member) go through `zadd`: written at once, unless a batch
-- collects them (collect_zadds ... flush_zadds, enqueue_batch.lua: one ZADD per key for
-- the whole batch instead of one per job). Only for a batch that reads none of those
-- zsets before it flushes.
local pending_zadds, pending_keys = nil, nil  -- key -> {score, id, ...}; nil: at once
local function zadd(key, score, id)
  if pending_zadds == nil then
    redis.call('ZADD', key, score, id)
    return
  end
  local members = pending_zadds[key]
  if members == nil then
    members = {}
    pending_zadds[key] = members
    pending_keys[#pending_keys + 1] = key
  end
  members[#members + 1] = score
  members[#members + 1] = id
end

local function collect_zadds()
  pending_zadds, pending_keys = {}, {}
end

local function flush_zadds()
  for _, key in ipairs(pending_keys) do redis.call('ZADD', key, unpack(pending_zadds[key])) end
  pending_zadds, pending_keys = nil, nil
end

-- The per-model ready index of a job, or nil: only inference jobs that name their model
-- are in one (a subset of the runtime's ready zset, same scores: batches and affinity).
local function ready_model_key(job)
  if job.type == 'inference' and job.model_id and job.model_id ~= '' then
    return K.ready_model(job.runtime .. ':' .. job.model_id)
  end
  return nil
end

-- Every entry into a ready queue goes through here: the runtime's zset, the model's zset
-- when it has one, and `ready_at` (how long it has waited, for affinity).
-- `job` needs runtime, rank, seq, type and model_id; `now` nil: the caller writes
-- `ready_at` itself (insert_job, in the job's one HSET).
local function ready_add(id, job, now)
  local score = ready_score(job.rank, job.seq)
  zadd(K.ready(job.runtime), score, id)
  local model_key = ready_model_key(job)
  if model_key then zadd(model_key, score, id) end
  if now then redis.call('HSET', K.job(id), 'ready_at', now) end
end

-- And every exit. `job` needs runtime, type and model_id. `found_in` (optional): the
-- ready zset the caller found the id in, taken out of it too should the hash disown it
-- (a stale entry, or the caller would find it again and again).
local function ready_remove(id, job, found_in)
  local ready_key = K.ready(job.runtime)
  redis.call('ZREM', ready_key, id)
  local model_key = ready_model_key(job)
  if model_key then redis.call('ZREM', model_key, id) end
  if found_in and found_in ~= ready_key and found_in ~= model_key then
    redis.call('ZREM', found_in, id)
  end
end

local function requeue(id, job, now)
  ready_add(id, job, now)
  wake(job.runtime)
end

local function load_job(id, ...)
  local values = redis.call('HMGET', K.job(id), ...)
  local job = {}
  for i, name in ipairs({...}) do job[name] = values[i] end
  return job
end

-- An entry of the global activity stream: `kind` (state | progress | worker) and `data`
-- (a table, written as JSON).
local function activity(kind, data)
  redis.call('XADD', K.activity, 'MAXLEN', '~', ACTIVITY_MAXLEN, '*',
             'kind', kind, 'data', cjson.encode(data))
end

-- A state change: the job's 'state' event and its activity entry. `job` (optional): a
-- table holding the job's `runtime` and `type` when the caller has them; otherwise one
-- HMGET reads them.
local function state_event(id, state, extra, job)
  local data = extra or {}
  data['state'] = state
  emit(id, 'state', cjson.encode(data))
  local runtime, job_type
  if job and job.runtime and job.type then
    runtime, job_type = job.runtime, job.type
  else
    local values = redis.call('HMGET', K.job(id), 'runtime', 'type')
    runtime, job_type = values[1], values[2]
  end
  activity('state', {job_id = id, state = state, runtime = runtime or '',
                     job_type = job_type or ''})
end

-- Statistics (K.stats_*, read by trainyard.stats). A histogram field counts the values
-- in one bucket (`<labels>|<i>`: i the first bound the value is at or under, #bounds + 1
-- above them all), `<labels>|sum` their sum.
local function observe(key, labels, bounds, value)
  local slot = #bounds + 1
  for i = 1, #bounds do
    if value <= bounds[i] then
      slot = i
      break
    end
  end
  redis.call('HINCRBY', key, labels .. '|' .. slot, 1)
  redis.call('HINCRBY', key, labels .. '|sum', value)
end

-- Count the end of a job (it entered the terminal state `outcome`, leaving `from`).
-- `job` needs runtime, type, ready_at and started_at. The histograms describe the attempt
-- that ended it: queue wait from its last entry into a ready queue (ready_at) to its
-- start, run time from its start to `now`. A job ended while queued waited until its end
-- (no run time); one ended while retrying (cancelled in its backoff) adds to neither.
local function count_end(job, from, outcome, err_kind, now)
  local kind = err_kind or ''
  if outcome == 'succeeded' then
    kind = ''
  elseif kind ~= '' and not STATS.error_kinds[kind] then
    kind = 'other'  -- closed label set: a bounded number of fields
  end
  local labels = (job.runtime or '') .. '|' .. (job.type or '') .. '|' .. outcome
  redis.call('HINCRBY', K.stats_finished, labels .. '|' .. kind, 1)
  local ready_at, started_at = tonumber(job.ready_at or ''), tonumber(job.started_at or '')
  if from == 'running' and ready_at and started_at then
    observe(K.stats_queue_wait, labels, STATS.wait_ms, math.max(started_at - ready_at, 0))
    observe(K.stats_run_time, labels, STATS.run_ms, math.max(now - started_at, 0))
  elseif from == 'queued' and ready_at then
    observe(K.stats_queue_wait, labels, STATS.wait_ms, math.max(now - ready_at, 0))
  end
end

-- Count a retry (a failed attempt that will run again). `job` needs runtime and type.
local function count_retry(job)
  redis.call('HINCRBY', K.stats_retries, (job.runtime or '') .. '|' .. (job.type or ''), 1)
end

-- Inference attempts ended by this script call (retries included), per runtime
-- (finish_attempt adds to it): a batch's jobs are finished in one call, so
-- count_batches observes each runtime's number as one batch size.
local ended_inference = {}
local function count_batches()
  for runtime, n in pairs(ended_inference) do
    observe(K.stats_batch_size, runtime, STATS.batch, n)
  end
  ended_inference = {}
end

-- A job that never started within its queue_ttl_s fails as "expired" (the caller has
-- taken it out of its ready queues). `job` needs seq, runtime, type and ready_at.
local function expire(id, job, now)
  redis.call('ZREM', K.expiring, id)
  redis.call('HSET', K.job(id), 'finished_at', now, 'error_kind', 'expired',
             'error', 'expired: waited in the queue past its queue_ttl_s without starting')
  move_state(id, job.seq, 'queued', 'failed')
  state_event(id, 'failed', {reason = 'expired'}, job)
  count_end(job, 'queued', 'failed', 'expired', now)
end

-- Create a queued job: its hash (the submission's own `fields`, then the lifecycle
-- fields), its place in every index and its ready queue. The caller wakes its runtime
-- (`wake`: a batch pushes its tokens at once). `seq`: the job's sequence number, nil to
-- draw the next one (a batch reserves its numbers with one INCRBY). Returns the seq.
local function insert_job(id, fields, runtime, job_type, rank, expires_at, idem_key, now, seq)
  seq = seq or redis.call('INCR', K.seq)
  local record = {}
  for name, value in pairs(fields) do record[name] = tostring(value) end
  local lifecycle = {
    id = id, type = job_type, runtime = runtime, rank = rank, seq = seq, state = 'queued',
    attempt = 0, stalls = 0, cancel_requested = 0, created_at = now, ready_at = now,
    expires_at = expires_at, idempotency_key = idem_key,
  }
  for name, value in pairs(lifecycle) do record[name] = value end
  local flat = {}
  for name, value in pairs(record) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', K.job(id), unpack(flat))  -- one write for the whole record
  zadd(K.index_all, seq, id)
  zadd(K.index_state('queued'), seq, id)
  zadd(K.index_runtime(runtime), seq, id)
  zadd(K.index_type(job_type), seq, id)
  ready_add(id, {runtime = runtime, rank = rank, seq = seq, type = job_type,
                 model_id = fields['model_id']}, nil)
  if tonumber(expires_at) > 0 then zadd(K.expiring, expires_at, id) end
  return seq
end

-- The job an idempotency key already names, if that job still exists; nil otherwise
-- ('' names none). enqueue.lua and enqueue_batch.lua answer it instead of creating one.
local function idempotent_job(idem_key)
  if idem_key == '' then return nil end
  local existing = redis.call('GET', K.idem(idem_key))
  if existing and redis.call('EXISTS', K.job(existing)) == 1 then return existing end
  return nil
end

-- What a submission does once it is known to create its job (the rest of enqueue.lua's
-- work, shared with enqueue_batch.lua): the job, its idempotency key, its 'queued' event.
-- ARGV-shaped strings as enqueue.lua takes them; the caller wakes the runtime.
local function create_job(id, runtime, job_type, rank, idem_key, idem_ttl, queue_ttl,
                          fields_json, now, seq)
  local expires_at = 0
  if tonumber(queue_ttl) > 0 then expires_at = now + tonumber(queue_ttl) end
  insert_job(id, cjson.decode(fields_json), runtime, job_type, rank, expires_at, idem_key,
             now, seq)
  if idem_key ~= '' then
    redis.call('SET', K.idem(idem_key), id, 'EX', idem_ttl)
  end
  state_event(id, 'queued', {}, {runtime = runtime, type = job_type})
end

-- Take a job id found in the ready zset `found_in`: out of its ready queues, then, if it
-- is queued, start an attempt on it (the attempt counted here, at claim time, so a job
-- that kills its worker every time still runs out of attempts). Returns the job hash as
-- a flat list, or nil when the job was not startable: expired in the queue (never
-- started, and past its queue_ttl_s: still in the expiring set; it is failed "expired"),
-- or not queued at all.
-- queue_ttl_s bounds the wait before the first start: only a job still in the expiring
-- set can expire, as in reap. Not a retry, nor a job a worker handed back (release gives
-- the attempt back, so its count may be 0 again, but it did start).
local function take_ready(id, found_in, worker_id, attempt_id, lease_ms, now)
  local job = load_job(id, 'state', 'runtime', 'seq', 'attempt', 'type', 'model_id',
                       'ready_at')
  ready_remove(id, job, found_in)
  if job.state ~= 'queued' then return nil end
  local expires_at = redis.call('ZSCORE', K.expiring, id)
  if expires_at and now >= tonumber(expires_at) then
    expire(id, job, now)
    return nil
  end
  local attempt = tonumber(job.attempt) + 1
  local lease_until = now + lease_ms
  redis.call('HSET', K.job(id), 'attempt', attempt, 'attempt_id', attempt_id,
             'worker_id', worker_id, 'started_at', now, 'lease_until', lease_until,
             'lease_ms', lease_ms, 'cancel_requested', 0)
  move_state(id, job.seq, 'queued', 'running')
  redis.call('ZREM', K.expiring, id)
  redis.call('ZADD', K.leases, lease_until, id)
  state_event(id, 'running', {attempt = attempt, worker_id = worker_id}, job)
  return redis.call('HGETALL', K.job(id))
end

-- The claiming worker's busy write (worker_state.lua's two fields), so a worker needs no
-- separate busy write per job. Only while the worker is registered (its hash exists): a
-- write after its registration expired would leave a partial hash that never expires.
local function mark_worker_busy(worker_id, job_id)
  local key = K.worker(worker_id)
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'state', 'busy', 'current_job', job_id)
  end
end

-- End a running attempt (fenced by attempt id), for finish.lua and finish_batch.lua; the
-- arguments are finish.lua's ARGV (see its header), `key` the job hash, `now` the time.
-- Returns {1, new_state} when applied; {0, current_state} when refused.
local function finish_attempt(key, id, attempt_id, outcome, result, err, err_kind,
                              retry_delay, model_id, model_json, now)
  local job = load_job(id, 'state', 'attempt_id', 'attempt', 'max_attempts', 'seq',
                       'cancel_requested', 'runtime', 'type', 'ready_at', 'started_at')
  if job.state ~= 'running' or job.attempt_id ~= attempt_id then
    return {0, job.state or 'missing'}
  end
  if outcome == 'retry' and tonumber(job.cancel_requested or '0') == 1 then
    outcome, err_kind = 'cancelled', 'cancelled'
  end

  redis.call('ZREM', K.leases, id)
  redis.call('HSET', key, 'error', err, 'error_kind', err_kind, 'lease_until', 0)
  if job.type == 'inference' then
    ended_inference[job.runtime] = (ended_inference[job.runtime] or 0) + 1
  end

  if outcome == 'retry' then
    if tonumber(job.attempt) < tonumber(job.max_attempts) then
      local retry_at = now + retry_delay
      redis.call('HSET', key, 'retry_at', retry_at)
      redis.call('ZADD', K.delayed, retry_at, id)
      move_state(id, job.seq, 'running', 'retrying')
      state_event(id, 'retrying', {error = err, error_kind = err_kind, retry_at = retry_at},
                  job)
      count_retry(job)
      return {1, 'retrying'}
    end
    outcome = 'dead'
  end

  redis.call('HSET', key, 'finished_at', now)
  if result ~= '' then redis.call('HSET', key, 'result', result) end
  if outcome == 'succeeded' and model_id ~= '' then
    redis.call('SET', K.model(model_id), model_json)
    redis.call('ZADD', K.models, now, model_id)
    redis.call('HSET', key, 'model_id', model_id)
  end
  move_state(id, job.seq, 'running', outcome)
  state_event(id, outcome, {error = err, error_kind = err_kind}, job)
  count_end(job, 'running', outcome, err_kind, now)
  return {1, outcome}
end
