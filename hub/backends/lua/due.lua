-- The workspaces with a timer due now, from the cluster-wide index (KEYS[1] = hub:timers):
-- flat {workspace, deadline, ...}, at most ARGV[1] of them.
local now = clock_ms()  -- (_index.lua)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
