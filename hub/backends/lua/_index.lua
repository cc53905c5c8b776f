-- Shared by arm.lua and the workspace prelude (hub/backends/redis.py prepends it): index a
-- workspace's timer cluster-wide (hub:timers: workspace -> its earliest deadline, ms) when it
-- is earlier than the entry, or when the entry is due (being swept right now: reindex.lua then
-- keeps the changed entry).
local function index_timer(index, workspace, deadline)
  local score = redis.call('ZSCORE', index, workspace)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not score or tonumber(score) <= now or deadline < tonumber(score) then
    redis.call('ZADD', index, deadline, workspace)
  end
end
