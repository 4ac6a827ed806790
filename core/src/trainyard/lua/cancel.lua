-- cancel: cancel a job. Queued or retrying: cancelled at once. Running: flagged, and the
-- job id is published on the pub/sub channel of the worker holding it (K.cancels(worker
-- id)), so that worker stops it at once; pub/sub is best effort (a worker reconnecting
-- misses the message), so the worker also sees the flag on its next renew. It kills the
-- job's process group and finishes it as cancelled (or the reaper does, if that worker is
-- gone).
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  reason
-- Returns  {1, "cancelled"} cancelled now; {2, "running"} cancellation requested;
--          {0, state} already terminal (nothing changed); {-1, "missing"} no such job.
-- Also    cancelled now: a 'state' entry in K.activity, and the end counted
--          (K.stats_finished, K.stats_queue_wait when it was queued; trainyard.stats).

local id, reason = ARGV[1], ARGV[2]
local job = load_job(id, 'state', 'runtime', 'seq', 'type', 'model_id', 'worker_id',
                     'ready_at')
if not job.state then return {-1, 'missing'} end

if job.state == 'queued' or job.state == 'retrying' then
  ready_remove(id, job)
  redis.call('ZREM', K.delayed, id)
  redis.call('ZREM', K.expiring, id)
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'finished_at', now, 'error', reason,
             'error_kind', 'cancelled', 'cancel_requested', 1)
  move_state(id, job.seq, job.state, 'cancelled')
  state_event(id, 'cancelled', {reason = reason}, job)
  count_end(job, job.state, 'cancelled', 'cancelled', now)
  return {1, 'cancelled'}
end
if job.state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', 1, 'cancel_reason', reason)
  emit(id, 'cancel_requested', cjson.encode({reason = reason}))
  if job.worker_id and job.worker_id ~= '' then
    redis.call('PUBLISH', K.cancels(job.worker_id), id)
  end
  return {2, 'running'}
end
return {0, job.state}
