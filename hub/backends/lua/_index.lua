-- Shared by arm.lua, due.lua and the workspace prelude (hub/backends/redis/scripts.py
-- prepends it).

-- The time now in ms: Redis's own clock (TIME), shared by every node; or, when the backend was
-- given a clock (CLOCK_ARG, set before this prelude), the script's last argument.
local function clock_ms()
  if CLOCK_ARG then return tonumber(ARGV[#ARGV]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Index a workspace's timer cluster-wide (hub:timers: workspace -> its earliest deadline, ms)
-- when it is earlier than the entry. An entry already due is never moved later: its timers may
-- not have fired yet (no node has swept it: they were all cut off from Redis, or the sweep's
-- expire failed), and a later deadline there would hide them until then. It is moved 1 ms
-- earlier instead, still due, so that a sweep in flight (due.lua read the old score,
-- reindex.lua has not run) sees the entry changed and keeps it due: the next sweep fires what
-- is due and indexes the workspace's true next deadline, this timer's included.
local function index_timer(index, workspace, deadline)
  local score = redis.call('ZSCORE', index, workspace)
  if not score then
    redis.call('ZADD', index, deadline, workspace)
    return
  end
  score = tonumber(score)
  local now = clock_ms()
  if deadline < score then
    redis.call('ZADD', index, deadline, workspace)
  elseif score <= now then
    redis.call('ZADD', index, score - 1, workspace)
  end
end
