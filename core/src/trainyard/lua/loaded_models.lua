-- loaded_models: record which models a worker holds loaded, for affinity (claim.lua):
-- per model a zset K.model_holders(runtime .. ':' .. model_id) of worker id -> last seen
-- (server ms), and per worker the set K.worker_models(worker id) of '<runtime>:<model>'
-- it holds. Models of the runtime it no longer holds lose it; holder entries older than
-- the lifetime are dropped on the way. The worker calls it when its loaded set changes
-- and with each heartbeat (a refresh).
--
-- KEYS[1]  the worker's set, K.worker_models(ARGV[1])
-- ARGV[1]  worker id
-- ARGV[2]  runtime ("" with no models: forget every model of every runtime, on unregister)
-- ARGV[3]  lifetime, ms (as the worker registration's)
-- ARGV[4..] the model ids it holds now
-- Returns  the number of models recorded.

local worker_id, runtime, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local holds = {}
if runtime ~= '' then
  for i = 4, #ARGV do holds[runtime .. ':' .. ARGV[i]] = true end
end

local prefix = runtime .. ':'
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not holds[name] and (runtime == '' or string.sub(name, 1, #prefix) == prefix) then
    redis.call('ZREM', K.model_holders(name), worker_id)
    redis.call('SREM', KEYS[1], name)
  end
end
local count = 0
for name in pairs(holds) do
  redis.call('ZADD', K.model_holders(name), now, worker_id)
  redis.call('ZREMRANGEBYSCORE', K.model_holders(name), '-inf', '(' .. (now - ttl))
  redis.call('SADD', KEYS[1], name)
  count = count + 1
end
if count > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return count
