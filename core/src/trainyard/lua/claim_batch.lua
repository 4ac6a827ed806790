-- claim_batch: take more queued inference jobs of one model (an inference batch), each
-- started as its own attempt exactly as claim.lua starts one (own attempt id, attempt
-- counted, lease, 'running' event), best first (priority, then FIFO). Jobs found expired
-- in the queue on the way are failed (reason "expired") and skipped, as in claim.
-- Due retries are not promoted here (claim does that); affinity does not apply (the
-- caller holds the model).
--
-- KEYS[1]  the leases zset (K.leases)
-- ARGV[1]  worker id
-- ARGV[2]  lease length, ms
-- ARGV[3]  runtime
-- ARGV[4]  model id
-- ARGV[5..] one attempt id per job wanted (random, made by the caller): their number is
--           the most jobs taken
-- Returns  a list of the claimed job hashes, each a flat {field, value, ...} list, in
--          claim order; empty when no job of the model is ready.
-- Also    when at least one job is claimed and the worker is registered (K.worker(worker
--          id) exists), its hash gets state = busy and current_job = the FIRST job claimed
--          here, as claim.lua does (never a partial hash when it is not registered).
--          State changes go to K.activity and expired jobs are counted, as in claim.lua.

local worker_id, lease_ms = ARGV[1], tonumber(ARGV[2])
local model_key = K.ready_model(ARGV[3] .. ':' .. ARGV[4])
local want = #ARGV - 4
local now = now_ms()
local out = {}
for _ = 1, 1000 do
  if #out >= want then break end
  local ids = redis.call('ZRANGE', model_key, 0, want - #out - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local claimed = take_ready(id, model_key, worker_id, ARGV[5 + #out], lease_ms, now)
    if claimed then
      if #out == 0 then mark_worker_busy(worker_id, id) end
      out[#out + 1] = claimed
    end
  end
end
return out
