-- claim: promote due retries, then take the best queued job of the given runtimes and
-- start an attempt on it, in one step.
--
-- KEYS[1]  the leases zset (K.leases)
-- ARGV[1]  worker id
-- ARGV[2]  attempt id for the new attempt (random, made by the caller)
-- ARGV[3]  lease length, ms
-- ARGV[4..] runtimes this worker serves
-- Returns  the claimed job hash as a flat {field, value, ...} list, or nil when no job
--          is ready. Jobs found expired in the queue on the way (never started, and
--          past their queue_ttl_s: still in the expiring set) are failed (reason
--          "expired") and skipped.
--
-- Best job: lowest ready score over all the runtimes (priority, then FIFO). The attempt
-- is counted here, at claim time, so a job that kills its worker every time still runs
-- out of attempts.

local worker_id, attempt_id, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()

-- 1. Retries whose backoff has passed go back to their ready queue.
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', K.delayed, id)
  local job = load_job(id, 'state', 'runtime', 'rank', 'seq')
  if job.state == 'retrying' then
    move_state(id, job.seq, 'retrying', 'queued')
    requeue(id, job)
    state_event(id, 'queued', {reason = 'retry due'})
  end
end

-- 2. Pick and start.
for _ = 1, 1000 do
  local best_id, best_score, best_runtime = nil, nil, nil
  for i = 4, #ARGV do
    local top = redis.call('ZRANGE', K.ready(ARGV[i]), 0, 0, 'WITHSCORES')
    if top[1] and (best_score == nil or tonumber(top[2]) < best_score) then
      best_id, best_score, best_runtime = top[1], tonumber(top[2]), ARGV[i]
    end
  end
  if best_id == nil then return nil end

  local job = load_job(best_id, 'state', 'runtime', 'seq', 'attempt')
  redis.call('ZREM', K.ready(best_runtime), best_id)
  if job.state == 'queued' then
    -- queue_ttl_s bounds the wait before the first start: only a job still in the
    -- expiring set can expire, as in reap. Not a retry, nor a job a worker handed back
    -- (release gives the attempt back, so its count may be 0 again, but it did start).
    local expires_at = redis.call('ZSCORE', K.expiring, best_id)
    if expires_at and now >= tonumber(expires_at) then
      expire(best_id, job.seq, now)
    else
      local attempt = tonumber(job.attempt) + 1
      local lease_until = now + lease_ms
      redis.call('HSET', K.job(best_id), 'attempt', attempt, 'attempt_id', attempt_id,
                 'worker_id', worker_id, 'started_at', now, 'lease_until', lease_until,
                 'lease_ms', lease_ms, 'cancel_requested', 0)
      move_state(best_id, job.seq, 'queued', 'running')
      redis.call('ZREM', K.expiring, best_id)
      redis.call('ZADD', K.leases, lease_until, best_id)
      state_event(best_id, 'running', {attempt = attempt, worker_id = worker_id})
      return redis.call('HGETALL', K.job(best_id))
    end
  end
end
return nil
