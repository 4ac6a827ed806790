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
local expires_at = 0
if queue_ttl > 0 then expires_at = now + queue_ttl end
insert_job(id, cjson.decode(ARGV[8]), runtime, job_type, rank, expires_at, idem_key, now)
if idem_key ~= '' then
  redis.call('SET', K.idem(idem_key), id, 'EX', idem_ttl)
end
state_event(id, 'queued', {})
return {1, id}
