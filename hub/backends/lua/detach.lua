-- One stream of this node closed (ARGV: workspace, client, node, detach_grace_ms, the node's
-- generation). Tolerant: a stream whose claim is gone detaches into nothing. Returns {seq,
-- deadline|-1, 1 if the write was stale (the node gave up on it: nothing done) else 0}.
if not known() then return {0, -1, 0} end
local client, node = ARGV[2], ARGV[3]
if stale(node, tonumber(ARGV[5])) then return {seq(), -1, 1} end
local field = node .. '|' .. client
local mine = tonumber(redis.call('HGET', STREAMS, field) or '0')
local claim = load_claim(client)
if mine == 0 or not claim then return {seq(), -1, 0} end
if mine == 1 then
  redis.call('HDEL', STREAMS, field)
else
  redis.call('HINCRBY', STREAMS, field, -1)
end
local deadline = move_streams(client, claim, -1, now_ms(), tonumber(ARGV[4]))
return {commit(), deadline or -1, 0}
