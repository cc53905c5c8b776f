-- Shared by arm.lua, due.lua and the workspace prelude (hub/backends/redis.py prepends it).

-- The time now in ms: Redis's own clock (TIME), shared by every node; or, when redis.py was
-- given a clock (CLOCK_ARG, set before this prelude), the script's last argument.
local function clock_ms()
  if CLOCK_ARG then return tonumber(ARGV[#ARGV]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Index a workspace's timer cluster-wide (hub:timers: workspace -> its earliest deadline, ms)
-- when it is earlier than the entry, or when the entry is due (being swept right now:
-- reindex.lua then keeps the changed entry).
local function index_timer(index, workspace, deadline)
  local score = redis.call('ZSCORE', index, workspace)
  local now = clock_ms()
  if not score or tonumber(score) <= now or deadline < tonumber(score) then
    redis.call('ZADD', index, deadline, workspace)
  end
end
