-- heartbeat: register a worker or refresh its registration, and drop workers whose
-- registration is older than the given lifetime.
--
-- KEYS[1]  worker hash (K.worker(ARGV[1]))
-- ARGV[1]  worker id
-- ARGV[2]  registration lifetime, ms (a worker silent this long is gone)
-- ARGV[3]  JSON object of string fields for the worker hash
-- Returns  the server time, ms.
-- Also    K.activity 'worker' entries {worker_id, runtime, event}: "lost" for each worker
--          dropped here (silent past the lifetime, up to 256 per call; this one too,
--          should it come back after that), then "up" when this worker's hash did not
--          exist (its first heartbeat, or the first after its registration expired).
--          K.worker_runtimes keeps worker id -> runtime while it is registered, so that
--          its "lost" entry names its runtime after its hash expired.

local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local fields = cjson.decode(ARGV[3])

-- Workers gone silent: usually none (one ZRANGEBYSCORE); at most 256 per call.
local gone = redis.call('ZRANGEBYSCORE', K.workers, '-inf', now - ttl, 'LIMIT', 0, 256)
if #gone > 0 then
  local runtimes = redis.call('HMGET', K.worker_runtimes, unpack(gone))
  for i, gone_id in ipairs(gone) do
    activity('worker', {worker_id = gone_id, runtime = runtimes[i] or '', event = 'lost'})
  end
  redis.call('HDEL', K.worker_runtimes, unpack(gone))
  redis.call('ZREM', K.workers, unpack(gone))
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local runtime = tostring(fields['runtime'] or '')
  redis.call('HSET', K.worker_runtimes, id, runtime)
  activity('worker', {worker_id = id, runtime = runtime, event = 'up'})
end

local flat = {}
for name, value in pairs(fields) do
  if name ~= 'id' and name ~= 'last_seen' then
    flat[#flat + 1] = name
    flat[#flat + 1] = tostring(value)
  end
end
flat[#flat + 1] = 'id'
flat[#flat + 1] = id
flat[#flat + 1] = 'last_seen'
flat[#flat + 1] = now
redis.call('HSET', KEYS[1], unpack(flat))  -- one write for every field
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', K.workers, now, id)
return now
