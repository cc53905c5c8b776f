-- The workspaces with a timer due now, from the cluster-wide index (KEYS[1] = hub:timers):
-- flat {workspace, deadline, ...}, at most ARGV[1] of them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
