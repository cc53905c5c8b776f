-- A timer was armed in a workspace (KEYS[1] = hub:timers; ARGV: workspace, deadline): index
-- it when it is earlier than the entry, or when the entry is due (being swept right now).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[2])
if not score or tonumber(score) <= now or deadline < tonumber(score) then
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
end
return 1
