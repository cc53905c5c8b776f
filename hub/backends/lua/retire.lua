-- Remove a retired client's claim here (ARGV: workspace, client, close code, retire_ttl_ms)
-- and tell every node to close its sockets. The workspace remembers the retirement, so that
-- no node's re-assertion (set_streams.lua) brings the claim back. Returns seq.
if not known() then return 0 end
local client = ARGV[2]
redis.call('HSET', RETIRED, client, now_ms() + tonumber(ARGV[4]))
redis.call('HDEL', GONE, client)
local claim = load_claim(client)
if not claim then return seq() end
if claim.n > 0 then count(claim.s, -1, claim.u) end
remove_claim(client, claim, false)
for _, node in ipairs(redis.call('SMEMBERS', NODES)) do
  redis.call('HDEL', STREAMS, node .. '|' .. client)
end
return commit({x = {k = client, code = tonumber(ARGV[3])}})
