-- release: hand a running job back to its queue without counting the attempt (the
-- worker is shutting down gracefully). Fenced by attempt id. A job whose cancellation
-- was requested is not handed back but cancelled (its request would be lost otherwise:
-- the next claim clears the flag).
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  attempt id
-- ARGV[3]  reason
-- Returns  1 when handed back (or cancelled, see above); 0 when this attempt no longer
--          holds the job.
-- Also    a 'state' entry in K.activity; cancelled: the end counted (K.stats_finished,
--          K.stats_queue_wait, K.stats_run_time; trainyard.stats). A hand-back is no retry.

local id, attempt_id, reason = ARGV[1], ARGV[2], ARGV[3]
local job = load_job(id, 'state', 'attempt_id', 'attempt', 'runtime', 'rank', 'seq',
                     'cancel_requested', 'cancel_reason', 'type', 'model_id', 'ready_at',
                     'started_at')
if job.state ~= 'running' or job.attempt_id ~= attempt_id then
  return 0
end
local now = now_ms()
redis.call('ZREM', K.leases, id)
redis.call('HSET', KEYS[1], 'attempt', math.max(tonumber(job.attempt) - 1, 0),
           'attempt_id', '', 'lease_until', 0, 'worker_id', '')
if tonumber(job.cancel_requested or '0') == 1 then
  local why = job.cancel_reason or 'cancelled'
  redis.call('HSET', KEYS[1], 'finished_at', now, 'error', why, 'error_kind', 'cancelled')
  move_state(id, job.seq, 'running', 'cancelled')
  state_event(id, 'cancelled', {reason = why}, job)
  count_end(job, 'running', 'cancelled', 'cancelled', now)
  return 1
end
move_state(id, job.seq, 'running', 'queued')
requeue(id, job, now)
state_event(id, 'queued', {reason = reason}, job)
return 1
