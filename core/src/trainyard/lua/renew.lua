-- renew: extend the lease of a running attempt (fenced by attempt id).
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  attempt id
-- ARGV[3]  lease length, ms
-- Returns  {1, cancel_requested} when renewed (cancel_requested is 0 or 1);
--          {0, state} when this attempt no longer holds the job (the caller must stop it).

local id, attempt_id, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local job = load_job(id, 'state', 'attempt_id', 'cancel_requested')
if job.state ~= 'running' or job.attempt_id ~= attempt_id then
  return {0, job.state or 'missing'}
end
local lease_until = now_ms() + lease_ms
redis.call('HSET', KEYS[1], 'lease_until', lease_until)
redis.call('ZADD', K.leases, lease_until, id)
return {1, tonumber(job.cancel_requested or '0')}
