-- enqueue: create a queued job, or return the job an idempotency key already names.
--
-- KEYS[1]  job hash of the new job (K.job(ARGV[1]))
-- ARGV[1]  job id (validated by the caller: [A-Za-z0-9_-])
-- ARGV[2]  runtime
-- ARGV[3]  job type (training | inference)
-- ARGV[4]  priority rank (0 high, 1 normal, 2 low)
-- ARGV[5]  idempotency key ("" for none)
-- ARGV[6]  idempotency key lifetime, seconds
-- ARGV[7]  time allowed in the queue before the job expires, ms (0: forever)
-- ARGV[8]  JSON object of further string fields for the job hash
-- Returns  {1, job_id} when created; {0, existing_job_id} when the idempotency key
--          already names a job that still exists.
-- Also    created: a 'state' entry (queued) in K.activity.

-- Many at once: enqueue_batch.lua (the same job, through the same create_job).

local id, runtime, job_type, rank = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key = ARGV[5]

local existing = idempotent_job(idem_key)
if existing then return {0, existing} end
create_job(id, runtime, job_type, rank, idem_key, ARGV[6], ARGV[7], ARGV[8], now_ms(), nil)
wake(runtime)
return {1, id}
