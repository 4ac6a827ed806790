-- cancel: cancel a job. Queued or retrying: cancelled at once. Running: flagged; the
-- worker holding it sees the flag on its next renew, kills the job's process group and
-- finishes it as cancelled (or the reaper does, if that worker is gone).
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  reason
-- Returns  {1, "cancelled"} cancelled now; {2, "running"} cancellation requested;
--          {0, state} already terminal (nothing changed); {-1, "missing"} no such job.

local id, reason = ARGV[1], ARGV[2]
local job = load_job(id, 'state', 'runtime', 'seq')
if not job.state then return {-1, 'missing'} end

if job.state == 'queued' or job.state == 'retrying' then
  redis.call('ZREM', K.ready(job.runtime), id)
  redis.call('ZREM', K.delayed, id)
  redis.call('ZREM', K.expiring, id)
  redis.call('HSET', KEYS[1], 'finished_at', now_ms(), 'error', reason,
             'error_kind', 'cancelled', 'cancel_requested', 1)
  move_state(id, job.seq, job.state, 'cancelled')
  state_event(id, 'cancelled', {reason = reason})
  return {1, 'cancelled'}
end
if job.state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', 1, 'cancel_reason', reason)
  emit(id, 'cancel_requested', cjson.encode({reason = reason}))
  return {2, 'running'}
end
return {0, job.state}
