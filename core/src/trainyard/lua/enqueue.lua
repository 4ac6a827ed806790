-- enqueue: create a queued job, or return the job an idempotency key already names.
--
-- KEYS[1]  job hash of the new job (K.job(ARGV[1]))
-- ARGV[1]  job id (validated by the caller: [A-Za-z0-9_-])
-- ARGV[2]  runtime
-- ARGV[3]  job type (training | inference)
-- ARGV[4]  priority rank (0 high, 1 normal, 2 low)
-- ARGV[5]  idempotency key ("" for none)
-- ARGV[6]  idempotency key lifetime, seconds
-- ARGV[7]  time allowed in the queue before the job expires, ms (0: forever)
-- ARGV[8]  JSON object of further string fields for the job hash
-- Returns  {1, job_id} when created; {0, existing_job_id} when the idempotency key
--          already names a job that still exists.

local id, runtime, job_type, rank = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key, idem_ttl, queue_ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])

if idem_key ~= '' then
  local existing = redis.call('GET', K.idem(idem_key))
  if existing and redis.call('EXISTS', K.job(existing)) == 1 then
    return {0, existing}
  end
end

local now = now_ms()
local seq = redis.call('INCR', K.seq)
local expires_at = 0
if queue_ttl > 0 then expires_at = now + queue_ttl end

local fields = cjson.decode(ARGV[8])
for name, value in pairs(fields) do
  redis.call('HSET', KEYS[1], name, tostring(value))
end
redis.call('HSET', KEYS[1],
  'id', id, 'type', job_type, 'runtime', runtime, 'rank', rank, 'seq', seq,
  'state', 'queued', 'attempt', 0, 'stalls', 0, 'cancel_requested', 0,
  'created_at', now, 'expires_at', expires_at, 'idempotency_key', idem_key)

redis.call('ZADD', K.index_all, seq, id)
redis.call('ZADD', K.index_state('queued'), seq, id)
redis.call('ZADD', K.index_runtime(runtime), seq, id)
redis.call('ZADD', K.index_type(job_type), seq, id)
if idem_key ~= '' then
  redis.call('SET', K.idem(idem_key), id, 'EX', idem_ttl)
end
redis.call('ZADD', K.ready(runtime), ready_score(rank, seq), id)
if expires_at > 0 then redis.call('ZADD', K.expiring, expires_at, id) end
wake(runtime)
state_event(id, 'queued', {})
return {1, id}
