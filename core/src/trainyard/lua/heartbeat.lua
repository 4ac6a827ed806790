-- heartbeat: register a worker or refresh its registration, and drop workers whose
-- registration is older than the given lifetime.
--
-- KEYS[1]  worker hash (K.worker(ARGV[1]))
-- ARGV[1]  worker id
-- ARGV[2]  registration lifetime, ms (a worker silent this long is gone)
-- ARGV[3]  JSON object of string fields for the worker hash
-- Returns  the server time, ms.

local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local flat = {}
for name, value in pairs(cjson.decode(ARGV[3])) do
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
redis.call('ZREMRANGEBYSCORE', K.workers, '-inf', now - ttl)
return now
