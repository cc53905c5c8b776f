-- The workspace's presence (ARGV: workspace): {seq, online, flat counts}.
require_workspace()
local meta = redis.call('HMGET', META, 'seq', 'online')
return {meta[1], tonumber(meta[2]), redis.call('HGETALL', COUNTS)}
