-- redrive: run a dead job (out of attempts) again, as a NEW queued job with the same
-- submission (request, type, runtime, priority, attempts, timeout) and a fresh attempt
-- count. The dead job stays dead (terminal states never change); the two are linked both
-- ways: the new job's `redriven_from`, the dead job's `redriven_to`. Redriving the same
-- dead job again returns the job it was already redriven to, so a retried request does not
-- queue it twice.
--
-- KEYS[1]  the dead job's hash
-- ARGV[1]  the dead job's id
-- ARGV[2]  the new job's id (validated by the caller: [A-Za-z0-9_-])
-- ARGV[3]  reason, recorded in both jobs' event streams
-- Returns  {1, new_job_id} redriven now; {2, new_job_id} already redriven to that job;
--          {0, state} not dead (nothing changed); {-1, "missing"} no such job.
-- Also    the new job's 'queued' entry in K.activity (a new job: nothing is counted in
--          K.stats_*; the dead job stays counted as dead).

local old_id, new_id, reason = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGETALL', KEYS[1])
if #old == 0 then return {-1, 'missing'} end
local job = {}
for i = 1, #old, 2 do job[old[i]] = old[i + 1] end

if job.state ~= 'dead' then return {0, job.state} end
if job.redriven_to and job.redriven_to ~= '' and
   redis.call('EXISTS', K.job(job.redriven_to)) == 1 then
  return {2, job.redriven_to}
end

-- What the dead job's lifecycle wrote is not part of the submission: everything else is.
local lifecycle = {
  id = true, type = true, runtime = true, rank = true, seq = true, state = true,
  attempt = true, attempt_id = true, worker_id = true, started_at = true,
  finished_at = true, lease_until = true, lease_ms = true, error = true, error_kind = true,
  result = true, model_id = true, stalls = true, cancel_requested = true,
  cancel_reason = true, retry_at = true, created_at = true, expires_at = true, progress = true,
  idempotency_key = true, redriven_to = true, redriven_from = true, ready_at = true,
}
-- An inference job's model_id is part of its submission (the model it asks for); a
-- training job's is what its success registered.
if job.type == 'inference' then lifecycle.model_id = nil end
local fields = {}
for name, value in pairs(job) do
  if not lifecycle[name] then fields[name] = value end
end
fields['redriven_from'] = old_id

local now = now_ms()
-- No queue TTL and no idempotency key: the operator asked for this run explicitly.
insert_job(new_id, fields, job.runtime, job.type, job.rank, 0, '', now)
wake(job.runtime)
state_event(new_id, 'queued', {redriven_from = old_id, reason = reason},
            {runtime = job.runtime, type = job.type})
redis.call('HSET', KEYS[1], 'redriven_to', new_id)
emit(old_id, 'redriven', cjson.encode({redriven_to = new_id, reason = reason}))
return {1, new_id}
