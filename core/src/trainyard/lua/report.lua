-- report: record progress or a log line of a running attempt (fenced by attempt id).
--
-- KEYS[1]  job hash
-- ARGV[1]  job id
-- ARGV[2]  attempt id
-- ARGV[3]  kind: "progress" (also kept as the job's latest progress) or "log"
-- ARGV[4]  JSON object (the event's data)
-- Returns  1 when recorded; 0 when this attempt no longer holds the job (nothing written).
-- Also    progress: a 'progress' entry in K.activity with only the small fields
--          {job_id, epoch, epochs, step, steps, fraction} (those present; no metrics).

local id, attempt_id, kind, data = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local job = load_job(id, 'state', 'attempt_id')
if job.state ~= 'running' or job.attempt_id ~= attempt_id then
  return 0
end
if kind == 'progress' then
  redis.call('HSET', KEYS[1], 'progress', data)
  local ok, p = pcall(cjson.decode, data)
  if ok and type(p) == 'table' then
    activity('progress', {job_id = id, epoch = p.epoch, epochs = p.epochs, step = p.step,
                          steps = p.steps, fraction = p.fraction})
  end
end
emit(id, kind, data)
return 1
