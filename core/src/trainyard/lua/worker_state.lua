-- worker_state: the small busy/idle write between heartbeats: a worker's state and the
-- job it works on, two fields instead of a full heartbeat. Written only while the worker
-- is registered: after its registration expired, a write would leave a partial hash that
-- never expires (the next heartbeat registers it again, with every field).
--
-- KEYS[1]  worker hash (K.worker(worker id))
-- ARGV[1]  state (busy | idle | draining ...)
-- ARGV[2]  current job id ("" for none)
-- Returns  1 when written; 0 when the worker is not registered (nothing written).

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'current_job', ARGV[2])
return 1
