-- finish: end a running attempt (fenced by attempt id): success, failure, cancellation,
-- or a retry with backoff (which becomes "dead" when no attempts are left). A retry of a
-- job whose cancellation was requested ends it "cancelled" instead (error kind
-- "cancelled", the attempt's error kept): retried, the request would be lost, since the
-- next claim clears the flag. Release and reap honour the request the same way.
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  attempt id
-- ARGV[3]  outcome: succeeded | failed | cancelled | retry
-- ARGV[4]  result JSON ("" for none)
-- ARGV[5]  error message ("" for none)
-- ARGV[6]  error kind ("" for none): user_error | timeout | crashed | killed | ...
-- ARGV[7]  retry delay, ms (outcome retry only; backoff with jitter, made by the caller)
-- ARGV[8]  model id to register ("" for none; outcome succeeded only)
-- ARGV[9]  model record JSON ("" for none)
-- Returns  {1, new_state} when applied; {0, current_state} when refused because this
--          attempt no longer holds the job (stale attempt, cancelled, reaped, missing).

local id, attempt_id, outcome = ARGV[1], ARGV[2], ARGV[3]
local result, err, err_kind = ARGV[4], ARGV[5], ARGV[6]
local retry_delay, model_id, model_json = tonumber(ARGV[7]), ARGV[8], ARGV[9]

local job = load_job(id, 'state', 'attempt_id', 'attempt', 'max_attempts', 'seq',
                     'cancel_requested')
if job.state ~= 'running' or job.attempt_id ~= attempt_id then
  return {0, job.state or 'missing'}
end
if outcome == 'retry' and tonumber(job.cancel_requested or '0') == 1 then
  outcome, err_kind = 'cancelled', 'cancelled'
end

local now = now_ms()
redis.call('ZREM', K.leases, id)
redis.call('HSET', KEYS[1], 'error', err, 'error_kind', err_kind, 'lease_until', 0)

if outcome == 'retry' then
  if tonumber(job.attempt) < tonumber(job.max_attempts) then
    local retry_at = now + retry_delay
    redis.call('HSET', KEYS[1], 'retry_at', retry_at)
    redis.call('ZADD', K.delayed, retry_at, id)
    move_state(id, job.seq, 'running', 'retrying')
    state_event(id, 'retrying', {error = err, error_kind = err_kind, retry_at = retry_at})
    return {1, 'retrying'}
  end
  outcome = 'dead'
end

redis.call('HSET', KEYS[1], 'finished_at', now)
if result ~= '' then redis.call('HSET', KEYS[1], 'result', result) end
if outcome == 'succeeded' and model_id ~= '' then
  redis.call('SET', K.model(model_id), model_json)
  redis.call('ZADD', K.models, now, model_id)
  redis.call('HSET', KEYS[1], 'model_id', model_id)
end
move_state(id, job.seq, 'running', outcome)
state_event(id, outcome, {error = err, error_kind = err_kind})
return {1, outcome}
