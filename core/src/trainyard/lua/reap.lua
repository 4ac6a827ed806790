-- reap: recover running jobs whose lease has expired (their worker is gone or stuck).
-- Each is re-checked here: still running and still expired. Then it is requeued at its
-- old place in line (attempt already counted at claim), or goes to "dead" when it has
-- used all its attempts, or to "cancelled" when a cancel was requested. The old attempt
-- id is cleared, so the lost attempt's writes are refused from now on.
--
-- KEYS[1]  the leases zset (K.leases)
-- ARGV[1]  most jobs to reap in this call
-- ARGV[2]  interval, ms (0: scan on every call). > 0: at most one scan per interval for
--          the whole fleet: the scan runs only if `SET K.reaper_lock 1 NX PX interval`
--          succeeds, so N workers each calling reap every interval cost one scan, not N.
-- It also fails queued jobs that never started within their queue_ttl_s, so a job for a
-- runtime no worker serves does not wait forever.
--
-- Returns  a flat list {job_id, new_state, ...} of the jobs reaped or expired; empty when
--          another call scanned within the interval (gated: nothing was looked at).
-- Also    a 'state' entry in K.activity per job; counted (trainyard.stats): a requeued
--          job as a retry (K.stats_retries), a job ended (dead, cancelled, expired) in
--          K.stats_finished, K.stats_queue_wait and K.stats_run_time.

local limit, every_ms = tonumber(ARGV[1]), tonumber(ARGV[2] or '0')
if every_ms > 0 and not redis.call('SET', K.reaper_lock, '1', 'NX', 'PX', every_ms) then
  return {}
end
local now = now_ms()
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local job = load_job(id, 'state', 'lease_until', 'attempt', 'max_attempts', 'runtime',
                       'rank', 'seq', 'stalls', 'cancel_requested', 'worker_id', 'type',
                       'model_id', 'ready_at', 'started_at')
  if job.state ~= 'running' then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(job.lease_until) <= now then
    redis.call('ZREM', KEYS[1], id)
    local lost = 'worker lost: lease expired during attempt ' .. job.attempt ..
                 ' of ' .. job.max_attempts .. ' (worker ' .. (job.worker_id or '?') .. ')'
    redis.call('HSET', K.job(id), 'stalls', tonumber(job.stalls) + 1, 'attempt_id', '',
               'lease_until', 0, 'error', lost, 'error_kind', 'lost')
    local new_state
    if tonumber(job.cancel_requested) == 1 then
      new_state = 'cancelled'
      redis.call('HSET', K.job(id), 'error_kind', 'cancelled')
    elseif tonumber(job.attempt) >= tonumber(job.max_attempts) then
      new_state = 'dead'
    else
      new_state = 'queued'
    end
    move_state(id, job.seq, 'running', new_state)
    if new_state == 'queued' then
      requeue(id, job, now)
      count_retry(job)
    else
      redis.call('HSET', K.job(id), 'finished_at', now)
      count_end(job, 'running', new_state, new_state == 'cancelled' and 'cancelled' or 'lost',
                now)
    end
    state_event(id, new_state, {reason = lost}, job)
    table.insert(out, id)
    table.insert(out, new_state)
  end
end
local due = redis.call('ZRANGEBYSCORE', K.expiring, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local job = load_job(id, 'state', 'attempt', 'runtime', 'seq', 'type', 'model_id',
                       'ready_at')
  if job.state == 'queued' and tonumber(job.attempt) == 0 then
    ready_remove(id, job)
    expire(id, job, now)
    table.insert(out, id)
    table.insert(out, 'failed')
  else
    redis.call('ZREM', K.expiring, id)
  end
end
return out
