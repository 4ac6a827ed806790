-- enqueue_batch: many submissions in one call, each exactly as enqueue.lua handles one
-- (the same create_job): a new queued job, or the job its idempotency key already names.
-- Applied in order, so FIFO follows the list, and an idempotency key repeated later in
-- the batch names the job its first use created.
-- Cheaper than one enqueue.lua per job: one TIME, one INCRBY for all the sequence
-- numbers, one ZADD per index for the whole batch (collect_zadds: nothing here reads
-- those zsets before the flush), and one wake-up push per runtime (one token per created
-- job, at most 64, as enqueue.lua's pushes would leave). Per job: its HSET, idempotency
-- SET and 'queued' XADD.
--
-- KEYS[i]  the job hash of submission i (K.job(its id))
-- ARGV     8 values per submission, in KEYS order, each group as enqueue.lua's
--          ARGV[1..8]: job id, runtime, job type, priority rank, idempotency key ("" for
--          none), idempotency key lifetime s, queue time allowed ms (0: forever), JSON
--          object of further string fields
-- Returns  one {created, job_id} per submission, in order, as enqueue.lua answers:
--          {1, job_id} created; {0, existing_job_id} named by its idempotency key.
-- Also    one 'state' entry (queued) in K.activity per created job (one XADD each).

local n = #KEYS
local out = {}
local creates = {}  -- the index of each submission that creates its job, in order
local named = {}    -- idempotency key -> job id created earlier in this batch
for i = 1, n do
  local a = (i - 1) * 8
  local id, idem_key = ARGV[a + 1], ARGV[a + 5]
  local existing = named[idem_key] or idempotent_job(idem_key)
  if existing then
    out[i] = {0, existing}
  else
    out[i] = {1, id}
    creates[#creates + 1] = i
    if idem_key ~= '' then named[idem_key] = id end
  end
end
if #creates == 0 then return out end

local now = now_ms()
local seq = redis.call('INCRBY', K.seq, #creates) - #creates
local woken = {}  -- runtime -> jobs created for it
local runtimes = {}
collect_zadds()
for _, i in ipairs(creates) do
  local a = (i - 1) * 8
  local runtime = ARGV[a + 2]
  seq = seq + 1
  create_job(ARGV[a + 1], runtime, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6],
             ARGV[a + 7], ARGV[a + 8], now, seq)
  if not woken[runtime] then
    woken[runtime] = 0
    runtimes[#runtimes + 1] = runtime
  end
  woken[runtime] = woken[runtime] + 1
end
flush_zadds()
for _, runtime in ipairs(runtimes) do wake(runtime, woken[runtime]) end
return out
