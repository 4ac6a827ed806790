-- unregister: a worker leaves gracefully: its registration, its worker-specific wake-up
-- list and its entry in the worker set go, and K.activity gets a 'worker' entry
-- {worker_id, runtime, event = "down"} when it was registered (in K.workers or its hash
-- exists). Its held models are forgotten separately (loaded_models.lua with runtime "").
--
-- KEYS[1]  worker hash (K.worker(ARGV[1]))
-- ARGV[1]  worker id
-- Returns  1 when it was registered; 0 otherwise (the keys are deleted all the same).

local id = ARGV[1]
local runtime = redis.call('HGET', KEYS[1], 'runtime') or
                redis.call('HGET', K.worker_runtimes, id)
local known = redis.call('ZREM', K.workers, id) == 1 or runtime ~= false
redis.call('DEL', KEYS[1], K.wake_worker(id))
redis.call('HDEL', K.worker_runtimes, id)
if not known then return 0 end
activity('worker', {worker_id = id, runtime = runtime or '', event = 'down'})
return 1
