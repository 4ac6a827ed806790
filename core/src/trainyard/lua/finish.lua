-- finish: end a running attempt (fenced by attempt id): success, failure, cancellation,
-- or a retry with backoff (which becomes "dead" when no attempts are left). A retry of a
-- job whose cancellation was requested ends it "cancelled" instead (error kind
-- "cancelled", the attempt's error kept): retried, the request would be lost, since the
-- next claim clears the flag. Release and reap honour the request the same way.
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  attempt id
-- ARGV[3]  outcome: succeeded | failed | cancelled | retry
-- ARGV[4]  result JSON ("" for none)
-- ARGV[5]  error message ("" for none)
-- ARGV[6]  error kind ("" for none): user_error | timeout | crashed | killed | ...
-- ARGV[7]  retry delay, ms (outcome retry only; backoff with jitter, made by the caller)
-- ARGV[8]  model id to register ("" for none; outcome succeeded only)
-- ARGV[9]  model record JSON ("" for none)
-- Returns  {1, new_state} when applied; {0, current_state} when refused because this
--          attempt no longer holds the job (stale attempt, cancelled, reaped, missing).
-- Also    K.activity: a 'state' entry. Counted (trainyard.stats): a retry in
--          K.stats_retries; an end in K.stats_finished, K.stats_queue_wait and
--          K.stats_run_time; an inference job as a batch of 1 in K.stats_batch_size.

-- The logic is _common.lua's finish_attempt, shared with finish_batch.lua.

local out = finish_attempt(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                           tonumber(ARGV[7]), ARGV[8], ARGV[9], now_ms())
count_batches()
return out
