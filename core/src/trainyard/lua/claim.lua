-- claim: promote due retries, then take the best eligible queued job of the given runtimes
-- and start an attempt on it, in one step.
--
-- KEYS[1]  the leases zset (K.leases)
-- ARGV[1]  worker id
-- ARGV[2]  attempt id for the new attempt (random, made by the caller)
-- ARGV[3]  lease length, ms
-- ARGV[4]  affinity, ms (0: none, plain priority/FIFO; see below)
-- ARGV[5]  holder liveness window, ms: a model_holders entry older than this is gone
-- ARGV[6]  n, the number of models this worker has loaded
-- ARGV[7..6+n]   those model ids
-- ARGV[7+n..]    runtimes this worker serves
-- Returns  the claimed job hash as a flat {field, value, ...} list; nil when no job is
--          ready; or a number, ms: nothing is claimable now, but jobs were skipped for
--          affinity and the first of them becomes eligible in that long (no wake-up will
--          come for it: call again then). Jobs found expired in the queue on the way
--          (never started, and past their queue_ttl_s: still in the expiring set) are
--          failed (reason "expired") and skipped.
-- Also    when a job is claimed and the worker is registered (K.worker(worker id)
--          exists), its hash gets state = busy and current_job = the job id, as
--          worker_state.lua writes them (never a partial hash when it is not registered):
--          the worker needs no busy write of its own per job. Each state change also
--          goes to K.activity; a job expired on the way is counted as ended
--          (K.stats_finished, K.stats_queue_wait; trainyard.stats).
--
-- Best job: lowest ready score (priority, then FIFO) over all the runtimes, among the
-- eligible ones. Without affinity every job is eligible. With affinity an inference job
-- that names its model is eligible if this worker has the model loaded, or no other live
-- worker of its runtime holds it (K.model_holders), or it has been ready (`ready_at`) for
-- at least the affinity; any other job is eligible. A job skipped for its holders wakes
-- them (K.wake_worker): its own wake-up may have reached this worker. The scan for an
-- eligible job is bounded: the first AFFINITY_SCAN entries of each runtime's ready queue,
-- plus the best job of each loaded model (found through its K.ready_model index wherever
-- it stands).

local AFFINITY_SCAN = 64
local worker_id, attempt_id, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local affinity_ms, holder_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_loaded = tonumber(ARGV[6])
local loaded = {}
for i = 7, 6 + n_loaded do loaded[ARGV[i]] = true end
local first_runtime = 7 + n_loaded
local now = now_ms()

-- 1. Retries whose backoff has passed go back to their ready queue.
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', K.delayed, id)
  local job = load_job(id, 'state', 'runtime', 'rank', 'seq', 'type', 'model_id')
  if job.state == 'retrying' then
    move_state(id, job.seq, 'retrying', 'queued')
    requeue(id, job, now)
    state_event(id, 'queued', {reason = 'retry due'}, job)
  end
end

-- 2. Affinity: which jobs this worker may take now.
local recheck = nil  -- least ms until a skipped job becomes eligible
local held_elsewhere = {}  -- '<runtime>:<model>' -> true/false, read once per call

local function held_by_another(runtime, model_id)
  local name = runtime .. ':' .. model_id
  if held_elsewhere[name] == nil then
    local key = K.model_holders(name)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - holder_window))
    local live = redis.call('ZCARD', key)
    if redis.call('ZSCORE', key, worker_id) then live = live - 1 end
    held_elsewhere[name] = live > 0
  end
  return held_elsewhere[name]
end

-- A skipped job is left to its model's holders, but the wake-up token its enqueue pushed
-- may have woken this worker instead: hand one to each live holder (on its own list,
-- K.wake_worker, which it blocks on beside its runtimes'), unless one is already waiting
-- there. Once per model per call.
local woken = {}
local function wake_holders(name)
  if woken[name] then return end
  woken[name] = true
  for _, holder in ipairs(redis.call('ZRANGE', K.model_holders(name), 0, -1)) do
    local key = K.wake_worker(holder)
    if holder ~= worker_id and redis.call('LLEN', key) == 0 then
      redis.call('LPUSH', key, '1')
      redis.call('PEXPIRE', key, holder_window)  -- a gone worker's list does not linger
    end
  end
end

local function eligible(id, runtime)
  local job = load_job(id, 'state', 'type', 'model_id', 'ready_at')
  -- A stale entry (not queued) is "eligible": taking it cleans it up (take_ready).
  if job.state ~= 'queued' or job.type ~= 'inference' or not job.model_id
     or job.model_id == '' or loaded[job.model_id] then
    return true
  end
  local waited = now - tonumber(job.ready_at or '0')
  if waited >= affinity_ms or not held_by_another(runtime, job.model_id) then
    return true
  end
  local wait = affinity_ms - waited
  if recheck == nil or wait < recheck then recheck = wait end
  wake_holders(runtime .. ':' .. job.model_id)
  return false
end

-- The best eligible job of one runtime: {id, score, the zset it was found in} or nil.
local function best_of(runtime)
  if affinity_ms <= 0 then
    local top = redis.call('ZRANGE', K.ready(runtime), 0, 0, 'WITHSCORES')
    if top[1] then return {top[1], tonumber(top[2]), K.ready(runtime)} end
    return nil
  end
  -- The best job of a loaded model bounds the scan: nothing after it can win.
  local bound = nil
  for model_id in pairs(loaded) do
    local key = K.ready_model(runtime .. ':' .. model_id)
    local top = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if top[1] and (bound == nil or tonumber(top[2]) < bound[2]) then
      bound = {top[1], tonumber(top[2]), key}
    end
  end
  local scanned = 0
  while scanned < AFFINITY_SCAN do
    local page = redis.call('ZRANGE', K.ready(runtime), scanned, scanned + 15, 'WITHSCORES')
    for j = 1, #page, 2 do
      local score = tonumber(page[j + 1])
      if bound and score >= bound[2] then return bound end
      if eligible(page[j], runtime) then return {page[j], score, K.ready(runtime)} end
    end
    if #page < 32 then break end
    scanned = scanned + 16
  end
  return bound
end

-- 3. Pick and start.
for _ = 1, 1000 do
  local best = nil
  for i = first_runtime, #ARGV do
    local found = best_of(ARGV[i])
    if found and (best == nil or found[2] < best[2]) then best = found end
  end
  if best == nil then return recheck end
  local claimed = take_ready(best[1], best[3], worker_id, attempt_id, lease_ms, now)
  if claimed then
    mark_worker_busy(worker_id, best[1])
    return claimed
  end
end
return nil
