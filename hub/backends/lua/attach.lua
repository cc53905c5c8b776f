-- One more stream (ARGV: workspace, client, node, user or '' for anonymous, profile JSON or
-- ''); the first one makes the claim count; a claim bound to another user refuses it.
-- Returns {session_id of the claim, seq, online, flat counts, online_users, flat users}: the
-- snapshot that includes it.
require_workspace()
local client, node, user = ARGV[2], ARGV[3], ARGV[4]
local claim = load_claim(client) or new_claim()
if claim.b == 1 and (claim.u or '') ~= user then
  error({err = 'HUB forbidden'})
end
if claim.b ~= 1 then bind(claim, user) end
redis.call('HINCRBY', STREAMS, node .. '|' .. client, 1)
redis.call('SADD', NODES, node)
move_streams(client, claim, 1, 0, 0)
set_profile(claim, ARGV[5])
commit()
local snap = snapshot()
return {claim.s, snap[1], snap[2], snap[3], snap[4], snap[5]}
