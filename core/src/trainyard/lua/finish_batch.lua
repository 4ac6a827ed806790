-- finish_batch: end several running attempts in one call (an inference batch), each
-- exactly as finish.lua ends one: fenced by its own attempt id, so a stale item is refused
-- and the others are applied. Items are applied in order (the same job twice: the second
-- is refused, its attempt no longer holds the job).
--
-- KEYS[i]  the job hash of item i
-- ARGV     9 values per item, in KEYS order, each group as finish.lua's ARGV[1..9]:
--          job id, attempt id, outcome, result JSON, error, error kind, retry delay ms,
--          model id to register, model record JSON
-- Returns  one {applied, state} per item, in order: {1, new_state} applied;
--          {0, current_state} refused (as finish.lua).
-- Also    as finish.lua per item; and the inference items applied, per runtime, are one
--          observation of the batch size (K.stats_batch_size: a batch's results are
--          finished in one call).

local out = {}
local now = now_ms()
for i = 1, #KEYS do
  local a = (i - 1) * 9
  out[i] = finish_attempt(KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
                          ARGV[a + 5], ARGV[a + 6], tonumber(ARGV[a + 7]), ARGV[a + 8],
                          ARGV[a + 9], now)
end
count_batches()
return out
